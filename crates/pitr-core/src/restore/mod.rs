//! `pitr restore`: choose the base backup that reaches the recovery target, restore it into a
//! data directory (verified, in parallel, optionally reusing matching files), and configure
//! PostgreSQL's recovery.
//!
//! Two steps, as in every pitr command: [`plan`] reads the repository and the target
//! directories and decides everything without changing anything (`--dry-run` prints it); a
//! target the repository cannot reach, or a directory that may not be written, is refused here,
//! before anything is touched. [`execute`] carries the plan out and returns a
//! [`RestoreReport`]. [`start`] optionally starts the restored server and waits for recovery to
//! end.

pub mod choose;
pub mod conf;
pub mod files;
pub mod locate;
pub mod os;
pub mod start;
pub mod target;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use pitr_pg::history::HistoryError;
use pitr_pg::{PgMajor, TimelineHistory, WalFileName, WalSegSize};
use pitr_repo::{BackupKind, BackupManifest, ClusterRepo, ManifestFile, RepoError};
use pitr_storage::Storage;
use serde::{Serialize, Serializer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use choose::{
    choose_backup, BackupPoint, Choice, LocatedTarget, PathStep, Rejection, Unreachable, WalIndex,
    Window,
};
pub use files::DirState;
pub use os::OsUser;
pub use target::{RecoveryTarget, TargetAction, TargetError, TargetSpec, TimelineGoal};

use files::{FileAction, Layout, WriteError};

pub(crate) fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn ser_opt_display<T: fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory to restore into.
    pub pgdata: PathBuf,
    /// Recovery target, timeline and action.
    pub spec: TargetSpec,
    /// Restore this backup instead of choosing one (still validated against the target).
    pub backup: Option<String>,
    /// Reuse files in `pgdata` whose size and checksum match; remove files not in the backup.
    pub delta: bool,
    /// Delete the contents of `pgdata` (and of tablespace directories) first.
    pub force: bool,
    /// Write `standby.signal` instead of `recovery.signal`.
    pub standby: bool,
    /// Tablespace OID → directory to restore it to (default: its original location).
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// OS user to own the restored files when running as root (default: owner of `pgdata`, or
    /// of its parent).
    pub owner: Option<String>,
    /// Files restored in parallel.
    pub jobs: usize,
    /// The `restore_command` to configure (see [`conf::restore_command`]).
    pub restore_command: String,
}

/// Receives progress while files are restored (e.g. a progress bar).
pub trait Progress: Send + Sync {
    /// Called once with the totals.
    fn start(&self, files: u64, bytes: u64);
    /// Called after each file with its size.
    fn advance(&self, bytes: u64);
    /// Called when all files are done.
    fn finish(&self);
}

/// How an error should be treated by the CLI (exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The options are wrong.
    Usage,
    /// Refused: unreachable target, non-empty directory, running server.
    Refused,
    /// Damaged or missing data in the repository.
    Corrupt,
    /// Anything else (I/O, storage).
    Failed,
}

