//! `pitr backup`: online, non-exclusive base backups, read straight from PGDATA on the
//! database host (the copy method) or received over the replication protocol from another
//! host (the replication method, [`replication`]).
//!
//! The plan (`plan`): check the server (archiving on, not a standby, same cluster as the
//! repository), choose the method and an incremental backup's parent. The execution
//! (`execute`): copy method: start a non-exclusive backup on one connection, copy PGDATA and
//! tablespaces in parallel through checksum + compression, stop the backup; replication
//! method: `BASE_BACKUP`, each file of its archives through the same checksum + compression.
//! Both then wait (bounded) until the WAL from the start to the consistency point is in the
//! repository. Only then is the manifest published, which is what makes a backup exist.
//!
//! Why the replication method waits for archived WAL instead of streaming it: the server's
//! `archive_command` (pitr archive-push) is what every restore reads WAL from; a backup whose
//! WAL does not arrive there would restore only as long as its streamed copy lives, and would
//! hide a broken archive. Waiting fails the backup loudly instead, and a segment is written
//! by one path only.

mod blocks;
mod bundle;
pub mod copy;
mod lease;
mod replication;
mod summaries;
mod verifier;
pub mod walk;

use lease::{claim_label, take_lease};
use verifier::ChecksumVerifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use pitr_pg::{Lsn, WalFileName, WalSegSize};
use pitr_repo::{
    BackupKind, BackupManifest, ClusterIdentity, ClusterRepo, Compression, ManifestFile,
    ManifestTablespace, RepoError,
};
use serde::Serialize;

pub use copy::{PageVerifier, Progress};

use pitr_pg::control::ControlFile;
use pitr_proto::{ArchiveMode, BackupSession, BackupStopInfo, PgClient};

/// A failed backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Talking to the server failed.
    #[error(transparent)]
    Server(#[from] pitr_proto::ProtoError),
    /// An internal task failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server is a standby.
    #[error("the server is a standby (in recovery): pitr takes backups from the primary\nhint: connect with -h/-p to the primary")]
    Standby,
    /// WAL archiving is not configured.
    #[error("WAL archiving is off (archive_mode = {archive_mode:?}): a backup without archived WAL cannot be restored\nhint: set archive_mode = on and archive_command = '{suggestion}' and restart PostgreSQL")]
    NoArchiving {
        /// Current setting.
        archive_mode: String,
        /// The archive_command to set.
        suggestion: String,
    },
    /// PGDATA does not belong to the server we are connected to.
    #[error("data directory {path:?} does not belong to the server we are connected to ({reason})\nhint: run pitr backup on the database host, with --pgdata pointing at the server's data directory")]
    WrongPgdata {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server belongs to another cluster than the repository's.
    #[error("the server (system identifier {found}, PostgreSQL {found_major}) is not cluster {cluster:?} of the repository (system identifier {stored}, PostgreSQL {stored_major})\nhint: use another --cluster name for this server")]
    Foreign {
        /// Cluster name.
        cluster: String,
        /// The server's system id.
        found: u64,
        /// The server's major.
        found_major: u32,
        /// Recorded system id.
        stored: u64,
        /// Recorded major.
        stored_major: u32,
    },
    /// Listing PGDATA failed.
    #[error("cannot list data directory {path:?}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Copying a file failed.
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    /// WAL did not reach the repository in time.
    #[error("WAL needed by backup {label} did not reach the repository within {waited:?}: missing {missing}\nhint: check that archive_command = '{suggestion}' works (see pg_stat_archiver.last_failed_wal and the server log)")]
    WalTimeout {
        /// Backup label.
        label: String,
        /// How long we waited.
        waited: Duration,
        /// First missing segment.
        missing: String,
        /// The archive_command to use.
        suggestion: String,
    },
    /// An incremental backup was asked for over the replication protocol.
    #[error("incremental backups are taken by the copy method only, and the data directory is not readable here ({0})\nhint: run pitr backup --type incr on the database host (with --pgdata), or take a full backup")]
    IncrOverReplication(String),
    /// The copy method was forced but the data directory cannot be used.
    #[error("--method copy: {0}\nhint: run pitr backup on the database host as an OS user that can read the data directory, or use --method replication")]
    CopyUnavailable(Box<BackupError>),
    /// The parent chosen for an incremental backup was expired meanwhile.
    #[error("backup {0}, the parent chosen for this incremental backup, was removed by pitr expire meanwhile\nhint: run pitr backup --type incr again (it chooses another parent), or take a full backup")]
    ParentExpired(String),
    /// No parent for an incremental backup.
    #[error("no full backup to base an incremental backup on in cluster {0:?}\nhint: take a full backup first (pitr backup --type full)")]
    NoParent(String),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// How the files of a backup are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMethod {
    /// Copy when the data directory is readable here and is the server's, else replication.
    #[default]
    Auto,
    /// Read PGDATA directly beside `pg_backup_start` / `pg_backup_stop` (on the database host).
    Copy,
    /// `BASE_BACKUP` over a replication connection (from any host).
    Replication,
}

impl std::fmt::Display for BackupMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupMethod::Auto => "auto",
            BackupMethod::Copy => "copy",
            BackupMethod::Replication => "replication",
        })
    }
}

