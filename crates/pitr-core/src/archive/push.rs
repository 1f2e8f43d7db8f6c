//! `archive-push`: a WAL file checked against the repository's cluster, then stored durably.

use std::io;
use std::path::Path;

use pitr_pg::history::TimelineHistory;
use pitr_pg::page::LongPageHeader;
use pitr_pg::{WalFileName, WalSegSize};
use pitr_repo::{Checksum, ClusterIdentity, ClusterRepo, Compression, WalPut};
use pitr_storage::current_os_user;
use serde::Serialize;

use super::ahead::FileStamp;
use super::{parse_name, ArchiveError};

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

/// Checks the start of a segment received another way (by `pitr stream`, before any of it is
/// stored) against its name and the repository's cluster, registering the identity on first
/// use as [`push`] does: a stream from another cluster is refused before it writes anything.
pub(crate) async fn admit_segment(
    cluster: &ClusterRepo,
    name: &WalFileName,
    head: &[u8],
    seg_bytes: u64,
) -> Result<(), ArchiveError> {
    let found = segment_identity(name, head, seg_bytes)?;
    let stored = cluster.register(&found).await?;
    check_identity(cluster, name, &found, &stored)
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
    Ok(
        push_stamped(cluster, path, compression, &KnownIdentity::new())
            .await?
            .0,
    )
}

/// The cluster's recorded identity once read, shared by the pushes of one process (the
/// push-ahead worker): it is written create-only and never changes, so reading it once saves a
/// round trip per segment on an object store.
pub(crate) type KnownIdentity = std::sync::OnceLock<ClusterIdentity>;

/// [`push`], also returning the [`FileStamp`] of the file that was stored when `path` still
/// names that same, unchanged file after the push (`None` when it was replaced or touched
/// meanwhile: then nothing may be acknowledged from this push without reading the file again).
pub(crate) async fn push_stamped(
    cluster: &ClusterRepo,
    path: &Path,
    compression: Compression,
    known: &KnownIdentity,
) -> Result<(PushReport, Option<FileStamp>), ArchiveError> {
    let cluster = cluster.clone();
    push_opening_stamped(async move { Ok(cluster) }, path, compression, known).await
}

/// [`push`] into the cluster that `open` opens, opened while the file is read, hashed and
/// compressed: on an object store, opening the repository and reading the cluster's identity
/// are round trips (the key object, the identity) that then cost no time of their own, and
/// the create-only PUT is the one request left after the compression. `open` may skip the
/// check that the location is a repository ([`pitr_repo::Repo::open_with_key_unchecked`]):
/// the push makes it before writing unless the cluster's recorded identity proves it.
/// Every check runs to completion before that PUT is sent: a foreign segment, a missing key
/// or an unreadable repository stores nothing; a failure to open discards the compressed
/// bytes.
pub async fn push_opening<F, E>(
    open: F,
    path: &Path,
    compression: Compression,
) -> Result<PushReport, E>
where
    F: std::future::Future<Output = Result<ClusterRepo, E>>,
    E: From<ArchiveError>,
{
    Ok(
        push_opening_stamped(open, path, compression, &KnownIdentity::new())
            .await?
            .0,
    )
}

