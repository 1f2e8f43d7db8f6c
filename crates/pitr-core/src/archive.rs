//! `archive-push` and `archive-get`: PostgreSQL's `archive_command` and `restore_command`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitr_pg::history::TimelineHistory;
use pitr_pg::page::LongPageHeader;
use pitr_pg::{WalFileName, WalSegSize};
use pitr_repo::{Checksum, ClusterIdentity, ClusterRepo, Compression, RepoError, WalPut};
use pitr_storage::{current_os_user, StorageError};

use crate::spool::Spool;
use serde::Serialize;

/// A failed archive operation.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file to push does not exist.
    #[error("WAL file {path:?} does not exist\nhint: archive_command must pass PostgreSQL's %p, e.g. archive_command = 'pitr archive-push %p'")]
    SourceMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The file to push cannot be read.
    #[error("cannot read WAL file {path:?} as OS user {user:?}: {source}")]
    SourceUnreadable {
        /// The path given.
        path: PathBuf,
        /// The OS user we run as.
        user: String,
        /// The OS error.
        source: io::Error,
    },
    /// The name is not a WAL file name.
    #[error("{name:?} is not a WAL file name (segment, .partial, .history or .backup)\nhint: archive_command passes %p and restore_command passes %f")]
    NotWalName {
        /// The rejected name.
        name: String,
    },
    /// The file's content is not what its name promises.
    #[error("{name} is not a valid WAL file: {reason}")]
    BadContent {
        /// The WAL file name.
        name: WalFileName,
        /// What is wrong.
        reason: String,
    },
    /// The segment belongs to another cluster or version than the repository's cluster.
    #[error("refusing {name}: its {what} is {found} but cluster {cluster:?} in repository {repo} has {stored}\nhint: every PostgreSQL cluster needs its own --cluster name (or its own repository); after a pg_upgrade or a re-initdb, archive into a new --cluster")]
    Foreign {
        /// The WAL file name.
        name: WalFileName,
        /// Which property differs.
        what: &'static str,
        /// The file's value.
        found: String,
        /// The recorded value.
        stored: String,
        /// The cluster name.
        cluster: String,
        /// The repository.
        repo: String,
    },
    /// Writing the restored file failed.
    #[error("cannot write {path:?} as OS user {user:?}: {source}")]
    Dest {
        /// The destination.
        path: PathBuf,
        /// The OS user we run as.
        user: String,
        /// The OS error.
        source: io::Error,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<StorageError> for ArchiveError {
    fn from(e: StorageError) -> Self {
        ArchiveError::Repo(RepoError::Storage(e))
    }
}

/// What `archive-push` did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The WAL file name.
    pub name: String,
    /// `stored` or `already-archived`.
    pub outcome: PushOutcome,
    /// Original size.
    pub original_bytes: u64,
    /// Size in the repository (when stored now).
    pub stored_bytes: Option<u64>,
    /// BLAKE3 of the original bytes.
    pub blake3: String,
}

/// Whether a push stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushOutcome {
    /// Newly stored.
    Stored,
    /// An identical copy was already archived.
    AlreadyArchived,
}

fn parse_name(name: &str) -> Result<WalFileName, ArchiveError> {
    WalFileName::parse(name).map_err(|_| ArchiveError::NotWalName {
        name: name.to_string(),
    })
}

/// Checks a segment's long page header and size against its name, and returns the identity of
/// the cluster that wrote it.
///
/// `head` is the start of the file (at least its long page header) and `file_len` its size.
pub fn segment_identity(
    name: &WalFileName,
    head: &[u8],
    file_len: u64,
) -> Result<ClusterIdentity, ArchiveError> {
    let bad = |reason: String| ArchiveError::BadContent {
        name: *name,
        reason,
    };
    let header = LongPageHeader::parse(head).map_err(|e| bad(e.to_string()))?;
    if file_len != header.seg_size.bytes() {
        return Err(bad(format!(
            "file is {} bytes but its header says segments are {} bytes (truncated or padded copy?)",
            file_len,
            header.seg_size.bytes()
        )));
    }
    let segno = name.segno(header.seg_size).ok_or_else(|| {
        bad(format!(
            "the name is impossible with {} segments",
            header.seg_size
        ))
    })?;
    let expected = header.seg_size.start_of(segno);
    if expected != Some(header.short.page_addr) {
        return Err(bad(format!(
            "its first page is at LSN {} but the name says {}",
            header.short.page_addr,
            expected.map(|l| l.to_string()).unwrap_or_default()
        )));
    }
    Ok(ClusterIdentity {
        system_id: header.system_id,
        pg_major: header.short.version.number(),
        wal_seg_size: header.seg_size.bytes(),
    })
}

