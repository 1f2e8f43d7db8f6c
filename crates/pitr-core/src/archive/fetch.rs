//! One WAL file from the repository into a local file, verified and published atomically:
//! what `archive-get` and the read-ahead spool both do.

use std::io;
use std::path::{Path, PathBuf};

use pitr_pg::WalFileName;
use pitr_repo::ClusterRepo;
use pitr_storage::current_os_user;

use super::push::{segment_identity, HEAD_LEN};
use super::ArchiveError;

/// Fetches `name` into `dest`: decoded straight into a temporary file next to it
/// (no whole-segment buffer), verified, checked to look like that segment, then renamed into
/// place. `None` when the repository does not have it.
pub(crate) async fn fetch_to(
    cluster: &ClusterRepo,
    name: &WalFileName,
    dest: &Path,
) -> Result<Option<u64>, ArchiveError> {
    fetch_from(cluster, name, dest, None).await
}

/// Like [`fetch_to`] from the streamed `.partial` of segment `name` (see `pitr stream`): its
/// bytes, then zeros up to `seg_bytes`, a full-size segment whose WAL ends where streaming
/// stopped (PostgreSQL reads it as the end of WAL). `None` when there is no `.partial`.
pub(crate) async fn fetch_partial_to(
    cluster: &ClusterRepo,
    name: &WalFileName,
    dest: &Path,
    seg_bytes: u64,
) -> Result<Option<u64>, ArchiveError> {
    fetch_from(cluster, name, dest, Some(seg_bytes)).await
}

async fn fetch_from(
    cluster: &ClusterRepo,
    name: &WalFileName,
    dest: &Path,
    partial_of: Option<u64>,
) -> Result<Option<u64>, ArchiveError> {
    let dest_err = |source| ArchiveError::Dest {
        path: dest.to_path_buf(),
        user: current_os_user(),
        source,
    };
    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(".pitr-tmp");
    let tmp = PathBuf::from(tmp_name);
    let file = std::fs::File::create(&tmp).map_err(dest_err)?;
    let mut w = HeadWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        head: Vec::new(),
        error: None,
    };
    let (w, result) = match partial_of {
        // Archived segments are written once: read in bounded pieces, whatever their size.
        None => cluster.get_wal_into(name, w).await,
        // A `.partial` is replaced as streaming goes on: one whole (atomic) read.
        Some(_) => {
            let r = cluster.get_stream_partial_into(name, &mut w).await;
            (Some(w), r)
        }
    };
    let Some(mut w) = w else {
        let _ = std::fs::remove_file(&tmp);
        // Only when the runtime shuts down under the decoding thread.
        return Err(match result {
            Err(e) => ArchiveError::Repo(e),
            Ok(_) => dest_err(io::Error::other("the decoding thread stopped")),
        });
    };
    let outcome = (|| {
        // A failed write to the destination is the destination's fault, not corruption.
        if let Some(e) = w.error.take() {
            return Err(dest_err(e));
        }
        let Some(summary) = result? else {
            return Ok(None);
        };
        io::Write::flush(&mut w.inner).map_err(dest_err)?;
        let len = match partial_of {
            Some(seg_bytes) if summary.len <= seg_bytes => {
                w.inner.get_ref().set_len(seg_bytes).map_err(dest_err)?;
                seg_bytes
            }
            Some(_) => {
                return Err(ArchiveError::BadContent {
                    name: *name,
                    reason: format!(
                        "its streamed .partial holds {} bytes, more than a segment",
                        summary.len
                    ),
                })
            }
            None => summary.len,
        };
        if name.holds_wal() {
            // Defence in depth: what we hand PostgreSQL must at least look like that segment.
            segment_identity(name, &w.head, len)?;
        }
        std::fs::rename(&tmp, dest).map_err(dest_err)?;
        Ok(Some(len))
    })();
    if !matches!(outcome, Ok(Some(_))) {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

/// Passes bytes to a file, keeping the first [`HEAD_LEN`] and the first write error.
struct HeadWriter {
    inner: io::BufWriter<std::fs::File>,
    head: Vec<u8>,
    error: Option<io::Error>,
}

impl io::Write for HeadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = (HEAD_LEN as usize).saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..room.min(buf.len())]);
        self.inner.write_all(buf).map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            io::Error::new(kind, "cannot write the destination")
        })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
