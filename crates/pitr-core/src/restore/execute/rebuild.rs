//! Writing one block file of a block-level incremental backup: rebuilt from its base object
//! and the changed pages of each incremental since (newest page wins, see
//! [`pitr_repo::block`]) into `dest.pitr-tmp`, then renamed into place.
//!
//! Memory stays bounded whatever the file's size or the chain's length: the page maps of the
//! manifest say beforehand which layer holds the newest copy of each block (two bytes a page),
//! and the objects are then decoded one after the other, as they are read (a large one by
//! ranged reads, see [`pitr_repo::stored::open_stored`]), each writing only the pages it owns.
//! Every page is written once and verified as it is written (its data checksum, when the
//! cluster has them); every object's length and BLAKE3 are checked against the manifest, and
//! the whole file's against the size and BLAKE3 the manifest records (a backup that read only
//! the pages WAL summaries named records none: its objects and pages are what is checked).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pitr_pg::page_checksum::{verify_page, PageCheck};
use pitr_pg::Lsn;
use pitr_repo::block::{BlockLayers, RebuildError};
use pitr_repo::frame::{self, FrameSummary};
use pitr_repo::stored::Opened;
use pitr_repo::ManifestFile;
use pitr_storage::StorageError;

use super::write::{self, apply_attrs, tmp_path};
use crate::restore::Progress;

/// Why a block file could not be written.
#[derive(Debug)]
pub enum BlockWriteError {
    /// An object is damaged, not what the manifest records, or the rebuilt file is not.
    Rebuild(RebuildError),
    /// Reading an object from the repository failed.
    Storage(StorageError),
    /// The local file system failed.
    Io(&'static str, io::Error),
}

/// No layer holds the block (yet).
const NOBODY: u16 = u16::MAX;

/// A block file being rebuilt in `dest.pitr-tmp`: [`BlockRebuild::layer`] for each object,
/// base first, then [`BlockRebuild::finish`]. Dropped unfinished, it removes the temporary file.
#[derive(Debug)]
pub struct BlockRebuild {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    layers: BlockLayers,
    m: ManifestFile,
    checksums_before: Option<Lsn>,
    /// For each block below the file's size, the layer holding its newest copy (0: the base).
    owner: Vec<u16>,
}

impl BlockRebuild {
    /// Plans the rebuild of `m` (a block file with `layers`) at `dest` and creates the
    /// temporary file. With `checksums_before` (the backup's start LSN, when the cluster has
    /// data checksums) every page's checksum is verified, except pages changed since the
    /// backup started (WAL replay rewrites them) and blocks the backup recorded as failing.
    pub fn create(
        dest: &Path,
        layers: &BlockLayers,
        m: &ManifestFile,
        checksums_before: Option<Lsn>,
    ) -> Result<BlockRebuild, BlockWriteError> {
        let owner = owners(layers, m.size)?;
        let tmp = tmp_path(dest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| BlockWriteError::Io("create", e))?;
        Ok(BlockRebuild {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
            layers: layers.clone(),
            m: m.clone(),
            checksums_before,
            owner,
        })
    }

    /// Number of objects: the base and the deltas.
    pub fn objects(&self) -> usize {
        1 + self.layers.deltas.len()
    }

