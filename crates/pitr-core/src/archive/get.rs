//! `archive-get`: a WAL file for PostgreSQL's `restore_command`, from the read-ahead spool or
//! the repository.

use std::path::Path;
use std::time::Duration;

use pitr_pg::WalFileName;
use pitr_repo::{ClusterRepo, RepoError};

use super::fetch::{fetch_partial_to, fetch_to};
use super::spool::Spool;
use super::{parse_name, ArchiveError};

/// What `archive-get` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetOutcome {
    /// The file was written to the destination, verified.
    Restored {
        /// Bytes written.
        bytes: u64,
        /// Served from the read-ahead spool.
        from_spool: bool,
    },
    /// The repository does not have that file.
    NotFound,
}

/// How many times, and how long apart, a transient repository error is retried.
pub const GET_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(2000),
];

/// Fetches `name` into `dest` atomically, verifying its checksum: from `spool` when a read-ahead
/// already brought it, else from the repository. Transient repository errors are retried a
/// bounded number of times.
pub async fn get(
    cluster: &ClusterRepo,
    name: &str,
    dest: &Path,
    spool: Option<&Spool>,
) -> Result<GetOutcome, ArchiveError> {
    let name = parse_name(name)?;
    if let Some(spool) = spool {
        match spool.take(&name, dest) {
            Ok(true) => {
                let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
                return Ok(GetOutcome::Restored {
                    bytes,
                    from_spool: true,
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "read-ahead spool {}: {e}; fetching from the repository",
                spool.dir().display()
            ),
        }
    }
    let mut attempt = 0;
    loop {
        match fetch_to(cluster, &name, dest).await {
            Err(ArchiveError::Repo(RepoError::Storage(e)))
                if e.is_transient() && attempt < GET_RETRY_DELAYS.len() =>
            {
                tracing::warn!("reading {name} failed ({e}); retrying");
                tokio::time::sleep(GET_RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            Ok(Some(bytes)) => {
                return Ok(GetOutcome::Restored {
                    bytes,
                    from_spool: false,
                })
            }
            Ok(None) => {
                if let (WalFileName::History { .. }, Some(spool)) = (name, spool) {
                    spool.clear();
                }
                if let WalFileName::Segment { .. } = name {
                    if let Some(bytes) = streamed_partial(cluster, &name, dest).await? {
                        return Ok(GetOutcome::Restored {
                            bytes,
                            from_spool: false,
                        });
                    }
                }
                return Ok(GetOutcome::NotFound);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A segment not (yet) stored complete, served from the `.partial` `pitr stream` keeps of it:
/// what a restore to the end of WAL needs after the primary is lost. The complete segment
/// always wins, also when it is stored (and the `.partial` deleted) while we look.
async fn streamed_partial(
    cluster: &ClusterRepo,
    name: &WalFileName,
    dest: &Path,
) -> Result<Option<u64>, ArchiveError> {
    let Some(id) = cluster.identity().await? else {
        return Ok(None);
    };
    if let Some(bytes) = fetch_partial_to(cluster, name, dest, id.wal_seg_size).await? {
        tracing::info!("{name} served from the streamed {name}.partial (WAL received so far)");
        return Ok(Some(bytes));
    }
    fetch_to(cluster, name, dest).await
}
