//! Writing one block file of a block-level incremental backup: rebuilt from its base object
//! and the changed pages of each incremental since (newest page wins, see
//! [`pitr_repo::block`]) into `dest.pitr-tmp`, every page verified as it is written (its data
//! checksum, when the cluster has them), the whole file checked against the size and BLAKE3
//! the manifest records, then renamed into place.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use pitr_pg::page_checksum::{verify_page, PageCheck};
use pitr_pg::Lsn;
use pitr_repo::block::{rebuild, BlockLayers, RebuildError};
use pitr_repo::ManifestFile;

use super::write::{apply_attrs, tmp_path};
use crate::restore::Progress;

/// Why a block file could not be written.
#[derive(Debug)]
pub enum BlockWriteError {
    /// An object is damaged, not what the manifest records, or the rebuilt file is not.
    Rebuild(RebuildError),
    /// The local file system failed.
    Io(&'static str, io::Error),
}

/// Progress is told of written bytes in steps of this many.
const PROGRESS_STEP: u64 = 1 << 20;

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
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| BlockWriteError::Io("create", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let first_block = segment_number(&m.path).saturating_mul(layers.relseg_size);
    let mut unreported = 0u64;
    let mut sink = |blk: u32, page: &[u8]| -> io::Result<()> {
        if let Some(start) = checksums_before {
            let relblk = first_block.saturating_add(blk);
            if let PageCheck::Mismatch { .. } = verify_page(page, relblk, start) {
                if !m.checksum_failures.contains(&relblk) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the rebuilt page fails its data checksum (relation block {relblk})"
                        ),
                    ));
                }
            }
        }
        out.write_all(page)?;
        unreported += page.len() as u64;
        if unreported >= PROGRESS_STEP {
            if let Some(p) = progress {
                p.advance(unreported);
            }
            unreported = 0;
        }
        Ok(())
    };
    let n = rebuild(layers, base, deltas, m.size, &m.blake3, &mut sink)
        .map_err(BlockWriteError::Rebuild)?;
    if let Some(p) = progress {
        p.advance(unreported);
    }
    let file = out
        .into_inner()
        .map_err(|e| BlockWriteError::Io("write", e.into_error()))?;
    apply_attrs(&file, m).map_err(|e| BlockWriteError::Io("set mode and mtime of", e))?;
    Ok(n)
}

/// Segment number of a relation file (`16384.3` → 3).
fn segment_number(rel: &str) -> u32 {
    rel.rsplit('/')
        .next()
        .and_then(|n| n.split_once('.'))
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}