    /// Decodes object `k` (0: the base, then the deltas oldest first) on up to `threads`
    /// threads and writes the pages it holds the newest copy of.
    pub fn layer(
        &self,
        k: usize,
        obj: Opened,
        threads: usize,
        progress: Option<&dyn Progress>,
    ) -> Result<(), BlockWriteError> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| BlockWriteError::Io("write", io::Error::other("already finished")))?;
        let bs = self.layers.block_size as usize;
        let (label, expected_len, expected, blocks) = match k {
            0 => (
                &self.layers.base.label,
                self.layers.base.size,
                &self.layers.base.blake3,
                None,
            ),
            _ => {
                let d = self.layers.deltas.get(k - 1).ok_or_else(|| {
                    BlockWriteError::Io("write", io::Error::other(format!("no layer {k}")))
                })?;
                let blocks: Vec<u32> = d.pages.blocks().collect();
                let len = blocks.len() as u64 * bs as u64;
                (&d.label, len, &d.blake3, Some(blocks))
            }
        };
        let sink = PageSink {
            file,
            bs,
            layer: u16::try_from(k).unwrap_or(NOBODY),
            owner: &self.owner,
            blocks: blocks.as_deref(),
            first_block: segment_number(&self.m.path).saturating_mul(self.layers.relseg_size),
            checksums_before: self.checksums_before,
            failures: &self.m.checksum_failures,
            progress,
            carry: Mutex::new((0, Vec::new())),
            error: Mutex::new(None),
        };
        let frame_err = |source| {
            BlockWriteError::Rebuild(RebuildError::Frame {
                label: label.clone(),
                source,
            })
        };
        let summary: Result<FrameSummary, _> = match obj {
            Opened::Whole(b) => frame::decode_to(&b, threads, &sink),
            Opened::Streamed(mut s) => {
                let r = frame::decode_stream_to(s.code, &mut s.payload, s.summary, threads, &sink);
                if let Some(e) = s.storage_error() {
                    return Err(BlockWriteError::Storage(e));
                }
                r
            }
        };
        if let Some(e) = lock(&sink.error).take() {
            return Err(e);
        }
        let summary = summary.map_err(frame_err)?;
        if !lock(&sink.carry).1.is_empty() {
            return Err(frame_err(pitr_repo::frame::FrameError::Write(
                "the object ends in a partial page".into(),
            )));
        }
        let found = summary.checksum.to_string();
        if summary.len != expected_len || !found.eq_ignore_ascii_case(expected) {
            return Err(BlockWriteError::Rebuild(RebuildError::Mismatch {
                label: label.clone(),
                expected_len,
                expected: expected.clone(),
                found_len: summary.len,
                found,
            }));
        }
        Ok(())
    }

    /// Cuts the file at its size, checks it against the manifest's BLAKE3 (when it records
    /// one), sets mode and mtime and renames it into place; returns its size.
    pub fn finish(mut self) -> Result<u64, BlockWriteError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| BlockWriteError::Io("write", io::Error::other("already finished")))?;
        let r = self.publish(&file);
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }

    fn publish(&self, file: &File) -> Result<u64, BlockWriteError> {
        let m = &self.m;
        file.set_len(m.size)
            .map_err(|e| BlockWriteError::Io("truncate", e))?;
        if !m.blake3.is_empty() {
            // The rebuilt file, read back, must be the one the manifest records.
            let found =
                write::hash_file(&self.tmp).map_err(|e| BlockWriteError::Io("read back", e))?;
            if !found.eq_ignore_ascii_case(&m.blake3) {
                return Err(BlockWriteError::Rebuild(RebuildError::Rebuilt {
                    expected_len: m.size,
                    expected: m.blake3.clone(),
                    found_len: m.size,
                    found,
                }));
            }
        }
        apply_attrs(file, m).map_err(|e| BlockWriteError::Io("set mode and mtime of", e))?;
        fs::rename(&self.tmp, &self.dest).map_err(|e| BlockWriteError::Io("rename", e))?;
        Ok(m.size)
    }
}

impl Drop for BlockRebuild {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// For each block below `size`, the layer holding its newest copy; refused when one has none.
fn owners(layers: &BlockLayers, size: u64) -> Result<Vec<u16>, BlockWriteError> {
    let bs = u64::from(layers.block_size.max(1));
    let n = usize::try_from(size / bs).unwrap_or(usize::MAX);
    if layers.deltas.len() >= usize::from(NOBODY) {
        return Err(BlockWriteError::Io(
            "plan",
            io::Error::other(format!("a chain of {} deltas", layers.deltas.len())),
        ));
    }
    let mut owner = vec![NOBODY; n];
    let in_base = usize::try_from(layers.base.size / bs).unwrap_or(usize::MAX);
    for o in owner.iter_mut().take(in_base) {
        *o = 0;
    }
    for (k, d) in layers.deltas.iter().enumerate() {
        for b in d.pages.blocks() {
            if let Some(o) = owner.get_mut(b as usize) {
                *o = (k + 1) as u16;
            }
        }
    }
    match owner.iter().position(|&o| o == NOBODY) {
        Some(b) => Err(BlockWriteError::Rebuild(RebuildError::MissingPage(
            u32::try_from(b).unwrap_or(u32::MAX),
        ))),
        None => Ok(owner),
    }
}

/// Receives one object's decoded pieces at their offsets (from several threads), and writes,
/// verified, the pages this layer holds the newest copy of.
struct PageSink<'a> {
    file: &'a File,
    bs: usize,
    layer: u16,
    owner: &'a [u16],
    /// A delta's blocks, in the order of its pages (`None`: the base, page i is block i).
    blocks: Option<&'a [u32]>,
    first_block: u32,
    checksums_before: Option<Lsn>,
    failures: &'a [u32],
    progress: Option<&'a dyn Progress>,
    /// Bytes of a partial page waiting for the rest: (offset, bytes).
    carry: Mutex<(u64, Vec<u8>)>,
    error: Mutex<Option<BlockWriteError>>,
}

