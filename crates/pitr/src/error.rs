//! How errors become messages and exit codes. Codes are stable; see `pitr --help`.

use pitr_core::archive::ArchiveError;
use pitr_core::restore::start::StartError;
use pitr_core::restore::{ErrorClass, RestoreError};
use pitr_repo::frame::FrameError;
use pitr_repo::{CryptError, RepoError};
use pitr_storage::StorageError;

use crate::config::ConfigError;

/// archive-get: the repository does not have the file (PostgreSQL's "not available").
pub const EXIT_NOT_FOUND: u8 = 1;
/// Bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Any other failure.
pub const EXIT_ERROR: u8 = 3;
/// Refused: a different copy already archived, a file from another cluster/version, a
/// recovery target outside the reachable window, or a restore into a non-empty directory.
pub const EXIT_REFUSED: u8 = 4;
/// Corruption detected.
pub const EXIT_CORRUPT: u8 = 5;
/// archive-get failed for any reason other than absence. Above 125 so that PostgreSQL's startup
/// process stops recovery rather than treating the file as missing and ending recovery early.
pub const EXIT_GET_FATAL: u8 = 255;

/// Anything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Incomplete or contradictory options.
    #[error("{0}")]
    Usage(String),
    /// Config file problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Archive engine.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Repository.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Storage.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Backup engine.
    #[error(transparent)]
    Backup(#[from] pitr_core::backup::BackupError),
    /// Connecting / talking to PostgreSQL.
    #[error(transparent)]
    Proto(#[from] pitr_proto::ProtoError),
    /// The demo failed.
    #[error("demo: {0}")]
    Demo(String),
    /// Restore engine.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// `restore --start`.
    #[error(transparent)]
    Start(#[from] StartError),
    /// `pitr wal`.
    #[error(transparent)]
    Wal(#[from] pitr_core::walscan::WalScanError),
    /// `pitr expire`.
    #[error(transparent)]
    Expire(#[from] pitr_core::expire::ExpireError),
    /// A file pitr writes for the user (not in the repository) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `pitr stream`.
    #[error(transparent)]
    Stream(#[from] pitr_core::stream::StreamError),
    /// `pitr standby`.
    #[error(transparent)]
    Standby(#[from] pitr_core::standby::StandbyError),
    /// `pitr pin` / `pitr unpin`.
    #[error(transparent)]
    Pin(#[from] pitr_core::pin::PinError),
    /// archive-push: the asynchronous worker's failure, reported by the next call.
    #[error("{}", .0.message)]
    Relayed(pitr_core::archive::Relayed),
    /// Refused before anything changed (`pitr undo`).
    #[error("{0}")]
    Refused(String),
    /// A command failed (`pitr undo`).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Relayed(r) => r.code,
            CliError::Archive(ArchiveError::Foreign { .. }) => EXIT_REFUSED,
            CliError::Archive(ArchiveError::Repo(r))
            | CliError::Repo(r)
            | CliError::Restore(RestoreError::Repo(r)) => repo_code(r),
            CliError::Backup(pitr_core::backup::BackupError::Foreign { .. }) => EXIT_REFUSED,
            CliError::Backup(pitr_core::backup::BackupError::Repo(r)) => repo_code(r),
            CliError::Wal(pitr_core::walscan::WalScanError::Repo(r)) => repo_code(r),
            CliError::Expire(pitr_core::expire::ExpireError::Usage(_)) => EXIT_USAGE,
            CliError::Expire(pitr_core::expire::ExpireError::Repo(r)) => repo_code(r),
            CliError::Pin(pitr_core::pin::PinError::NoSuchBackup { .. }) => EXIT_USAGE,
            CliError::Pin(pitr_core::pin::PinError::Repo(r)) => repo_code(r),
            CliError::Wal(e) if e.is_usage() => EXIT_USAGE,
            CliError::Wal(e) if e.is_corrupt() => EXIT_CORRUPT,
            CliError::Restore(e) => match e.class() {
                ErrorClass::Usage => EXIT_USAGE,
                ErrorClass::Refused => EXIT_REFUSED,
                ErrorClass::Corrupt => EXIT_CORRUPT,
                ErrorClass::Failed => EXIT_ERROR,
            },
            CliError::Standby(pitr_core::standby::StandbyError::Usage(_)) => EXIT_USAGE,
            CliError::Standby(pitr_core::standby::StandbyError::Restore(e)) => match e.class() {
                ErrorClass::Usage => EXIT_USAGE,
                ErrorClass::Refused => EXIT_REFUSED,
                ErrorClass::Corrupt => EXIT_CORRUPT,
                ErrorClass::Failed => EXIT_ERROR,
            },
            CliError::Standby(e) if e.is_refusal() => EXIT_REFUSED,
            CliError::Refused(_) => EXIT_REFUSED,
            _ => EXIT_ERROR,
        }
    }
}

fn repo_code(e: &RepoError) -> u8 {
    match e {
        RepoError::WalConflict { .. } | RepoError::NotARepository { .. } => EXIT_REFUSED,
        RepoError::Corrupt { source, .. } => match source {
            FrameError::Write(_) => EXIT_ERROR,
            _ => EXIT_CORRUPT,
        },
        RepoError::BadMeta { .. } => EXIT_CORRUPT,
        RepoError::Storage(StorageError::Unauthentic { .. }) => EXIT_CORRUPT,
        RepoError::Crypt(
            CryptError::MissingKey { .. }
            | CryptError::WrongKey { .. }
            | CryptError::UnexpectedKey { .. },
        ) => EXIT_REFUSED,
        _ => EXIT_ERROR,
    }
}