/// A restore that cannot be planned or carried out.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Bad target options.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Other bad options.
    #[error("{0}")]
    Usage(String),
    /// No backup at all.
    #[error("cluster {cluster:?} in repository {repo} has no base backup to restore\nhint: take one with `pitr backup`; WAL alone cannot be restored")]
    NoBackups {
        /// Cluster.
        cluster: String,
        /// Repository.
        repo: String,
    },
    /// `--backup` names no backup.
    #[error("backup {label:?} does not exist in cluster {cluster:?}\nhint: available backups: {available}")]
    BackupNotFound {
        /// The label asked for.
        label: String,
        /// Cluster.
        cluster: String,
        /// Labels that exist.
        available: String,
    },
    /// The repository cannot reach the target.
    #[error("refusing to restore: {0}\nhint: `pitr info` shows the backups and archived WAL; choose a target inside the reachable window")]
    Unreachable(Box<Unreachable>),
    /// No archived transaction ends after the target time: PostgreSQL would never stop.
    #[error("refusing to restore: no transaction in the archived WAL ends after {target}, so PostgreSQL would replay everything and fail with \"recovery ended before configured recovery target was reached\"; reachable: from {from} (backup {label} finished) to {last}\nhint: restore without a target to recover everything archived, or choose an earlier time")]
    TimeNotReached {
        /// The target, described.
        target: String,
        /// The backup chosen.
        label: String,
        /// When it finished.
        from: String,
        /// The last archived transaction, described.
        last: String,
    },
    /// The directory is not empty and neither `--delta` nor `--force` was given.
    #[error("refusing to restore into {path:?}: it is not empty ({entries} entries: {sample})\nhint: pass --delta to reuse matching files and remove the others, or --force to delete its contents first")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// How many entries.
        entries: usize,
        /// Some of them.
        sample: String,
    },
    /// A server runs on the directory.
    #[error("refusing to restore into {path:?}: a PostgreSQL server (pid {pid}) is running on it\nhint: stop it first, e.g. pg_ctl -D {path:?} stop")]
    ServerRunning {
        /// The data directory.
        path: PathBuf,
        /// Its postmaster's pid.
        pid: u32,
    },
    /// A tablespace would be restored into a directory a running server uses.
    #[error("refusing to restore tablespace {oid} into {path:?}: it is in use by a running PostgreSQL server (pid {pid}, data directory {pgdata:?})\nhint: stop that server first, or restore the tablespace elsewhere with --tablespace-map {oid}=DIR")]
    TablespaceInUse {
        /// Tablespace OID.
        oid: u32,
        /// The directory.
        path: PathBuf,
        /// The server's postmaster pid.
        pid: u32,
        /// The server's data directory.
        pgdata: PathBuf,
    },
    /// The repository is inside the data directory or the other way round.
    #[error("refusing to restore into {path:?}: it overlaps the repository {repo}\nhint: restore into a directory outside the repository")]
    OverlapsRepo {
        /// The directory.
        path: PathBuf,
        /// The repository.
        repo: String,
    },
    /// Tablespace options that cannot work.
    #[error("{0}")]
    Tablespace(String),
    /// The manifest cannot be used.
    #[error("backup {label}: the manifest cannot be used: {reason}\nhint: run `pitr verify`; restore another backup with --backup")]
    BadManifest {
        /// Label.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// An object the manifest lists is missing.
    #[error("{key} is missing from repository {repo} (needed for {path}, backup {label})\nhint: run `pitr verify`; restore another backup with --backup")]
    MissingObject {
        /// Repository.
        repo: String,
        /// Object key.
        key: String,
        /// The file it holds.
        path: String,
        /// Backup label.
        label: String,
    },
    /// Objects a backup needs are missing or have another size, found before DIR is touched.
    #[error("backup {label} cannot be restored: {count} of the {needed} objects it needs from backup {holder} are missing or have the wrong size in repository {repo} (e.g. {key}, for {path}){gone}\nhint: restore another backup with --backup LABEL (`pitr info` lists them); `pitr verify` checks every backup")]
    MissingObjects {
        /// The backup being restored.
        label: String,
        /// The backup that stores the objects (itself, or the parent of an incremental).
        holder: String,
        /// Repository.
        repo: String,
        /// How many are missing.
        count: usize,
        /// How many it needs from `holder`.
        needed: usize,
        /// One missing object.
        key: String,
        /// The file it holds.
        path: String,
        /// Why, when known.
        gone: String,
    },
    /// An object is intact but is not the file the manifest describes.
    #[error("{key} in repository {repo} is not the file backup {label} recorded for {path} (manifest: {expected_len} bytes, blake3 {expected}; object: {found_len} bytes, blake3 {found})\nhint: run `pitr verify`; restore another backup with --backup")]
    ObjectMismatch {
        /// Repository.
        repo: String,
        /// Object key.
        key: String,
        /// File path.
        path: String,
        /// Backup label.
        label: String,
        /// Size in the manifest.
        expected_len: u64,
        /// Checksum in the manifest.
        expected: String,
        /// Size of the object.
        found_len: u64,
        /// Checksum of the object.
        found: String,
    },
    /// A timeline history file is damaged.
    #[error("timeline history {name} in repository {repo} cannot be parsed: {source}\nhint: run `pitr verify`")]
    BadHistory {
        /// File name.
        name: String,
        /// Repository.
        repo: String,
        /// Parse error.
        source: HistoryError,
    },
    /// The repository failed (storage, corruption).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The local file system failed.
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// `--owner` names no user.
    #[error(
        "unknown OS user {0:?}\nhint: --owner takes a user name or uid, e.g. --owner postgres"
    )]
    UnknownUser(String),
    /// Running as root, the files would belong to root.
    #[error("the restored files would belong to root ({reason}), and PostgreSQL refuses to run as root\nhint: pass --owner postgres (the OS user that runs the server)")]
    OwnerIsRoot {
        /// Where the owner came from.
        reason: String,
    },
    /// `--owner` without root.
    #[error("cannot give the restored files to {user:?}: only root can change ownership\nhint: run pitr restore as {user:?}, or as root")]
    NotRoot {
        /// The user asked for.
        user: String,
    },
    /// A task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RestoreError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            RestoreError::Target(_)
            | RestoreError::Usage(_)
            | RestoreError::Tablespace(_)
            | RestoreError::UnknownUser(_)
            | RestoreError::OwnerIsRoot { .. }
            | RestoreError::NotRoot { .. }
            | RestoreError::BackupNotFound { .. } => ErrorClass::Usage,
            RestoreError::Unreachable(_)
            | RestoreError::TimeNotReached { .. }
            | RestoreError::NotEmpty { .. }
            | RestoreError::ServerRunning { .. }
            | RestoreError::TablespaceInUse { .. }
            | RestoreError::OverlapsRepo { .. }
            | RestoreError::NoBackups { .. } => ErrorClass::Refused,
            RestoreError::BadManifest { .. }
            | RestoreError::MissingObject { .. }
            | RestoreError::MissingObjects { .. }
            | RestoreError::ObjectMismatch { .. }
            | RestoreError::BadHistory { .. } => ErrorClass::Corrupt,
            RestoreError::Repo(RepoError::Corrupt { .. } | RepoError::BadMeta { .. }) => {
                ErrorClass::Corrupt
            }
            _ => ErrorClass::Failed,
        }
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RestoreError + 'a {
        move |source| RestoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a directory will go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirAction {
    /// Created.
    Create,
    /// Exists and is empty: filled.
    Fill,
    /// Matching files reused, others fetched, extra files removed.
    Delta,
    /// Contents deleted, then filled.
    Wipe,
}

/// The backup being restored, in short.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// Label.
    pub label: String,
    /// `full` or `incr`.
    pub kind: BackupKind,
    /// Parent of an incremental backup.
    pub parent: Option<String>,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// Timeline.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Consistency LSN.
    pub stop_lsn: String,
    /// Wall-clock start.
    pub start_time: Timestamp,
    /// Wall-clock stop.
    pub stop_time: Timestamp,
    /// Files.
    pub files: usize,
    /// Original bytes.
    pub bytes: u64,
    /// Bytes in the repository.
    pub stored_bytes: u64,
}

/// One tablespace in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct TablespacePlan {
    /// OID.
    pub oid: u32,
    /// Name.
    pub name: String,
    /// Location at backup time.
    pub original: String,
    /// Where it is restored.
    pub restore_to: PathBuf,
    /// What is there now.
    pub state: DirState,
    /// What will happen to it.
    pub action: DirAction,
}

/// One recovery setting written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Name.
    pub name: String,
    /// Unquoted value.
    pub value: String,
}