/// Options of a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// PGDATA (default: the server's `data_directory`).
    pub pgdata: Option<PathBuf>,
    /// Copy or replication.
    pub method: BackupMethod,
    /// Connection settings of the replication connection (the replication method).
    pub conn: pitr_proto::ConnParams,
    /// Full or incremental.
    pub kind: BackupKind,
    /// Files copied concurrently.
    pub jobs: usize,
    /// Compression.
    pub compression: Compression,
    /// Request an immediate checkpoint (otherwise wait for the next scheduled one).
    pub fast: bool,
    /// How long to wait for the backup's WAL to be archived.
    pub archive_timeout: Duration,
    /// The archive_command to suggest in messages.
    pub archive_command_hint: String,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Label.
    pub label: String,
    /// `full` or `incr`.
    pub kind: String,
    /// `copy` or `replication`.
    pub method: BackupMethod,
    /// Parent of an incremental.
    pub parent: Option<String>,
    /// Timeline.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Consistency LSN.
    pub stop_lsn: String,
    /// Files in the backup.
    pub files: usize,
    /// Files copied now (others reused from the parent).
    pub files_copied: usize,
    /// Original bytes.
    pub size: u64,
    /// Bytes stored by this backup.
    pub stored_size: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Files with blocks whose data page checksum failed, and the blocks.
    pub checksum_failures: Vec<(String, Vec<u32>)>,
    /// Files stored as their changed pages (a block-level incremental backup).
    pub files_block_level: usize,
    /// Why an incremental backup copied changed files whole instead of their changed pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_files: Option<String>,
    /// How a block-level incremental found its changed pages: PostgreSQL's WAL summaries, or
    /// reading every page's LSN (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_pages_from: Option<String>,
}

/// A unique, time-ordered label: `YYYYMMDDTHHMMSSF` (or `I` for incremental).
fn new_label(now: Timestamp, kind: BackupKind) -> String {
    let t = now.to_zoned(jiff::tz::TimeZone::UTC);
    let suffix = match kind {
        BackupKind::Full => 'F',
        BackupKind::Incr => 'I',
    };
    format!("{}{suffix}", t.strftime("%Y%m%dT%H%M%S"))
}

/// Reads and checks PGDATA's `global/pg_control`.
fn read_control(pgdata: &Path) -> Result<ControlFile, String> {
    let bytes = std::fs::read(pgdata.join("global/pg_control")).map_err(|e| {
        format!(
            "cannot read global/pg_control as OS user {:?}: {e}",
            pitr_storage::current_os_user()
        )
    })?;
    ControlFile::parse(&bytes).map_err(|e| e.to_string())
}

/// Takes a backup of the server `client` is connected to: plan it (checks that change nothing
/// on the server), execute it (copy between the server's start and stop of the backup, then
/// wait for its WAL), and publish its manifest, which is what makes it exist.
pub async fn backup(
    cluster: &ClusterRepo,
    client: &PgClient,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let plan = plan(cluster, client, opts).await?;
    let (start_time, label) = claim_label(cluster, opts.kind).await?;
    let lease = take_lease(cluster, client, &plan, &label).await?;
    let taken = execute(cluster, client, &plan, opts, progress, label, start_time).await?;
    let copied = taken.copied;
    let method = match plan.source {
        Source::Copy { .. } => BackupMethod::Copy,
        Source::Replication => BackupMethod::Replication,
    };
    let whole_files = plan.whole_files.clone();
    let changed_pages_from = taken.changed_pages_from.clone();
    let manifest = plan.manifest(taken, opts);
    cluster.put_manifest(&manifest).await?;
    if let Err(e) = lease.release().await {
        tracing::warn!(
            "backup {} is complete, but its lease could not be removed (it lapses by itself): {e}",
            manifest.label
        );
    }
    let mut report = report(&manifest, method, copied, started);
    report.whole_files = whole_files;
    report.changed_pages_from = changed_pages_from;
    Ok(report)
}

