//! Storage errors: each names the object and, where there is one, the fix.

use std::io;
use std::path::{Path, PathBuf};

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;

/// A failed storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The OS refused access.
    #[error("permission denied: cannot {op} {path:?} as OS user {user:?}\nhint: make the repository readable and writable by {user:?} (the user PostgreSQL's archive_command runs as), e.g. chown -R {user} <repository>")]
    PermissionDenied {
        /// What was attempted.
        op: &'static str,
        /// The path refused.
        path: PathBuf,
        /// The OS user we run as.
        user: String,
    },
    /// The filesystem is full.
    #[error("no space left on device while writing {path:?}\nhint: free space on the repository's filesystem or move the repository; nothing was published")]
    NoSpace {
        /// The path being written.
        path: PathBuf,
    },
    /// The repository root does not exist.
    #[error("repository {path:?} does not exist\nhint: create it with `pitr init --repo {path:?}` or check --repo / PITR_REPO")]
    MissingRoot {
        /// The root path.
        path: PathBuf,
    },
    /// The key is malformed.
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    /// Any other I/O failure.
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A fault injected by a test wrapper.
    #[error("injected fault: {0}")]
    Injected(String),
}

impl StorageError {
    /// Classifies an I/O error on `path`.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::PermissionDenied {
            return StorageError::PermissionDenied {
                op,
                path: path.to_path_buf(),
                user: crate::current_os_user(),
            };
        }
        // ENOSPC and EDQUOT.
        if matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) {
            return StorageError::NoSpace {
                path: path.to_path_buf(),
            };
        }
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when retrying the same operation may succeed (network-ish or interrupted I/O).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::BrokenPipe
            ),
            StorageError::Injected(_) => true,
            _ => false,
        }
    }
}