/// Everything a restore will do, decided before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// Repository.
    pub repository: String,
    /// Cluster name.
    pub cluster: String,
    /// Data directory.
    pub pgdata: PathBuf,
    /// What is there now.
    pub pgdata_state: DirState,
    /// What will happen to it.
    pub pgdata_action: DirAction,
    /// The backup restored.
    pub backup: BackupSummary,
    /// Why it was chosen, the timeline path and the WAL range recovery needs.
    pub choice: Choice,
    /// The target, described.
    pub target: String,
    /// Where a name/xid target is, found by decoding the archived WAL after the backup.
    pub located: Option<LocatedTarget>,
    /// `recovery.signal` or `standby.signal`.
    pub signal_file: String,
    /// Settings written to `postgresql.auto.conf`.
    pub settings: Vec<Setting>,
    /// Whether `backup_label` is written (empty for a cold copy).
    pub writes_backup_label: bool,
    /// Whether `tablespace_map` is written.
    pub writes_tablespace_map: bool,
    /// Tablespaces.
    pub tablespaces: Vec<TablespacePlan>,
    /// Owner given to the files (when running as root).
    pub owner: Option<OsUser>,
    /// Parallel file restores.
    pub jobs: usize,
    /// Options that shape the execution.
    pub delta: bool,
    /// Contents deleted first.
    pub force: bool,
    #[serde(skip)]
    manifest: BackupManifest,
}

impl RestorePlan {
    /// The manifest of the backup being restored.
    pub fn manifest(&self) -> &BackupManifest {
        &self.manifest
    }