/// Where the files come from.
#[derive(Debug)]
enum Source {
    /// The data directory, read here.
    Copy {
        /// The data directory to copy.
        pgdata: PathBuf,
        /// Its `pg_control`, checked to be the server's.
        control: ControlFile,
    },
    /// The server's `BASE_BACKUP`.
    Replication,
}

/// What a backup will be, decided before the server is asked to start one.
#[derive(Debug)]
struct Plan {
    /// How the files are read.
    source: Source,
    /// The cluster, as the repository records it.
    identity: ClusterIdentity,
    /// Whether data page checksums are on (and verified while copying).
    data_checksums: bool,
    /// The server's tablespaces.
    tablespaces: Vec<ManifestTablespace>,
    /// The backup an incremental one builds on.
    parent: Option<BackupManifest>,
    /// Why an incremental backup copies changed files whole instead of their changed pages.
    whole_files: Option<String>,
}

/// Checks the server (a primary, archiving), its data directory and the repository's cluster,
/// and chooses the parent of an incremental backup.
async fn plan(
    cluster: &ClusterRepo,
    client: &PgClient,
    opts: &BackupOptions,
) -> Result<Plan, BackupError> {
    let info = client.server_info().await?;
    if info.in_recovery {
        return Err(BackupError::Standby);
    }
    if info.archive_mode == ArchiveMode::Off {
        return Err(BackupError::NoArchiving {
            archive_mode: "off".into(),
            suggestion: opts.archive_command_hint.clone(),
        });
    }
    let pgdata = opts
        .pgdata
        .clone()
        .unwrap_or_else(|| info.data_directory.clone());
    let source = choose_source(opts, pgdata, info.system_id)?;
    let identity = ClusterIdentity {
        system_id: info.system_id,
        pg_major: info.major.number(),
        wal_seg_size: info.wal_segment_size.bytes(),
    };
    register(cluster, &identity).await?;
    let tablespaces: Vec<ManifestTablespace> = client
        .tablespaces()
        .await?
        .into_iter()
        .map(|t| ManifestTablespace {
            oid: t.oid,
            name: t.name,
            location: t.location.display().to_string(),
        })
        .collect();
    let parent = match opts.kind {
        BackupKind::Full => None,
        BackupKind::Incr => Some(
            cluster
                .backups()
                .await?
                .into_iter()
                .rev()
                .find(|b| b.system_id == info.system_id)
                .ok_or_else(|| BackupError::NoParent(cluster.name().to_string()))?,
        ),
    };
    let whole_files = match opts.kind {
        BackupKind::Full => None,
        BackupKind::Incr => blocks::refusal(client, info.data_checksums).await?,
    };
    if let Some(why) = &whole_files {
        tracing::warn!("incremental backup at file level: {why}");
    }
    Ok(Plan {
        source,
        identity,
        data_checksums: info.data_checksums,
        tablespaces,
        parent,
        whole_files,
    })
}

/// The copy method when `pgdata` is the server's and readable here (or forced), else the
/// replication method; an incremental backup needs the copy method.
fn choose_source(
    opts: &BackupOptions,
    pgdata: PathBuf,
    system_id: u64,
) -> Result<Source, BackupError> {
    let local = server_control(&pgdata, system_id);
    match (opts.method, local) {
        (BackupMethod::Replication, _) if opts.kind == BackupKind::Incr => Err(
            BackupError::IncrOverReplication("--method replication".into()),
        ),
        (BackupMethod::Replication, _) => Ok(Source::Replication),
        (_, Ok(control)) => Ok(Source::Copy { pgdata, control }),
        (BackupMethod::Copy, Err(e)) => Err(BackupError::CopyUnavailable(Box::new(e))),
        (BackupMethod::Auto, Err(e)) if opts.kind == BackupKind::Incr => {
            Err(BackupError::IncrOverReplication(e.to_string()))
        }
        (BackupMethod::Auto, Err(e)) => {
            tracing::info!("backing up over the replication protocol: {e}");
            Ok(Source::Replication)
        }
    }
}

