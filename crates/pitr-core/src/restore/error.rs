//! Why a restore cannot be planned or carried out, and how the CLI should treat it.

use std::io;
use std::path::{Path, PathBuf};

use pitr_pg::history::HistoryError;
use pitr_repo::RepoError;

use super::choose::Unreachable;
use super::target::TargetError;

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
    /// A block file of a block-level incremental backup could not be rebuilt verified.
    #[error("{path} of backup {label} cannot be rebuilt from repository {repo}: {reason}\nhint: run `pitr verify`; restore another backup with --backup")]
    BlockRebuild {
        /// File path.
        path: String,
        /// The backup being restored.
        label: String,
        /// Repository.
        repo: String,
        /// What is wrong.
        reason: String,
    },
    /// An incremental backup's chain of parents is broken.
    #[error("backup {label} cannot be restored: its chain of parents is broken: backup {parent} {why} (repository {repo}); nothing was written\nhint: restore another backup with --backup (pitr info lists them), or run pitr verify")]
    BrokenChain {
        /// The backup being restored.
        label: String,
        /// The ancestor at fault.
        parent: String,
        /// Repository.
        repo: String,
        /// What is wrong with it.
        why: String,
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
    /// The planned backup was expired before the restore could lease it.
    #[error("backup {0} was removed by pitr expire after this restore was planned; nothing was changed\nhint: run the restore again: it chooses among the backups that remain")]
    ExpiredMeanwhile(String),
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
            | RestoreError::NoBackups { .. }
            | RestoreError::ExpiredMeanwhile(_) => ErrorClass::Refused,
            RestoreError::BadManifest { .. }
            | RestoreError::MissingObject { .. }
            | RestoreError::MissingObjects { .. }
            | RestoreError::BrokenChain { .. }
            | RestoreError::BlockRebuild { .. }
            | RestoreError::ObjectMismatch { .. }
            | RestoreError::BadHistory { .. } => ErrorClass::Corrupt,
            RestoreError::Repo(RepoError::Corrupt { .. } | RepoError::BadMeta { .. }) => {
                ErrorClass::Corrupt
            }
            _ => ErrorClass::Failed,
        }
    }

    /// A closure that wraps an I/O error on `path` while doing `op`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> RestoreError + 'a {
        move |source| RestoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
