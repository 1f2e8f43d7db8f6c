//! Block-level incremental copies: of a relation's main fork changed since the parent backup,
//! only the pages that changed are stored (one frame per file), with a page map in the
//! manifest (see [`pitr_repo::block`]).
//!
//! A page is stored when its `pd_lsn` is at or after the parent backup's start LSN (every
//! change since then is WAL-logged with a newer LSN, and with `full_page_writes` a page
//! torn by a concurrent write is restored by replay), when it is new (`pd_upper` = 0: zero
//! or uninitialised pages carry no LSN), when it lies beyond the parent's copy of the file
//! (extended since), or when its data checksum failed. Hint bits set without WAL would
//! change pages without changing their LSN, so block-level copies need `data_checksums` or
//! `wal_log_hints` (then the first hint after a checkpoint logs a full-page image and moves
//! the LSN); the plan falls back to whole files otherwise. The free space map is not
//! WAL-logged: `_fsm` and `_vm` forks, like every other file, are copied whole.
//!
//! The manifest records the size and BLAKE3 of the file as read; restore rebuilds the file
//! from the chain and checks both. When no page qualifies but the file's checksum differs
//! from the parent's, the file is copied whole: what the chain would rebuild is not what is
//! on disk.
//!
//! With PostgreSQL 17+'s WAL summaries ([`super::summaries`]) covering the range since the
//! parent started, only the pages they name are read ([`copy_summarized`]); the file as a
//! whole is not read, so its BLAKE3 is not known: the entry records an empty one and restore
//! checks each object of the chain and each page's data checksum instead.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use pitr_pg::Lsn;
use pitr_repo::block::{BlockBase, BlockDelta, BlockLayers, PageMap};
use pitr_repo::frame::FrameEncoder;
use pitr_repo::{ClusterRepo, Compression, ManifestFile};
use pitr_storage::PutMode;
use tokio::runtime::Handle;

use super::copy::{read_full, segment_number, CopyError, PageVerifier, Progress, CHUNK};
use super::summaries::{FilePages, Summarized};
use super::walk::SourceFile;

/// What a block-level incremental backup compares against.
#[derive(Debug)]
pub struct BlockIncr {
    /// Label of the parent backup.
    pub parent_label: String,
    /// The parent's start LSN: pages with an LSN at or after it changed since.
    pub parent_start: Lsn,
    /// Page size (pg_control).
    pub block_size: u32,
    /// Blocks per relation segment file (pg_control).
    pub relseg_size: u32,
    /// The parent's files, by path.
    pub parent_files: HashMap<String, ManifestFile>,
    /// The changed blocks from the WAL summaries, when they cover the range since the parent.
    pub summarized: Option<Summarized>,
}

/// How a block-level copy ended.
#[derive(Debug)]
pub enum BlockOutcome {
    /// The file disappeared before it was opened (a dropped relation).
    Vanished,
    /// It cannot be stored block-wise (a partial page, or no page qualifies although the
    /// content differs from the parent's): copy it whole.
    Whole,
    /// Stored: its manifest entry.
    Stored(Box<ManifestFile>),
}

impl BlockIncr {
    /// The parent's entry of `rel` when `rel` can be stored block-wise: a main-fork relation
    /// file that the parent holds whole (as its own object: a bundled file, smaller than
    /// [`pitr_repo::BUNDLE_LIMIT`], is copied whole again, never used as a base) or block-wise
    /// with the same page size.
    pub fn parent_of(&self, rel: &str) -> Option<&ManifestFile> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let in_relation_dir =
            rel.starts_with("base/") || rel.starts_with("global/") || rel.starts_with("pg_tblspc/");
        if !in_relation_dir || !super::walk::is_relation_file(name) || name.contains('_') {
            return None;
        }
        let pf = self.parent_files.get(rel)?;
        let bs = u64::from(self.block_size);
        let same_pages = pf
            .blocks
            .as_ref()
            .is_none_or(|b| b.block_size == self.block_size);
        (pf.size > 0 && pf.size % bs == 0 && same_pages && pf.bundle.is_none()).then_some(pf)
    }

    /// The layers `pf` (the parent's entry) is rebuilt from.
    fn layers_of(&self, pf: &ManifestFile) -> BlockLayers {
        match &pf.blocks {
            Some(b) => (**b).clone(),
            None => BlockLayers {
                block_size: self.block_size,
                relseg_size: self.relseg_size,
                base: BlockBase {
                    label: pf
                        .stored_in
                        .clone()
                        .unwrap_or_else(|| self.parent_label.clone()),
                    size: pf.size,
                    blake3: pf.blake3.clone(),
                    stored_size: pf.stored_size,
                },
                deltas: Vec::new(),
            },
        }
    }
}