/// `pgdata`'s `pg_control`, refused unless it is the server's (`system_id`).
fn server_control(pgdata: &Path, system_id: u64) -> Result<ControlFile, BackupError> {
    let control = read_control(pgdata).map_err(|reason| BackupError::WrongPgdata {
        path: pgdata.to_path_buf(),
        reason,
    })?;
    if control.system_id != system_id {
        return Err(BackupError::WrongPgdata {
            path: pgdata.to_path_buf(),
            reason: format!(
                "its pg_control has system identifier {}, the server {}",
                control.system_id, system_id
            ),
        });
    }
    Ok(control)
}

/// Records the server as the repository's cluster, or refuses another cluster's server.
async fn register(cluster: &ClusterRepo, identity: &ClusterIdentity) -> Result<(), BackupError> {
    let stored = cluster.register(identity).await?;
    if stored.system_id != identity.system_id || stored.pg_major != identity.pg_major {
        return Err(BackupError::Foreign {
            cluster: cluster.name().to_string(),
            found: identity.system_id,
            found_major: identity.pg_major,
            stored: stored.system_id,
            stored_major: stored.pg_major,
        });
    }
    Ok(())
}

/// What the server and the copy produced.
#[derive(Debug)]
struct Taken {
    label: String,
    start_time: Timestamp,
    stop_time: Timestamp,
    timeline: u32,
    start_lsn: Lsn,
    stop: BackupStopInfo,
    /// Every file, sorted by path.
    files: Vec<ManifestFile>,
    dirs: Vec<pitr_repo::ManifestDir>,
    /// Files copied now (the others are the parent's).
    copied: usize,
    /// How a block-level incremental found its changed pages.
    changed_pages_from: Option<String>,
}

/// Takes the files (copy or replication), then waits until the backup's WAL is in the
/// repository.
async fn execute(
    cluster: &ClusterRepo,
    client: &PgClient,
    plan: &Plan,
    opts: &BackupOptions,
    progress: Arc<Progress>,
    label: String,
    start_time: Timestamp,
) -> Result<Taken, BackupError> {
    let taken = match &plan.source {
        Source::Copy { pgdata, control } => {
            let source = (pgdata.as_path(), control);
            copy_backup(
                cluster, client, plan, source, opts, progress, label, start_time,
            )
            .await?
        }
        Source::Replication => {
            replication_backup(cluster, opts, progress, label, start_time).await?
        }
    };
    crate::pause::point("backup-before-manifest").await;
    wait_for_wal(
        cluster,
        &taken.label,
        taken.timeline,
        taken.start_lsn,
        taken.stop.stop_lsn,
        plan.identity.wal_seg_size,
        opts,
    )
    .await?;
    Ok(taken)
}

/// The replication method: `BASE_BACKUP` on a replication connection.
async fn replication_backup(
    cluster: &ClusterRepo,
    opts: &BackupOptions,
    progress: Arc<Progress>,
    label: String,
    start_time: Timestamp,
) -> Result<Taken, BackupError> {
    let mut conn = pitr_proto::connect_replication(&opts.conn).await?;
    let rx = replication::receive(
        &mut conn,
        cluster,
        &label,
        opts.fast,
        opts.compression,
        opts.jobs,
        progress,
    )
    .await?;
    if let Err(e) = conn.close().await {
        tracing::debug!("closing the replication connection: {e}");
    }
    let mut files = rx.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Taken {
        label,
        start_time,
        stop_time: Timestamp::now(),
        timeline: rx.timeline,
        start_lsn: rx.start_lsn,
        stop: BackupStopInfo {
            stop_lsn: rx.end_lsn,
            backup_label: rx.backup_label,
            tablespace_map: rx.tablespace_map,
        },
        copied: files.len(),
        files,
        dirs: rx.dirs,
        changed_pages_from: None,
    })
}

