//! Ownership and durability, last: give every restored file to the owner (when running as
//! root), then make everything durable at once (one `syncfs` per filesystem, then an fsync of
//! every directory) before the restore reports success.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::blocking;
use crate::restore::layout::Layout;
use crate::restore::{RestoreError, RestorePlan};

/// Gives the restored trees to the plan's owner and makes them durable: `dirs` are the backup's
/// directories, `created_roots` the roots that did not exist (their parents get an fsync).
pub async fn own_and_sync(
    plan: &RestorePlan,
    layout: &Layout,
    dirs: Vec<PathBuf>,
    created_roots: Vec<PathBuf>,
) -> Result<(), RestoreError> {
    let owner = plan.owner.clone();
    let roots = layout.roots();
    blocking(move || {
        if let Some(u) = owner {
            for r in &roots {
                pitr_os::chown_tree(r, u.uid, u.gid).map_err(|e| RestoreError::Io {
                    op: e.op,
                    path: e.path,
                    source: e.source,
                })?;
            }
        }
        // Files were written without an fsync each: one syncfs per filesystem flushes them all
        // (and reports any writeback error), as PostgreSQL's recovery_init_sync_method=syncfs.
        for r in &roots {
            pitr_os::syncfs(r).map_err(RestoreError::io("syncfs", r))?;
        }
        for d in dirs.iter().chain(roots.iter()) {
            fsync_dir(d).map_err(RestoreError::io("fsync", d))?;
        }
        for r in &created_roots {
            if let Some(parent) = r.parent() {
                let _ = fsync_dir(parent);
            }
        }
        Ok(())
    })
    .await
}

/// Fsyncs a directory (its entries).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
