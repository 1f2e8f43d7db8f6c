//! Writing one block file of a block-level incremental backup: rebuilt from its base object
//! and the changed pages of each incremental since (newest page wins, see
//! [`pitr_repo::block`]) into `dest.pitr-tmp`, every page verified as it is written (its data
//! checksum, when the cluster has them), the whole file checked against the size and BLAKE3
//! the manifest records, then renamed into place.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use pitr_pg::page_checksum::{verify_page, PageCheck};
use pitr_pg::Lsn;
use pitr_repo::block::{BlockLayers, Overlay, RebuildError};
use pitr_repo::frame;
use pitr_repo::ManifestFile;

use super::write::{self, apply_attrs, tmp_path};
use crate::restore::Progress;

/// Why a block file could not be written.
#[derive(Debug)]
pub enum BlockWriteError {
    /// An object is damaged, not what the manifest records, or the rebuilt file is not.
    Rebuild(RebuildError),
    /// The local file system failed.
    Io(&'static str, io::Error),
}

/// Rebuilds `m` (a block file) at `dest` from `base` and `deltas` (its objects, in the order
/// of its layers). With `checksums_before` (the backup's start LSN, when the cluster has data
/// checksums) every page's checksum is verified, except pages changed since the backup
/// started (WAL replay rewrites them) and blocks the backup recorded as failing.
pub fn write_block_file(
    dest: &Path,
    layers: &BlockLayers,
    (base, deltas): (&[u8], &[Bytes]),
    m: &ManifestFile,
    checksums_before: Option<Lsn>,
    progress: Option<&dyn Progress>,
) -> Result<u64, BlockWriteError> {
    let tmp = tmp_path(dest);
    let result =
        write_tmp(&tmp, layers, (base, deltas), m, checksums_before, progress).and_then(|n| {
            fs::rename(&tmp, dest)
                .map_err(|e| BlockWriteError::Io("rename", e))
                .map(|()| n)
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(
    tmp: &Path,
    layers: &BlockLayers,
    (base, deltas): (&[u8], &[Bytes]),
    m: &ManifestFile,
    checksums_before: Option<Lsn>,
    progress: Option<&dyn Progress>,
) -> Result<u64, BlockWriteError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| BlockWriteError::Io("create", e))?;
    let overlay = Overlay::decode(layers, deltas).map_err(BlockWriteError::Rebuild)?;
    let sink = PageSink {
        file: &file,
        overlay: &overlay,
        bs: layers.block_size as usize,
        size: m.size,
        first_block: segment_number(&m.path).saturating_mul(layers.relseg_size),
        checksums_before,
        failures: &m.checksum_failures,
        progress,
        carry: Mutex::new((0, Vec::new())),
        error: Mutex::new(None),
    };
    // The base decodes on several threads, each piece's pages replaced by the deltas' newer
    // copies and verified as they are written.
    let summary = frame::decode_to(base, THREADS, &sink);
    if let Some(e) = lock(&sink.error).take() {
        return Err(e);
    }
    let summary = summary.map_err(|source| {
        BlockWriteError::Rebuild(RebuildError::Frame {
            label: layers.base.label.clone(),
            source,
        })
    })?;
    if !lock(&sink.carry).1.is_empty() {
        return Err(BlockWriteError::Io(
            "write",
            io::Error::other("the base ends in a partial page"),
        ));
    }
    let found = summary.checksum.to_string();
    if summary.len != layers.base.size || !found.eq_ignore_ascii_case(&layers.base.blake3) {
        return Err(BlockWriteError::Rebuild(RebuildError::Mismatch {
            label: layers.base.label.clone(),
            expected_len: layers.base.size,
            expected: layers.base.blake3.clone(),
            found_len: summary.len,
            found,
        }));
    }
    // Pages beyond the base come from the deltas alone; the file is cut at its size.
    let bs = sink.bs as u64;
    let mut blk = summary.len / bs;
    while (blk + 1) * bs <= m.size {
        let b = u32::try_from(blk).unwrap_or(u32::MAX);
        let page = overlay
            .newest(b)
            .ok_or(BlockWriteError::Rebuild(RebuildError::MissingPage(b)))?;
        sink.page(b, page)?;
        blk += 1;
    }
    file.set_len(m.size)
        .map_err(|e| BlockWriteError::Io("truncate", e))?;
    // The rebuilt file, read back, must be the one the manifest records (unless the backup
    // read only the pages WAL summaries named: then it records no BLAKE3).
    let found = match m.blake3.is_empty() {
        true => String::new(),
        false => write::hash_file(tmp).map_err(|e| BlockWriteError::Io("read back", e))?,
    };
    if !found.eq_ignore_ascii_case(&m.blake3) {
        return Err(BlockWriteError::Rebuild(RebuildError::Rebuilt {
            expected_len: m.size,
            expected: m.blake3.clone(),
            found_len: m.size,
            found,
        }));
    }
    apply_attrs(&file, m).map_err(|e| BlockWriteError::Io("set mode and mtime of", e))?;
    Ok(m.size)
}

/// Threads a block file's base decodes on.
const THREADS: usize = 2;

/// Receives the base's decoded pieces at their offsets (from several threads), puts the newest
/// copy of each page in place, verifies it and writes it.
struct PageSink<'a> {
    file: &'a std::fs::File,
    overlay: &'a Overlay,
    bs: usize,
    size: u64,
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
}

impl PageSink<'_> {
    /// Whole pages of the base at `offset`: each replaced by its newest copy, verified, written.
    fn pages(&self, offset: u64, data: &[u8]) -> Result<(), BlockWriteError> {
        let bs = self.bs as u64;
        for (i, page) in data.chunks_exact(self.bs).enumerate() {
            let at = offset + (i * self.bs) as u64;
            if at + bs > self.size {
                break; // beyond the file's size (truncated since the base): dropped
            }
            let blk = u32::try_from(at / bs).unwrap_or(u32::MAX);
            self.page(blk, self.overlay.newest(blk).unwrap_or(page))?;
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