/// The copy method: starts the backup on the server, copies the files, stops it (even when
/// copying failed).
#[allow(clippy::too_many_arguments)]
async fn copy_backup(
    cluster: &ClusterRepo,
    client: &PgClient,
    plan: &Plan,
    (pgdata, control): (&Path, &ControlFile),
    opts: &BackupOptions,
    progress: Arc<Progress>,
    label: String,
    start_time: Timestamp,
) -> Result<Taken, BackupError> {
    let session = BackupSession::start(client, &label, opts.fast).await?;
    let (start_lsn, timeline) = (session.start_lsn(), session.timeline().0);
    tracing::info!("backup {label} started at {start_lsn} on timeline {timeline}");
    let verifier: Option<Arc<dyn PageVerifier>> = plan.data_checksums.then(|| {
        Arc::new(ChecksumVerifier {
            start_lsn,
            block_size: control.block_size as usize,
            relseg_size: control.relseg_size,
        }) as Arc<dyn PageVerifier>
    });

    let block_parent = plan.parent.as_ref().filter(|_| plan.whole_files.is_none());
    let (summarized, changed_pages_from) = match block_parent {
        Some(p) => changed_pages(client, p, (timeline, start_lsn)).await,
        None => (None, None),
    };
    let blocks = block_parent.map(|p| {
        Arc::new(blocks::BlockIncr {
            parent_label: p.label.clone(),
            parent_start: p.start(),
            block_size: control.block_size,
            relseg_size: control.relseg_size,
            parent_files: p
                .files
                .iter()
                .map(|f| (f.path.clone(), f.clone()))
                .collect(),
            summarized,
        })
    });
    let result = copy_phase(
        cluster,
        &label,
        pgdata,
        plan.parent.as_ref(),
        opts,
        (verifier, blocks),
        progress,
    )
    .await;
    // Always end the backup on the server, even when copying failed. PostgreSQL's own wait for
    // archiving could block forever; pitr waits on its repository with a deadline instead.
    let stop = session.stop(false).await;
    let (mut files, dirs, copied) = result?;
    let stop = stop?;
    let stop_time = Timestamp::now();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Taken {
        label,
        start_time,
        stop_time,
        timeline,
        start_lsn,
        stop,
        files,
        dirs,
        copied,
        changed_pages_from,
    })
}

/// The WAL summaries' changed blocks since `parent` started, when they cover the range, and how
/// the incremental finds its changed pages (said in the log and the report).
async fn changed_pages(
    client: &PgClient,
    parent: &BackupManifest,
    (timeline, start_lsn): (u32, Lsn),
) -> (Option<summaries::Summarized>, Option<String>) {
    let found = summaries::changed_blocks(
        client,
        (parent.timeline, parent.start()),
        (timeline, start_lsn),
    )
    .await
    // The summary functions are for superusers unless granted: fall back, and say why.
    .unwrap_or_else(|e| {
        Err(format!(
            "cannot read the WAL summaries ({e}) (hint: GRANT EXECUTE ON FUNCTION pg_get_wal_summarizer_state(), pg_available_wal_summaries(), pg_wal_summary_contents(bigint, pg_lsn, pg_lsn) TO {})",
            client.user()
        ))
    });
    match found {
        Ok(s) => {
            let how = format!("changed pages from {}", s.description);
            tracing::info!("{how}");
            (Some(s), Some(how))
        }
        Err(why) => {
            let how = format!("changed pages found by reading every page's LSN: {why}");
            tracing::info!("{how}");
            (None, Some(how))
        }
    }
}