/// Why the server's settings do not allow block-level incremental copies (`None`: they do).
pub async fn refusal(
    client: &pitr_proto::PgClient,
    data_checksums: bool,
) -> Result<Option<String>, pitr_proto::ProtoError> {
    let rows = client
        .query_text(
            "block-level settings",
            "SELECT current_setting('full_page_writes'), current_setting('wal_log_hints')",
        )
        .await?;
    let row = rows.first();
    let on = |i: usize| {
        row.and_then(|r| r.get(i))
            .and_then(|v| v.as_deref())
            .is_some_and(|v| v == "on")
    };
    Ok(if !on(0) {
        Some("full_page_writes is off: a page torn by a concurrent write could not be told from an unchanged one, so changed files are copied whole".into())
    } else if !data_checksums && !on(1) {
        Some("neither data_checksums nor wal_log_hints is on: hint bits change pages without changing their LSN, so changed files are copied whole (hint: set wal_log_hints = on and restart PostgreSQL)".into())
    } else {
        None
    })
}

/// Whether a page is stored: see the module documentation.
fn changed(page: &[u8], blk: u64, parent_blocks: u64, parent_start: Lsn) -> bool {
    let pd_upper = page
        .get(14..16)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let lsn = pitr_pg::page_checksum::page_lsn(page).unwrap_or(Lsn(u64::MAX));
    blk >= parent_blocks || pd_upper == 0 || lsn >= parent_start
}

/// Stores the changed pages of `file` into backup `label`.
#[allow(clippy::too_many_arguments)]
pub fn copy_blocks(
    rt: &Handle,
    cluster: &ClusterRepo,
    label: &str,
    file: &SourceFile,
    compression: Compression,
    verifier: Option<&dyn PageVerifier>,
    progress: &Progress,
    incr: &BlockIncr,
    pf: &ManifestFile,
) -> Result<BlockOutcome, CopyError> {
    let read_err = |source| CopyError::Read {
        path: file.abs.clone(),
        source,
    };
    let mut f = match File::open(&file.abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BlockOutcome::Vanished),
        Err(e) => return Err(read_err(e)),
    };
    let bs = incr.block_size as usize;
    let parent_blocks = pf.size / bs as u64;
    let first_block_of_file = segment_number(&file.rel).saturating_mul(incr.relseg_size);
    let key = cluster.backup_file_key(label, &file.rel);
    let storage = cluster.repo().storage().clone();
    let mut upload = None;
    let mut enc = FrameEncoder::new(compression).map_err(read_err)?;
    let mut hasher = blake3::Hasher::new();
    let mut pages = PageMap::default();
    let mut failures = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(read_err)?;
        if n % bs != 0 {
            // A partial page (the file is being extended, or is not a relation): whole file.
            if let Some(up) = upload {
                drop(up);
            }
            return Ok(BlockOutcome::Whole);
        }
        let chunk = buf.get(..n).unwrap_or_default();
        let first_blk = offset / bs as u64;
        let bad = match verifier {
            Some(v) => v.bad_blocks(
                &file.abs,
                offset,
                first_block_of_file.saturating_add(first_blk as u32),
                chunk,
            ),
            None => Vec::new(),
        };
        for (i, page) in chunk.chunks(bs).enumerate() {
            let blk = first_blk + i as u64;
            let relblk = first_block_of_file.saturating_add(blk as u32);
            hasher.update(page);
            if changed(page, blk, parent_blocks, incr.parent_start) || bad.contains(&relblk) {
                pages.push(blk as u32);
                enc.write(page).map_err(read_err)?;
            }
        }
        failures.extend(bad);
        offset += n as u64;
        progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let out = enc.take_output();
        if !out.is_empty() {
            if upload.is_none() {
                upload = Some(rt.block_on(storage.upload(&key))?);
            }
            if let Some(up) = upload.as_mut() {
                rt.block_on(up.write(Bytes::from(out)))?;
            }
        }
        if n < buf.len() {
            break;
        }
    }
    let blake3 = hasher.finalize().to_hex().to_string();
    let mut layers = incr.layers_of(pf);
    let mut stored_size = 0;
    if pages.is_empty() {
        // (A parent read through WAL summaries has no whole-file BLAKE3: its pages are trusted.)
        if offset == pf.size && !pf.blake3.is_empty() && !blake3.eq_ignore_ascii_case(&pf.blake3) {
            tracing::debug!(
                "{}: no page changed by LSN but the content differs from backup {}'s: copied whole",
                file.rel,
                incr.parent_label
            );
            return Ok(BlockOutcome::Whole);
        }
    } else {
        let (rest, summary) = enc.finish().map_err(read_err)?;
        let mut up = match upload {
            Some(u) => u,
            None => rt.block_on(storage.upload(&key))?,
        };
        rt.block_on(up.write(Bytes::from(rest)))?;
        rt.block_on(up.finish(PutMode::Overwrite))?;
        stored_size = rt
            .block_on(storage.head(&key))?
            .map(|m| m.size)
            .unwrap_or(0);
        layers.deltas.push(BlockDelta {
            label: label.to_string(),
            pages,
            blake3: summary.checksum.to_string(),
            stored_size,
        });
    }
    if offset == 0 {
        return Ok(BlockOutcome::Whole);
    }
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(BlockOutcome::Stored(Box::new(ManifestFile {
        path: file.rel.clone(),
        size: offset,
        mode: file.mode,
        mtime: file.mtime,
        blake3,
        stored_size,
        stored_in: None,
        checksum_failures: failures,
        blocks: Some(Box::new(layers)),
        bundle: None,
    })))
}