impl PageSink<'_> {
    /// Verifies and writes page `blk`.
    fn page(&self, blk: u32, page: &[u8]) -> Result<(), BlockWriteError> {
        if let Some(start) = self.checksums_before {
            let relblk = self.first_block.saturating_add(blk);
            if let PageCheck::Mismatch { .. } = verify_page(page, relblk, start) {
                if !self.failures.contains(&relblk) {
                    return Err(BlockWriteError::Rebuild(RebuildError::Sink {
                        blkno: blk,
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the rebuilt page fails its data checksum (relation block {relblk})"),
                        ),
                    }));
                }
            }
        }
        let at = u64::from(blk) * self.bs as u64;
        self.file
            .write_all_at(page, at)
            .map_err(|e| BlockWriteError::Io("write", e))?;
        if let Some(p) = self.progress {
            p.advance(page.len() as u64);
        }
        Ok(())
    }

    /// Whole pages of the object at `offset`: those this layer owns, verified and written.
    fn pages(&self, offset: u64, data: &[u8]) -> Result<(), BlockWriteError> {
        let bs = self.bs as u64;
        for (i, page) in data.chunks_exact(self.bs).enumerate() {
            let nth = (offset / bs) as usize + i;
            let blk = match self.blocks {
                None => Some(nth as u32),
                Some(b) => b.get(nth).copied(),
            };
            let Some(blk) = blk else {
                return Err(BlockWriteError::Rebuild(RebuildError::Sink {
                    blkno: u32::MAX,
                    source: io::Error::other(format!(
                        "the object holds more pages than its page map ({nth})"
                    )),
                }));
            };
            // Beyond the file's size (truncated since), or newer in a later layer: skipped.
            if self.owner.get(blk as usize) == Some(&self.layer) {
                self.page(blk, page)?;
            }
        }
        Ok(())
    }

    /// Bytes written in order but not in whole pages (a payload decoded as one stream).
    fn unaligned(&self, offset: u64, data: &[u8]) -> Result<(), BlockWriteError> {
        let mut carry = lock(&self.carry);
        let (start, buf) = &mut *carry;
        if buf.is_empty() {
            *start = offset;
        }
        if *start + buf.len() as u64 != offset {
            return Err(BlockWriteError::Io(
                "write",
                io::Error::other(format!("piece at {offset} out of order")),
            ));
        }
        buf.extend_from_slice(data);
        let whole = buf.len() - buf.len() % self.bs;
        self.pages(*start, buf.get(..whole).unwrap_or_default())?;
        buf.drain(..whole);
        *start += whole as u64;
        Ok(())
    }
}