fn check_identity(
    cluster: &ClusterRepo,
    name: &WalFileName,
    found: &ClusterIdentity,
    stored: &ClusterIdentity,
) -> Result<(), ArchiveError> {
    let foreign = |what, found: String, stored: String| ArchiveError::Foreign {
        name: *name,
        what,
        found,
        stored,
        cluster: cluster.name().to_string(),
        repo: cluster.repo().location(),
    };
    if found.system_id != stored.system_id {
        return Err(foreign(
            "system identifier",
            found.system_id.to_string(),
            stored.system_id.to_string(),
        ));
    }
    if found.pg_major != stored.pg_major {
        return Err(foreign(
            "PostgreSQL major version",
            found.pg_major.to_string(),
            stored.pg_major.to_string(),
        ));
    }
    if found.wal_seg_size != stored.wal_seg_size {
        let show = |b: u64| {
            WalSegSize::new(b)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| format!("{b} bytes"))
        };
        return Err(foreign(
            "WAL segment size",
            show(found.wal_seg_size),
            show(stored.wal_seg_size),
        ));
    }
    Ok(())
}

/// Stores the WAL file at `path` durably: `Ok` only once it is safe in the repository.
pub async fn push(
    cluster: &ClusterRepo,
    path: &Path,
    compression: Compression,
) -> Result<PushReport, ArchiveError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = parse_name(&file_name)?;
    let read_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            ArchiveError::SourceMissing {
                path: path.to_path_buf(),
            }
        } else {
            ArchiveError::SourceUnreadable {
                path: path.to_path_buf(),
                user: current_os_user(),
                source: e,
            }
        }
    };
    let report = |outcome, original_bytes, stored_bytes, blake3: Checksum| PushReport {
        name: name.to_string(),
        outcome,
        original_bytes,
        stored_bytes,
        blake3: blake3.to_string(),
    };
    let put = if name.holds_wal() {
        // Segments (and .partial segments) are large: check the header, then read, hash and
        // compress the file in parallel ranges without a whole-file copy first.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let mut head = vec![0u8; usize::try_from(len.min(HEAD_LEN)).unwrap_or(0)];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).map_err(read_err)?;
        let found = segment_identity(&name, &head, len)?;
        let stored = cluster.register(&found).await?;
        check_identity(cluster, &name, &found, &stored)?;
        let (obj, summary) = tokio::task::spawn_blocking(move || {
            pitr_repo::frame::encode_file(&file, len, compression)
        })
        .await
        .map_err(|e| read_err(io::Error::other(e)))?
        .map_err(read_err)?;
        (len, cluster.put_wal_frame(&name, obj, summary).await?)
    } else {
        let data = tokio::fs::read(path).await.map_err(read_err)?;
        match name {
            WalFileName::History { tli } => {
                TimelineHistory::parse(tli, &data).map_err(|e| ArchiveError::BadContent {
                    name,
                    reason: e.to_string(),
                })?;
            }
            _ => {
                if std::str::from_utf8(&data).is_err() {
                    return Err(ArchiveError::BadContent {
                        name,
                        reason: "a backup history file must be text".into(),
                    });
                }
            }
        }
        cluster.repo().ensure_marker().await?;
        (
            data.len() as u64,
            cluster.put_wal(&name, &data, compression).await?,
        )
    };
    Ok(match put {
        (
            len,
            WalPut::Stored {
                summary,
                stored_len,
            },
        ) => report(PushOutcome::Stored, len, Some(stored_len), summary.checksum),
        (len, WalPut::Duplicate { summary }) => {
            report(PushOutcome::AlreadyArchived, len, None, summary.checksum)
        }
    })
}

/// How much of a segment [`push`] reads to check its long page header.
const HEAD_LEN: u64 = 8192;

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
                return Ok(GetOutcome::NotFound);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fetches `name` into `dest`: decoded straight into a temporary file next to it
/// (no whole-segment buffer), verified, checked to look like that segment, then renamed into
/// place. `None` when the repository does not have it.
pub(crate) async fn fetch_to(
    cluster: &ClusterRepo,
    name: &WalFileName,
    dest: &Path,
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
    let result = cluster.get_wal_into(name, &mut w).await;
    let outcome = (|| {
        // A failed write to the destination is the destination's fault, not corruption.
        if let Some(e) = w.error.take() {
            return Err(dest_err(e));
        }
        let Some(summary) = result? else {
            return Ok(None);
        };
        if name.holds_wal() {
            // Defence in depth: what we hand PostgreSQL must at least look like that segment.
            segment_identity(name, &w.head, summary.len)?;
        }
        io::Write::flush(&mut w.inner).map_err(dest_err)?;
        std::fs::rename(&tmp, dest).map_err(dest_err)?;
        Ok(Some(summary.len))
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