/// The parent's entry of an unchanged file, for this backup (`file`'s mode and mtime).
fn unchanged(incr: &BlockIncr, pf: &ManifestFile, file: &SourceFile) -> ManifestFile {
    let mut e = pf.clone();
    if pf.blocks.is_none() {
        e.stored_in = Some(
            pf.stored_in
                .clone()
                .unwrap_or_else(|| incr.parent_label.clone()),
        );
    } else {
        // A block file's layers already name the backups holding them.
        e.stored_size = 0;
    }
    e.mode = file.mode;
    e.mtime = file.mtime;
    e
}

/// Stores the pages of `file` that the WAL summaries `sum` name (see the module documentation);
/// `None` when the summaries do not settle it and its pages must be scanned.
#[allow(clippy::too_many_arguments)]
pub fn copy_summarized(
    rt: &Handle,
    cluster: &ClusterRepo,
    label: &str,
    file: &SourceFile,
    compression: Compression,
    verifier: Option<&dyn PageVerifier>,
    progress: &Progress,
    (incr, sum): (&BlockIncr, &Summarized),
    pf: &ManifestFile,
) -> Result<Option<BlockOutcome>, CopyError> {
    let read_err = |source| CopyError::Read {
        path: file.abs.clone(),
        source,
    };
    let f = match File::open(&file.abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(BlockOutcome::Vanished)),
        Err(e) => return Err(read_err(e)),
    };
    let size = f.metadata().map_err(read_err)?.len();
    let ranges = match sum.file_pages(&file.rel, size, pf.size, incr.block_size, incr.relseg_size) {
        FilePages::Scan => return Ok(None),
        FilePages::Unchanged => Vec::new(),
        FilePages::Blocks(r) => r,
    };
    if ranges.is_empty() {
        if size != pf.size {
            return Ok(None);
        }
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
        return Ok(Some(BlockOutcome::Stored(Box::new(unchanged(
            incr, pf, file,
        )))));
    }
    let bs = incr.block_size as usize;
    let first_block_of_file = segment_number(&file.rel).saturating_mul(incr.relseg_size);
    let key = cluster.backup_file_key(label, &file.rel);
    let storage = cluster.repo().storage().clone();
    let mut up = rt.block_on(storage.upload(&key))?;
    let mut enc = FrameEncoder::new(compression).map_err(read_err)?;
    let mut pages = PageMap::default();
    let mut failures = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let per_chunk = (CHUNK / bs).max(1) as u32;
    for (a, b) in ranges {
        let mut blk = a;
        while blk <= b {
            let n = (b - blk + 1).min(per_chunk);
            let chunk = buf.get_mut(..n as usize * bs).unwrap_or_default();
            let offset = u64::from(blk) * bs as u64;
            match f.read_exact_at(chunk, offset) {
                Ok(()) => {}
                // Truncated while the backup runs: copied whole, as it is now.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Some(BlockOutcome::Whole))
                }
                Err(e) => return Err(read_err(e)),
            }
            let relblk = first_block_of_file.saturating_add(blk);
            if let Some(v) = verifier {
                failures.extend(v.bad_blocks(&file.abs, offset, relblk, chunk));
            }
            for i in 0..n {
                pages.push(blk + i);
            }
            enc.write(chunk).map_err(read_err)?;
            let out = enc.take_output();
            if !out.is_empty() {
                rt.block_on(up.write(Bytes::from(out)))?;
            }
            progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            blk += n;
        }
    }
    let (rest, summary) = enc.finish().map_err(read_err)?;
    rt.block_on(up.write(Bytes::from(rest)))?;
    rt.block_on(up.finish(PutMode::Overwrite))?;
    let stored_size = rt
        .block_on(storage.head(&key))?
        .map(|m| m.size)
        .unwrap_or(0);
    let mut layers = incr.layers_of(pf);
    layers.deltas.push(BlockDelta {
        label: label.to_string(),
        pages,
        blake3: summary.checksum.to_string(),
        stored_size,
    });
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(Some(BlockOutcome::Stored(Box::new(ManifestFile {
        path: file.rel.clone(),
        size,
        mode: file.mode,
        mtime: file.mtime,
        blake3: String::new(),
        stored_size,
        stored_in: None,
        checksum_failures: failures,
        blocks: Some(Box::new(layers)),
        bundle: None,
    }))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_stored_when_new_beyond_the_parent_or_changed_since_its_start() {
        let mut page = vec![0u8; 8192];
        let start = Lsn(0x3000000);
        // All zero: new.
        assert!(changed(&page, 0, 10, start));
        // An initialised page with an older LSN: unchanged.
        page[14] = 0x20;
        page[4] = 0x10; // pd_lsn low half = 0x10 → 0/10
        assert!(!changed(&page, 3, 10, start));
        // Beyond the parent's copy: stored whatever its LSN.
        assert!(changed(&page, 10, 10, start));
        // LSN at the parent's start: stored.
        page[4..8].copy_from_slice(&0x3000000u32.to_le_bytes());
        assert!(changed(&page, 3, 10, start));
    }
}