impl frame::WriteAt for PageSink<'_> {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let bs = self.bs as u64;
        let aligned = offset.is_multiple_of(bs)
            && data.len().is_multiple_of(self.bs)
            && lock(&self.carry).1.is_empty();
        let r = if aligned {
            self.pages(offset, data)
        } else {
            self.unaligned(offset, data)
        };
        r.map_err(|e| {
            let msg = match &e {
                BlockWriteError::Rebuild(r) => r.to_string(),
                BlockWriteError::Storage(s) => s.to_string(),
                BlockWriteError::Io(op, io) => format!("{op}: {io}"),
            };
            lock(&self.error).get_or_insert(e);
            io::Error::other(msg)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Segment number of a relation file (`16384.3` → 3).
fn segment_number(rel: &str) -> u32 {
    rel.rsplit('/')
        .next()
        .and_then(|n| n.split_once('.'))
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use bytes::Bytes;
    use pitr_repo::block::{BlockBase, BlockDelta, PageMap};
    use pitr_repo::frame::Compression;

    use super::*;

    fn page(bs: usize, fill: u8) -> Vec<u8> {
        vec![fill; bs]
    }

    fn delta(label: &str, bs: usize, pages: &[(u32, u8)]) -> (BlockDelta, Bytes) {
        let mut map = PageMap::default();
        let mut data = Vec::new();
        for &(b, fill) in pages {
            map.push(b);
            data.extend(page(bs, fill));
        }
        let (obj, s) = frame::encode(&data, Compression::Zstd(1)).unwrap();
        let d = BlockDelta {
            label: label.into(),
            pages: map,
            blake3: s.checksum.to_string(),
            stored_size: obj.len() as u64,
        };
        (d, obj.into())
    }

    fn entry(size: u64, blake3: &str, layers: &BlockLayers) -> ManifestFile {
        ManifestFile {
            path: "base/5/16384".into(),
            size,
            mode: 0o600,
            mtime: 0,
            blake3: blake3.into(),
            stored_size: 0,
            stored_in: None,
            checksum_failures: Vec::new(),
            blocks: Some(Box::new(layers.clone())),
            bundle: None,
        }
    }

    /// Rebuilds `m` from `objs` at `dir/f`; the file's bytes.
    fn run(
        dir: &Path,
        layers: &BlockLayers,
        m: &ManifestFile,
        objs: &[Bytes],
    ) -> Result<Vec<u8>, BlockWriteError> {
        let dest = dir.join("f");
        let rb = BlockRebuild::create(&dest, layers, m, None)?;
        assert_eq!(rb.objects(), objs.len());
        for (k, o) in objs.iter().enumerate() {
            rb.layer(k, Opened::Whole(o.clone()), 2, None)?;
        }
        rb.finish()?;
        Ok(fs::read(&dest).unwrap())
    }

    #[test]
    fn newest_page_wins_and_the_file_is_cut_or_extended_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let bs = 1024;
        let base_data: Vec<u8> = (0..6u8).flat_map(|i| page(bs, i)).collect();
        let (base_obj, s) = frame::encode(&base_data, Compression::Zstd(1)).unwrap();
        let (d1, o1) = delta("I1", bs, &[(1, 11), (4, 14), (6, 16), (7, 17)]);
        let (d2, o2) = delta("I2", bs, &[(1, 21), (7, 27)]);
        let layers = BlockLayers {
            block_size: bs as u32,
            relseg_size: 131072,
            base: BlockBase {
                label: "F".into(),
                size: base_data.len() as u64,
                blake3: s.checksum.to_string(),
                stored_size: base_obj.len() as u64,
            },
            deltas: vec![d1, d2],
        };
        let objs = [Bytes::from(base_obj), o1, o2];
        let want: Vec<u8> = [0u8, 21, 2, 3, 14, 5, 16, 27]
            .iter()
            .flat_map(|&f| page(bs, f))
            .collect();
        let hash = blake3::hash(&want).to_hex().to_string();
        let m = entry(want.len() as u64, &hash, &layers);
        assert_eq!(run(dir.path(), &layers, &m, &objs).unwrap(), want);
        // Without a recorded BLAKE3 (read through WAL summaries): the same file.
        let m = entry(want.len() as u64, "", &layers);
        assert_eq!(run(dir.path(), &layers, &m, &objs).unwrap(), want);

        // Truncated to 3 pages.
        let short = &want[..3 * bs];
        let m = entry(
            short.len() as u64,
            blake3::hash(short).to_hex().as_ref(),
            &layers,
        );
        assert_eq!(run(dir.path(), &layers, &m, &objs).unwrap(), short);

        // A wrong file checksum, a damaged delta and a missing page are refused, and leave
        // no temporary file behind.
        let m3 = entry(3 * bs as u64, "00", &layers);
        assert!(matches!(
            run(dir.path(), &layers, &m3, &objs),
            Err(BlockWriteError::Rebuild(RebuildError::Rebuilt { .. }))
        ));
        let mut bad = objs[2].to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let damaged = [objs[0].clone(), objs[1].clone(), bad.into()];
        let m = entry(want.len() as u64, "", &layers);
        assert!(matches!(
            run(dir.path(), &layers, &m, &damaged),
            Err(BlockWriteError::Rebuild(RebuildError::Frame { .. }))
        ));
        let m10 = entry(10 * bs as u64, "", &layers);
        assert!(matches!(
            run(dir.path(), &layers, &m10, &objs),
            Err(BlockWriteError::Rebuild(RebuildError::MissingPage(8)))
        ));
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".pitr-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