/// [`push_opening`] with the [`FileStamp`] of [`push_stamped`].
async fn push_opening_stamped<F, E>(
    open: F,
    path: &Path,
    compression: Compression,
    known: &KnownIdentity,
) -> Result<(PushReport, Option<FileStamp>), E>
where
    F: std::future::Future<Output = Result<ClusterRepo, E>>,
    E: From<ArchiveError>,
{
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
    let stamp;
    let put = if name.holds_wal() {
        // Segments (and .partial segments) are large: check the header, then read, hash and
        // compress the file in parallel ranges without a whole-file copy first.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        let len = meta.len();
        let mut head = vec![0u8; usize::try_from(len.min(HEAD_LEN)).unwrap_or(0)];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).map_err(read_err)?;
        stamp = FileStamp::new(&meta, &head);
        let found = segment_identity(&name, &head, len)?;
        // Compress while the repository is opened and the recorded identity read (round trips
        // on an object store); a failure or a mismatch discards the work. The opening is
        // started first: its CPU part (an S3 client, its TLS settings) then runs before the
        // compression threads take the cores, and its first request is under way while they
        // work.
        let mut open = std::pin::pin!(open);
        let mut opened = None;
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = open.as_mut().poll(cx) {
                opened = Some(r);
            }
            std::task::Poll::Ready(())
        })
        .await;
        let encode = tokio::task::spawn_blocking(move || {
            pitr_repo::frame::encode_file(&file, len, compression)
        });
        let cluster = match opened {
            Some(r) => r?,
            None => open.await?,
        };
        let stored = recorded_identity(&cluster, &found, known).await?;
        check_identity(&cluster, &name, &found, &stored)?;
        let (obj, summary) = encode
            .await
            .map_err(|e| read_err(io::Error::other(e)))?
            .map_err(read_err)?;
        let put = cluster
            .put_wal_frame(&name, obj, summary)
            .await
            .map_err(ArchiveError::from)?;
        (len, put)
    } else {
        let meta = tokio::fs::metadata(path).await.map_err(read_err)?;
        let data = tokio::fs::read(path).await.map_err(read_err)?;
        let head_len = data
            .len()
            .min(usize::try_from(HEAD_LEN).unwrap_or(usize::MAX));
        stamp = FileStamp::new(&meta, &data[..head_len]);
        check_text(&name, &data)?;
        let cluster = open.await?;
        let repo = cluster.repo();
        repo.check_location().await.map_err(ArchiveError::from)?;
        repo.ensure_marker().await.map_err(ArchiveError::from)?;
        let put = cluster
            .put_wal(&name, &data, compression)
            .await
            .map_err(ArchiveError::from)?;
        (data.len() as u64, put)
    };
    let report = |outcome, original_bytes, stored_bytes, blake3: Checksum| PushReport {
        name: name.to_string(),
        outcome,
        original_bytes,
        stored_bytes,
        blake3: blake3.to_string(),
    };
    // The file pushed is the one still at `path` only if nothing replaced or wrote it since it
    // was opened (a write or a rename changes its ctime).
    let unchanged = std::fs::metadata(path)
        .ok()
        .filter(|m| stamp.same_file(m))
        .map(|_| stamp);
    let report = match put {
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
    };
    Ok((report, unchanged))
}

/// The cluster's recorded identity, registering `found` on first use. The location may have
/// been opened without checking that it is a repository ([`pitr_repo::Repo::open_with_key_unchecked`]):
/// a recorded identity proves it is (pitr writes one only into a repository, after its marker,
/// and reads it back verified), otherwise the location is checked before anything is written.
/// `known` holds it once read (by this push or an earlier one of the same process).
async fn recorded_identity(
    cluster: &ClusterRepo,
    found: &ClusterIdentity,
    known: &KnownIdentity,
) -> Result<ClusterIdentity, ArchiveError> {
    if let Some(stored) = known.get() {
        return Ok(stored.clone());
    }
    let stored = match cluster.identity().await? {
        Some(stored) => stored,
        None => {
            cluster.repo().check_location().await?;
            cluster.register(found).await?
        }
    };
    Ok(known.get_or_init(|| stored).clone())
}

/// A timeline history file must parse; a backup history file must be text.
fn check_text(name: &WalFileName, data: &[u8]) -> Result<(), ArchiveError> {
    match name {
        WalFileName::History { tli } => {
            TimelineHistory::parse(*tli, data).map_err(|e| ArchiveError::BadContent {
                name: *name,
                reason: e.to_string(),
            })?;
        }
        _ => {
            if std::str::from_utf8(data).is_err() {
                return Err(ArchiveError::BadContent {
                    name: *name,
                    reason: "a backup history file must be text".into(),
                });
            }
        }
    }
    Ok(())
}

/// How much of a segment [`push`] reads to check its long page header.
pub(super) const HEAD_LEN: u64 = 8192;