    fn layout(&self) -> Layout {
        Layout {
            pgdata: self.pgdata.clone(),
            tablespaces: self
                .tablespaces
                .iter()
                .map(|t| (t.oid, t.restore_to.clone()))
                .collect(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The plan carried out.
    pub plan: RestorePlan,
    /// Files written from the repository (or created empty).
    pub files_restored: u64,
    /// Files already present with the right content (`--delta`).
    pub files_reused: u64,
    /// Entries removed (`--force` contents, or `--delta` extras).
    pub entries_removed: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes reused.
    pub bytes_reused: u64,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
    /// Wall-clock duration.
    pub seconds: f64,
    /// Earlier configuration lines commented out, as `file: line`.
    pub commented_out: Vec<String>,
    /// Recovery files written.
    pub written: Vec<String>,
}

fn dir_action(state: &DirState, opts: &RestoreOptions) -> DirAction {
    match state {
        DirState::Missing => DirAction::Create,
        DirState::Empty => DirAction::Fill,
        DirState::NotEmpty { .. } if opts.delta => DirAction::Delta,
        DirState::NotEmpty { .. } => DirAction::Wipe,
    }
}

fn check_dir(path: &Path, opts: &RestoreOptions) -> Result<DirState, RestoreError> {
    let state = files::inspect_dir(path).map_err(RestoreError::io("inspect", path))?;
    if let DirState::NotEmpty { entries, sample } = &state {
        if !opts.delta && !opts.force {
            return Err(RestoreError::NotEmpty {
                path: path.to_path_buf(),
                entries: *entries,
                sample: sample.join(", "),
            });
        }
    }
    Ok(state)
}

/// An absolute, lexically clean path (symlinks of existing ancestors resolved).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // Resolve the longest existing prefix so that /tmp/x and /private/tmp/x compare equal.
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for n in rest.iter().rev() {
        out.push(n);
    }
    out
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn validate_manifest(m: &BackupManifest) -> Result<(), RestoreError> {
    let bad = |reason: String| RestoreError::BadManifest {
        label: m.label.clone(),
        reason,
    };
    PgMajor::new(m.pg_major).map_err(|e| bad(e.to_string()))?;
    if m.start_lsn.parse::<pitr_pg::Lsn>().is_err() || m.stop_lsn.parse::<pitr_pg::Lsn>().is_err() {
        return Err(bad(format!(
            "start/stop LSN {:?}/{:?} are not LSNs",
            m.start_lsn, m.stop_lsn
        )));
    }
    for d in &m.dirs {
        if !files::is_safe_rel(&d.path) {
            return Err(bad(format!(
                "directory path {:?} is not a safe relative path",
                d.path
            )));
        }
    }
    let mut seen = BTreeSet::new();
    for f in &m.files {
        if !files::is_safe_rel(&f.path) {
            return Err(bad(format!(
                "file path {:?} is not a safe relative path",
                f.path
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(bad(format!("file {:?} is listed twice", f.path)));
        }
        if f.size > 0 && (f.blake3.is_empty() || f.stored_size == 0) {
            return Err(bad(format!(
                "file {:?} has {} bytes but no stored object or checksum",
                f.path, f.size
            )));
        }
        if let Some(src) = &f.stored_in {
            if src.is_empty() || src.contains('/') {
                return Err(bad(format!("file {:?} is stored in {src:?}", f.path)));
            }
        }
    }
    for t in &m.tablespaces {
        if !Path::new(&t.location).is_absolute() {
            return Err(bad(format!(
                "tablespace {} location {:?} is not absolute",
                t.oid, t.location
            )));
        }
    }
    Ok(())
}

/// Checks, before anything is written, that every object the backup's files need is in the
/// repository with the size the manifest records (one listing per backup that holds them: the
/// backup itself and, for an incremental, the backups it reuses files from).
async fn check_objects(
    cluster: &ClusterRepo,
    m: &BackupManifest,
    labels: &BTreeSet<String>,
) -> Result<(), RestoreError> {
    let mut by_holder: BTreeMap<&str, Vec<&ManifestFile>> = BTreeMap::new();
    for f in m.files.iter().filter(|f| f.size > 0) {
        by_holder
            .entry(f.stored_in.as_deref().unwrap_or(&m.label))
            .or_default()
            .push(f);
    }
    let storage = cluster.repo().storage();
    for (holder, files) in by_holder {
        let present: HashMap<String, u64> = storage
            .list(&cluster.backup_file_key(holder, ""))
            .await
            .map_err(RepoError::Storage)?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let missing: Vec<(&ManifestFile, String)> = files
            .iter()
            .map(|f| (*f, cluster.backup_file_key(holder, &f.path)))
            .filter(|(f, key)| present.get(key) != Some(&f.stored_size))
            .collect();
        if let Some((f, key)) = missing.first() {
            return Err(RestoreError::MissingObjects {
                label: m.label.clone(),
                holder: holder.to_string(),
                repo: cluster.repo().location(),
                count: missing.len(),
                needed: files.len(),
                key: key.clone(),
                path: f.path.clone(),
                gone: if labels.contains(holder) {
                    String::new()
                } else {
                    format!(": backup {holder} is gone from the repository")
                },
            });
        }
    }
    Ok(())
}

/// The cluster's recovery window (see [`choose::recovery_window`]) for `manifests`, its
/// complete backups; `None` when it has none or no identity.
pub async fn recovery_window(
    cluster: &ClusterRepo,
    manifests: &[BackupManifest],
) -> Result<Option<choose::Window>, RestoreError> {
    let Some(id) = cluster.identity().await? else {
        return Ok(None);
    };
    let Ok(seg_size) = WalSegSize::new(id.wal_seg_size) else {
        return Ok(None);
    };
    if manifests.is_empty() {
        return Ok(None);
    }
    let index = wal_index(cluster, seg_size).await?;
    let points: Vec<BackupPoint> = manifests
        .iter()
        .filter(|m| m.wal_seg_size == id.wal_seg_size)
        .map(BackupPoint::of)
        .collect();
    Ok(Some(choose::recovery_window(&points, &index)))
}

async fn wal_index(cluster: &ClusterRepo, seg_size: WalSegSize) -> Result<WalIndex, RestoreError> {
    let mut index = WalIndex::new(seg_size);
    for e in cluster.list_wal().await? {
        if let WalFileName::History { tli } = e.name {
            let Some(bytes) = cluster.get_wal(&e.name).await? else {
                continue;
            };
            let h =
                TimelineHistory::parse(tli, &bytes).map_err(|source| RestoreError::BadHistory {
                    name: e.name.to_string(),
                    repo: cluster.repo().location(),
                    source,
                })?;
            index.add_history(h);
        } else {
            index.add_file(&e.name);
        }
    }
    Ok(index)
}

/// Finds a name/xid target after each backup, newest first (the order choice tries them),
/// until one is found after a backup became consistent: that backup will be chosen, and
/// older ones need no search.
async fn locate_per_backup(
    cluster: &ClusterRepo,
    points: &[BackupPoint],
    index: &WalIndex,
    opts: &RestoreOptions,
) -> Result<BTreeMap<String, LocatedTarget>, RestoreError> {
    let mut out = BTreeMap::new();
    for b in choose::newest_first(points) {
        if opts.backup.as_ref().is_some_and(|f| *f != b.label) {
            continue;
        }
        let Ok(r) = choose::reach_from(b, &opts.spec, index) else {
            continue;
        };
        if r.end < b.stop {
            continue;
        }
        let found =
            locate::first_on_path(cluster, index, &r.path, b.start, &opts.spec.target).await?;
        if let Some(loc) = found {
            out.insert(b.label.clone(), loc);
            if loc.lsn >= b.stop {
                break;
            }
        }
    }
    Ok(out)
}

/// Refuses a time target that no archived transaction ends after: PostgreSQL stops only before
/// a commit or abort later than the target (at or later, with `--target-exclusive`).
async fn check_time_reached(
    cluster: &ClusterRepo,
    index: &WalIndex,
    points: &[BackupPoint],
    choice: &Choice,
    t: &target::TargetTime,
    exclusive: bool,
) -> Result<(), RestoreError> {
    let Some(b) = points.iter().find(|p| p.label == choice.label) else {
        return Ok(());
    };
    let last = locate::last_transaction_on_path(cluster, index, &choice.path, b.start).await?;
    let last_time = last.and_then(|l| l.time);
    let reached = last_time.is_some_and(|lt| if exclusive { lt >= t.at } else { lt > t.at });
    if reached {
        return Ok(());
    }
    Err(RestoreError::TimeNotReached {
        target: RecoveryTarget::Time(t.clone()).to_string(),
        label: b.label.clone(),
        from: choose::show_time(b.stop_time),
        last: match (last, last_time) {
            (Some(l), Some(lt)) => format!(
                "{} (the last archived transaction, at {} on timeline {})",
                choose::show_time(lt),
                l.lsn,
                l.tli
            ),
            _ => format!(
                "its consistency point {} (no transaction was archived after it)",
                b.stop
            ),
        },
    })
}

/// Decides the whole restore without changing anything: validates the options, chooses the
/// backup (refusing an unreachable target with the reachable window), and checks the target
/// directories and the owner.
pub async fn plan(
    cluster: &ClusterRepo,
    opts: &RestoreOptions,
) -> Result<RestorePlan, RestoreError> {
    opts.spec.validate()?;
    if opts.jobs == 0 {
        return Err(RestoreError::Usage("--jobs must be at least 1".to_string()));
    }
    if opts.delta && opts.force {
        return Err(RestoreError::Usage(
            "--delta and --force exclude each other: --delta keeps matching files, --force deletes everything first".to_string(),
        ));
    }
    let pgdata = absolute(&opts.pgdata);
    let repo_location = cluster.repo().location();
    let manifests = cluster.backups().await?;
    if manifests.is_empty() {
        return Err(RestoreError::NoBackups {
            cluster: cluster.name().to_string(),
            repo: repo_location,
        });
    }
    if let Some(label) = &opts.backup {
        if !manifests.iter().any(|m| &m.label == label) {
            return Err(RestoreError::BackupNotFound {
                label: label.clone(),
                cluster: cluster.name().to_string(),
                available: manifests
                    .iter()
                    .map(|m| m.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let seg_bytes = match cluster.identity().await? {
        Some(id) => id.wal_seg_size,
        None => manifests.last().map(|m| m.wal_seg_size).unwrap_or_default(),
    };
    let seg_size = WalSegSize::new(seg_bytes).map_err(|e| RestoreError::BadManifest {
        label: manifests
            .last()
            .map(|m| m.label.clone())
            .unwrap_or_default(),
        reason: e.to_string(),
    })?;
    let index = wal_index(cluster, seg_size).await?;
    let manifests_labels: BTreeSet<String> = manifests.iter().map(|m| m.label.clone()).collect();
    let points: Vec<BackupPoint> = manifests
        .iter()
        .filter(|m| m.wal_seg_size == seg_bytes)
        .filter(|m| {
            // An incremental whose parent is gone cannot be restored: choose another, unless it
            // was named (then the object check below says what is missing).
            let gone = m
                .files
                .iter()
                .filter_map(|f| f.stored_in.as_deref())
                .find(|holder| !manifests_labels.contains(*holder));
            if let Some(holder) = gone {
                if opts.backup.as_deref() != Some(m.label.as_str()) {
                    tracing::warn!(
                        "backup {} is not considered: backup {holder}, which holds some of its files, is gone",
                        m.label
                    );
                    return false;
                }
            }
            true
        })
        .map(BackupPoint::of)
        .collect();
    let located = if opts.spec.target.needs_locating() {
        Some(locate_per_backup(cluster, &points, &index, opts).await?)
    } else {
        None
    };
    let choice = choose_backup(
        &points,
        &index,
        &opts.spec,
        located.as_ref(),
        opts.backup.as_deref(),
    )
    .map_err(|u| RestoreError::Unreachable(Box::new(u)))?;
    let located = located.and_then(|m| m.get(&choice.label).copied());
    if let RecoveryTarget::Time(t) = &opts.spec.target {
        check_time_reached(cluster, &index, &points, &choice, t, opts.spec.exclusive).await?;
    }
    let Some(manifest) = manifests.into_iter().find(|m| m.label == choice.label) else {
        return Err(RestoreError::Internal(format!(
            "chosen backup {} vanished",
            choice.label
        )));
    };
    validate_manifest(&manifest)?;
    check_objects(cluster, &manifest, &manifests_labels).await?;

    // Tablespaces: original locations unless remapped.
    let mut remap: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for (oid, dir) in &opts.tablespace_map {
        if !manifest.tablespaces.iter().any(|t| t.oid == *oid) {
            let known = manifest
                .tablespaces
                .iter()
                .map(|t| format!("{} ({})", t.oid, t.name))
                .collect::<Vec<_>>();
            return Err(RestoreError::Tablespace(format!(
                "--tablespace-map {oid}={}: backup {} has no tablespace with OID {oid}\nhint: its tablespaces are: {}",
                dir.display(),
                manifest.label,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        remap.insert(*oid, absolute(dir));
    }
    if let Some(pid) = files::running_postmaster(&pgdata) {
        return Err(RestoreError::ServerRunning { path: pgdata, pid });
    }
    let repo_path = Path::new(&repo_location);
    if repo_path.is_absolute() || repo_path.exists() {
        let repo_abs = absolute(repo_path);
        if overlaps(&pgdata, &repo_abs) {
            return Err(RestoreError::OverlapsRepo {
                path: pgdata,
                repo: repo_location,
            });
        }
    }
    let pgdata_state = check_dir(&pgdata, opts)?;
    let mut tablespaces = Vec::new();
    let mut claimed: Vec<PathBuf> = vec![pgdata.clone()];
    for t in &manifest.tablespaces {
        let restore_to = remap
            .get(&t.oid)
            .cloned()
            .unwrap_or_else(|| absolute(Path::new(&t.location)));
        if let Some(other) = claimed.iter().find(|c| overlaps(c, &restore_to)) {
            return Err(RestoreError::Tablespace(format!(
                "tablespace {} ({}) would be restored to {}, which overlaps {}\nhint: give each tablespace its own directory outside the data directory with --tablespace-map {}=DIR",
                t.oid,
                t.name,
                restore_to.display(),
                other.display(),
                t.oid
            )));
        }
        if overlaps(&restore_to, &absolute(repo_path)) {
            return Err(RestoreError::OverlapsRepo {
                path: restore_to,
                repo: repo_location,
            });
        }
        claimed.push(restore_to.clone());
        check_tablespace_free(t.oid, &restore_to)?;
        let state = check_dir(&restore_to, opts)?;
        tablespaces.push(TablespacePlan {
            oid: t.oid,
            name: t.name.clone(),
            original: t.location.clone(),
            action: dir_action(&state, opts),
            restore_to,
            state,
        });
    }
    let owner = resolve_owner(&pgdata, opts.owner.as_deref())?;
    let mut settings = vec![Setting {
        name: "restore_command".into(),
        value: opts.restore_command.clone(),
    }];
    settings.extend(opts.spec.settings().into_iter().map(|(n, v)| Setting {
        name: n.to_string(),
        value: v,
    }));
    let writes_backup_label = !manifest.backup_label.trim().is_empty();
    let writes_tablespace_map = writes_backup_label
        && (manifest.tablespace_map.is_some() || !manifest.tablespaces.is_empty());
    Ok(RestorePlan {
        repository: repo_location,
        cluster: cluster.name().to_string(),
        pgdata_action: dir_action(&pgdata_state, opts),
        pgdata,
        pgdata_state,
        backup: BackupSummary {
            label: manifest.label.clone(),
            kind: manifest.kind,
            parent: manifest.parent.clone(),
            pg_major: manifest.pg_major,
            timeline: manifest.timeline,
            start_lsn: manifest.start_lsn.clone(),
            stop_lsn: manifest.stop_lsn.clone(),
            start_time: manifest.start_time,
            stop_time: manifest.stop_time,
            files: manifest.files.len(),
            bytes: manifest.total_size(),
            stored_bytes: manifest.stored_size(),
        },
        choice,
        target: opts.spec.target.to_string(),
        located,
        signal_file: if opts.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        }
        .to_string(),
        settings,
        writes_backup_label,
        writes_tablespace_map,
        tablespaces,
        owner,
        jobs: opts.jobs,
        delta: opts.delta,
        force: opts.force,
        manifest,
    })
}

/// Refuses a tablespace directory that a running server uses (`--force` would empty it,
/// `--delta` rewrite it under the server).
fn check_tablespace_free(oid: u32, dir: &Path) -> Result<(), RestoreError> {
    match files::server_using_tablespace(dir) {
        Some((pid, pgdata)) => Err(RestoreError::TablespaceInUse {
            oid,
            path: dir.to_path_buf(),
            pid,
            pgdata,
        }),
        None => Ok(()),
    }
}

fn resolve_owner(pgdata: &Path, asked: Option<&str>) -> Result<Option<OsUser>, RestoreError> {
    let asked_user = match asked {
        Some(name) => {
            Some(os::lookup_user(name).ok_or_else(|| RestoreError::UnknownUser(name.into()))?)
        }
        None => None,
    };
    if !os::is_root() {
        if let Some(u) = asked_user {
            if Some(u.uid) != os::effective_uid() {
                return Err(RestoreError::NotRoot { user: u.name });
            }
        }
        return Ok(None);
    }
    let (user, reason) = match asked_user {
        Some(u) => (u, "--owner".to_string()),
        None => {
            let u = os::owner_of_nearest(pgdata).ok_or_else(|| RestoreError::OwnerIsRoot {
                reason: format!("no existing directory above {}", pgdata.display()),
            })?;
            let why = if pgdata.exists() {
                format!("{} belongs to {}", pgdata.display(), u.name)
            } else {
                format!(
                    "{} does not exist and its parent belongs to {}",
                    pgdata.display(),
                    u.name
                )
            };
            (u, why)
        }
    };
    if user.uid == 0 {
        return Err(RestoreError::OwnerIsRoot { reason });
    }
    Ok(Some(user))
}

enum Outcome {
    Restored { bytes: u64, fetched: u64 },
    Reused { bytes: u64 },
}

struct FileJob {
    storage: Arc<dyn Storage>,
    repo: String,
    key: String,
    label: String,
    dest: PathBuf,
    file: ManifestFile,
    delta: bool,
    /// Threads a large object may be decoded on.
    threads: usize,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?
}

async fn fetch(job: &FileJob) -> Result<bytes::Bytes, RestoreError> {
    let mut attempt = 0;
    loop {
        match job.storage.get(&job.key).await {
            Ok(Some(b)) => return Ok(b),
            Ok(None) => {
                return Err(RestoreError::MissingObject {
                    repo: job.repo.clone(),
                    key: job.key.clone(),
                    path: job.file.path.clone(),
                    label: job.label.clone(),
                })
            }
            Err(e) if e.is_transient() && attempt < crate::archive::GET_RETRY_DELAYS.len() => {
                tracing::warn!("reading {} failed ({e}); retrying", job.key);
                tokio::time::sleep(crate::archive::GET_RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            Err(e) => return Err(RepoError::Storage(e).into()),
        }
    }
}

async fn restore_one(job: FileJob) -> Result<Outcome, RestoreError> {
    let (dest, file, delta) = (job.dest.clone(), job.file.clone(), job.delta);
    let action = blocking(move || {
        let ex = files::existing(&dest).map_err(RestoreError::io("inspect", &dest))?;
        files::decide(&file, ex, delta, || files::hash_file(&dest))
            .map_err(RestoreError::io("read", &dest))
    })
    .await?;
    let obj = match action {
        FileAction::Keep => {
            let (dest, file) = (job.dest.clone(), job.file.clone());
            return blocking(move || {
                let f = std::fs::File::open(&dest).map_err(RestoreError::io("open", &dest))?;
                files::apply_attrs(&f, &file)
                    .map_err(RestoreError::io("set mode and mtime of", &dest))?;
                Ok(Outcome::Reused { bytes: file.size })
            })
            .await;
        }
        FileAction::CreateEmpty => None,
        FileAction::Fetch => Some(fetch(&job).await?),
    };
    let fetched = obj.as_ref().map(|o| o.len() as u64).unwrap_or(0);
    blocking(move || {
        let n =
            files::write_file(&job.dest, obj.as_deref(), &job.file, job.threads).map_err(|e| {
                match e {
                    WriteError::Frame(source) => RestoreError::Repo(RepoError::Corrupt {
                        repo: job.repo.clone(),
                        key: job.key.clone(),
                        source,
                    }),
                    WriteError::Mismatch { expected, found } => RestoreError::ObjectMismatch {
                        repo: job.repo.clone(),
                        key: job.key.clone(),
                        path: job.file.path.clone(),
                        label: job.label.clone(),
                        expected_len: expected.0,
                        expected: expected.1,
                        found_len: found.0,
                        found: found.1,
                    },
                    WriteError::Io(op, source) => RestoreError::Io {
                        op,
                        path: job.dest.clone(),
                        source,
                    },
                }
            })?;
        Ok(Outcome::Restored { bytes: n, fetched })
    })
    .await
}

/// Carries out a plan: prepares the directories, restores every file verified (in parallel),
/// writes `backup_label`, `tablespace_map`, the signal file and the recovery settings, and
/// gives everything to the owner.
pub async fn execute(
    cluster: &ClusterRepo,
    plan: RestorePlan,
    progress: Option<Arc<dyn Progress>>,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let layout = plan.layout();
    let m = plan.manifest.clone();
    let opts_like = RestoreOptions {
        pgdata: plan.pgdata.clone(),
        spec: TargetSpec::default(),
        backup: None,
        delta: plan.delta,
        force: plan.force,
        standby: false,
        tablespace_map: Vec::new(),
        owner: None,
        jobs: plan.jobs,
        restore_command: String::new(),
    };
    // The directories may have changed since the plan: check again.
    if let Some(pid) = files::running_postmaster(&plan.pgdata) {
        return Err(RestoreError::ServerRunning {
            path: plan.pgdata.clone(),
            pid,
        });
    }
    for t in &plan.tablespaces {
        check_tablespace_free(t.oid, &t.restore_to)?;
    }
    let mut removed = 0u64;
    let mut created_roots = Vec::new();
    for root in layout.roots() {
        check_dir(&root, &opts_like)?;
        let root2 = root.clone();
        let force = plan.force;
        let (n, created) = blocking(move || {
            let created = !root2.exists();
            std::fs::create_dir_all(&root2).map_err(RestoreError::io("create", &root2))?;
            files::make_dir(&root2, 0o700).map_err(RestoreError::io("set the mode of", &root2))?;
            let n = if force {
                files::wipe_contents(&root2).map_err(RestoreError::io("empty", &root2))?
            } else {
                0
            };
            Ok((n, created))
        })
        .await?;
        removed += n;
        if created {
            created_roots.push(root);
        }
    }
    if plan.delta {
        let layout2 = layout.clone();
        let m2 = m.clone();
        removed += blocking(move || remove_extraneous(&layout2, &m2)).await?;
    }
    // Directories (parents first) and tablespace links.
    let mut dirs = m.dirs.clone();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    let layout2 = layout.clone();
    let all_dirs = blocking(move || create_dirs(&layout2, &dirs)).await?;

    // Files, in parallel.
    let storage = cluster.repo().storage().clone();
    let repo = cluster.repo().location();
    if let Some(p) = &progress {
        p.start(m.files.len() as u64, m.total_size());
    }
    let sem = Arc::new(Semaphore::new(plan.jobs.max(1)));
    let mut set: JoinSet<Result<Outcome, RestoreError>> = JoinSet::new();
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64); // restored, reused, written, reused bytes, fetched
    let mut account = |o: Outcome, progress: &Option<Arc<dyn Progress>>| {
        let bytes = match o {
            Outcome::Restored { bytes, fetched } => {
                totals.0 += 1;
                totals.2 += bytes;
                totals.4 += fetched;
                bytes
            }
            Outcome::Reused { bytes } => {
                totals.1 += 1;
                totals.3 += bytes;
                bytes
            }
        };
        if let Some(p) = progress {
            p.advance(bytes);
        }
    };
    // Largest first, so that a large relation does not start last and finish alone.
    let mut order: Vec<&ManifestFile> = m.files.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.size));
    for f in order {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))?;
        while let Some(done) = set.try_join_next() {
            let o = done.map_err(|e| RestoreError::Internal(e.to_string()))??;
            account(o, &progress);
        }
        let job = FileJob {
            storage: storage.clone(),
            repo: repo.clone(),
            key: cluster.backup_file_key(f.stored_in.as_deref().unwrap_or(&m.label), &f.path),
            label: m.label.clone(),
            dest: layout.dest(&f.path),
            file: f.clone(),
            delta: plan.delta,
            threads: plan.jobs,
        };
        set.spawn(async move {
            let _permit = permit;
            restore_one(job).await
        });
    }
    while let Some(done) = set.join_next().await {
        let o = done.map_err(|e| RestoreError::Internal(e.to_string()))??;
        account(o, &progress);
    }
    if let Some(p) = &progress {
        p.finish();
    }

    // Recovery configuration.
    let plan2 = plan.clone();
    let layout2 = layout.clone();
    let (written, commented) = blocking(move || write_recovery_files(&plan2, &layout2)).await?;

    // Durability and ownership.
    let owner = plan.owner.clone();
    let roots = layout.roots();
    blocking(move || {
        if let Some(u) = owner {
            for r in &roots {
                chown_tree(r, u.uid, u.gid)?;
            }
        }
        // Files were written without an fsync each: one syncfs per filesystem flushes them all
        // (and reports any writeback error), as PostgreSQL's recovery_init_sync_method=syncfs.
        for r in &roots {
            files::sync_filesystem(r).map_err(RestoreError::io("syncfs", r))?;
        }
        for d in all_dirs.iter().chain(roots.iter()) {
            files::fsync_dir(d).map_err(RestoreError::io("fsync", d))?;
        }
        for r in &created_roots {
            if let Some(parent) = r.parent() {
                let _ = files::fsync_dir(parent);
            }
        }
        Ok(())
    })
    .await?;
    let (files_restored, files_reused, bytes_written, bytes_reused, bytes_fetched) = totals;
    Ok(RestoreReport {
        plan,
        files_restored,
        files_reused,
        entries_removed: removed,
        bytes_written,
        bytes_reused,
        bytes_fetched,
        seconds: started.elapsed().as_secs_f64(),
        commented_out: commented,
        written,
    })
}

fn remove_extraneous(layout: &Layout, m: &BackupManifest) -> Result<u64, RestoreError> {
    let roots = layout.roots();
    let mut expected: Vec<files::Expected> = roots.iter().map(|_| Default::default()).collect();
    let root_of = |p: &Path| roots.iter().position(|r| p.starts_with(r) && p != r);
    let add_dir_chain = |expected: &mut Vec<files::Expected>, p: &Path| {
        let mut cur = p.to_path_buf();
        while let Some(i) = root_of(&cur) {
            expected[i].dirs.insert(cur.clone());
            match cur.parent() {
                Some(parent) => cur = parent.to_path_buf(),
                None => break,
            }
        }
    };
    for d in &m.dirs {
        if layout.tablespace_link(&d.path).is_some() {
            let link = layout.pgdata.join(&d.path);
            if let Some(parent) = link.parent() {
                add_dir_chain(&mut expected, parent);
            }
            expected[0].links.insert(link);
        } else {
            add_dir_chain(&mut expected, &layout.dest(&d.path));
        }
    }
    for f in &m.files {
        let dest = layout.dest(&f.path);
        if let Some(parent) = dest.parent() {
            add_dir_chain(&mut expected, parent);
        }
        if let Some(i) = root_of(&dest) {
            expected[i].files.insert(dest);
        }
    }
    let mut n = 0;
    for (root, exp) in roots.iter().zip(&expected) {
        for p in files::extraneous(root, exp).map_err(RestoreError::io("list", root))? {
            tracing::debug!("delta: removing {}", p.display());
            files::remove_path(&p).map_err(RestoreError::io("remove", &p))?;
            n += 1;
        }
    }
    Ok(n)
}

fn create_dirs(
    layout: &Layout,
    dirs: &[pitr_repo::ManifestDir],
) -> Result<Vec<PathBuf>, RestoreError> {
    let mut out = Vec::new();
    for d in dirs {
        if let Some(oid) = layout.tablespace_link(&d.path) {
            let link = layout.pgdata.join(&d.path);
            let Some(target) = layout.tablespaces.get(&oid) else {
                continue;
            };
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(RestoreError::io("create", parent))?;
            }
            match std::fs::read_link(&link) {
                Ok(t) if &t == target => {}
                Ok(_) => {
                    std::fs::remove_file(&link).map_err(RestoreError::io("remove", &link))?;
                    std::os::unix::fs::symlink(target, &link)
                        .map_err(RestoreError::io("create symbolic link", &link))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::os::unix::fs::symlink(target, &link)
                        .map_err(RestoreError::io("create symbolic link", &link))?;
                }
                Err(e) => return Err(RestoreError::io("read symbolic link", &link)(e)),
            }
            continue;
        }
        let dest = layout.dest(&d.path);
        if let Some(parent) = dest.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent).map_err(RestoreError::io("create", parent))?;
            }
        }
        files::make_dir(&dest, d.mode).map_err(RestoreError::io("create", &dest))?;
        out.push(dest);
    }
    Ok(out)
}

fn write_recovery_files(
    plan: &RestorePlan,
    layout: &Layout,
) -> Result<(Vec<String>, Vec<String>), RestoreError> {
    let m = &plan.manifest;
    let dir = &plan.pgdata;
    let mut written = Vec::new();
    let remove_if_present = |name: &str| -> Result<(), RestoreError> {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RestoreError::io("remove", &p)(e)),
        }
    };
    for name in [
        "recovery.signal",
        "standby.signal",
        "backup_label",
        "tablespace_map",
    ] {
        remove_if_present(name)?;
    }
    let write = |name: &str, content: &[u8]| -> Result<(), RestoreError> {
        let p = dir.join(name);
        files::write_small(&p, content, 0o600).map_err(RestoreError::io("write", &p))
    };
    if plan.writes_backup_label {
        write("backup_label", m.backup_label.as_bytes())?;
        written.push("backup_label".to_string());
    }
    if plan.writes_tablespace_map {
        let map = files::rewrite_tablespace_map(
            m.tablespace_map.as_deref().unwrap_or(""),
            &layout.tablespaces,
        );
        write("tablespace_map", map.as_bytes())?;
        written.push("tablespace_map".to_string());
    }
    write(&plan.signal_file, b"")?;
    written.push(plan.signal_file.clone());

    let mut commented = Vec::new();
    let auto = dir.join("postgresql.auto.conf");
    let original = match std::fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RestoreError::io("read", &auto)(e)),
    };
    let settings: Vec<(&str, String)> = plan
        .settings
        .iter()
        .map(|s| (s.name.as_str(), s.value.clone()))
        .collect();
    let header = format!(
        "backup {}, {}, written by pitr {} at {}",
        m.label,
        plan.target,
        env!("CARGO_PKG_VERSION"),
        choose::show_time(Timestamp::now())
    );
    let edit = conf::rewrite_auto_conf(&original, &settings, &header);
    commented.extend(
        edit.commented
            .iter()
            .map(|l| format!("postgresql.auto.conf: {}", l.trim())),
    );
    write("postgresql.auto.conf", edit.text.as_bytes())?;
    written.push("postgresql.auto.conf".to_string());

    let main_conf = dir.join("postgresql.conf");
    if let Ok(text) = std::fs::read_to_string(&main_conf) {
        let edit = conf::comment_out_targets(&text);
        if edit.changed {
            let mode = std::fs::metadata(&main_conf)
                .map(|md| std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777)
                .unwrap_or(0o600);
            files::write_small(&main_conf, edit.text.as_bytes(), mode)
                .map_err(RestoreError::io("write", &main_conf))?;
            commented.extend(
                edit.commented
                    .iter()
                    .map(|l| format!("postgresql.conf: {}", l.trim())),
            );
            written.push("postgresql.conf (recovery targets commented out)".to_string());
        }
    }
    files::fsync_dir(dir).map_err(RestoreError::io("fsync", dir))?;
    Ok((written, commented))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), RestoreError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(RestoreError::io("chown", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(RestoreError::io("inspect", path))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(RestoreError::io("list", path))? {
            let e = e.map_err(RestoreError::io("list", path))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}