impl Plan {
    /// The manifest of the backup `taken` according to this plan.
    fn manifest(self, taken: Taken, opts: &BackupOptions) -> BackupManifest {
        BackupManifest {
            label: taken.label,
            kind: opts.kind,
            parent: self.parent.as_ref().map(|p| p.label.clone()),
            pg_major: self.identity.pg_major,
            system_id: self.identity.system_id,
            wal_seg_size: self.identity.wal_seg_size,
            timeline: taken.timeline,
            start_lsn: taken.start_lsn.to_string(),
            stop_lsn: taken.stop.stop_lsn.to_string(),
            start_time: taken.start_time,
            stop_time: taken.stop_time,
            backup_label: taken.stop.backup_label,
            tablespace_map: taken.stop.tablespace_map.filter(|m| !m.trim().is_empty()),
            tablespaces: self.tablespaces,
            data_checksums: self.data_checksums,
            dirs: taken.dirs,
            files: taken.files,
            pitr_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The report of a published backup.
fn report(
    manifest: &BackupManifest,
    method: BackupMethod,
    copied: usize,
    started: Instant,
) -> BackupReport {
    BackupReport {
        label: manifest.label.clone(),
        kind: manifest.kind.to_string(),
        method,
        parent: manifest.parent.clone(),
        timeline: manifest.timeline,
        start_lsn: manifest.start_lsn.clone(),
        stop_lsn: manifest.stop_lsn.clone(),
        files: manifest.files.len(),
        files_copied: copied,
        size: manifest.total_size(),
        stored_size: manifest
            .files
            .iter()
            .filter(|f| f.stored_in.is_none())
            .map(|f| f.stored_size)
            .sum(),
        seconds: started.elapsed().as_secs_f64(),
        checksum_failures: manifest
            .files
            .iter()
            .filter(|f| !f.checksum_failures.is_empty())
            .map(|f| (f.path.clone(), f.checksum_failures.clone()))
            .collect(),
        files_block_level: manifest
            .files
            .iter()
            .filter(|f| {
                f.blocks
                    .as_ref()
                    .is_some_and(|b| b.deltas.last().is_some_and(|d| d.label == manifest.label))
            })
            .count(),
        whole_files: None,
        changed_pages_from: None,
    }
}

type CopyPhase = (Vec<ManifestFile>, Vec<pitr_repo::ManifestDir>, usize);

async fn copy_phase(
    cluster: &ClusterRepo,
    label: &str,
    pgdata: &Path,
    parent: Option<&BackupManifest>,
    opts: &BackupOptions,
    (verifier, blocks): (
        Option<Arc<dyn PageVerifier>>,
        Option<Arc<blocks::BlockIncr>>,
    ),
    progress: Arc<Progress>,
) -> Result<CopyPhase, BackupError> {
    let root = pgdata.to_path_buf();
    let listing = tokio::task::spawn_blocking(move || walk::list(&root))
        .await
        .map_err(|e| BackupError::Internal(e.to_string()))?
        .map_err(|source| BackupError::List {
            path: pgdata.to_path_buf(),
            source,
        })?;
    // An incremental backup reuses a parent's copy of files unchanged since before the parent
    // started (same size, modified strictly earlier than the parent's start second).
    let mut reused = Vec::new();
    let mut to_copy = Vec::new();
    // By path: one lookup per file (a linear search is quadratic over a million files).
    let parent_files: std::collections::HashMap<&str, &ManifestFile> = parent
        .map(|p| p.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    for f in listing.files {
        let prev = parent.and_then(|p| {
            let cutoff = p.start_time.as_second() - 1;
            parent_files
                .get(f.rel.as_str())
                .filter(|pf| pf.size == f.size && pf.mtime == f.mtime && f.mtime < cutoff)
                .map(|pf| {
                    let mut e = (*pf).clone();
                    if pf.blocks.is_none() {
                        // A block file's layers already name the backups holding them.
                        e.stored_in = Some(pf.stored_in.clone().unwrap_or_else(|| p.label.clone()));
                    }
                    e.stored_size = if pf.blocks.is_some() {
                        0
                    } else {
                        e.stored_size
                    };
                    e
                })
        });
        match prev {
            Some(e) => reused.push(e),
            None => to_copy.push(f),
        }
    }
    let copied_files = copy::copy_files(
        cluster,
        label,
        to_copy,
        opts.jobs,
        opts.compression,
        verifier,
        blocks,
        progress,
    )
    .await?;
    let copied = copied_files.len();
    let mut files = copied_files;
    files.extend(reused);
    Ok((files, listing.dirs, copied))
}

/// Waits until every segment from `start` to the one holding the last byte before `stop` is in
/// the repository.
async fn wait_for_wal(
    cluster: &ClusterRepo,
    label: &str,
    timeline: u32,
    start: Lsn,
    stop: Lsn,
    seg_size: u64,
    opts: &BackupOptions,
) -> Result<(), BackupError> {
    let Ok(size) = WalSegSize::new(seg_size) else {
        return Ok(());
    };
    let tli = pitr_pg::TimelineId(timeline);
    let first = size.segno_of(start);
    let last = size.segno_of(Lsn(stop.0.saturating_sub(1)));
    let deadline = Instant::now() + opts.archive_timeout;
    let mut next = first;
    let storage = cluster.repo().storage().clone();
    loop {
        while next <= last {
            let key = cluster.wal_key(&WalFileName::segment(tli, next, size));
            if storage.head(&key).await.map_err(RepoError::from)?.is_none() {
                break;
            }
            next = next.next();
        }
        if next > last {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BackupError::WalTimeout {
                label: label.to_string(),
                waited: opts.archive_timeout,
                missing: WalFileName::segment(tli, next, size).to_string(),
                suggestion: opts.archive_command_hint.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_by_time_and_show_the_kind() {
        let t: Timestamp = "2026-11-21T19:30:05Z".parse().unwrap();
        assert_eq!(new_label(t, BackupKind::Full), "20261121T193005F");
        assert_eq!(new_label(t, BackupKind::Incr), "20261121T193005I");
    }
}
