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
    /// An object of an encrypted repository does not open: damaged, truncated, reordered,
    /// renamed or replaced (the key itself is checked when the repository is opened).
    #[error("{key:?} in repository {repo} fails authentication: {reason}\nhint: the stored object was damaged or tampered with; run `pitr verify`, and restore the object from another copy or remove it")]
    Unauthentic {
        /// Repository location.
        repo: String,
        /// Object key.
        key: String,
        /// What does not open.
        reason: String,
    },
    /// An object store refused or failed a request: anything but "the object does not exist",
    /// which drivers report as `None`.
    #[error("cannot {op} {object} at {endpoint}: {} ({detail})\nhint: {}", failure.summary(), failure.hint())]
    Remote {
        /// What was attempted, e.g. `get`, `put`, `list`.
        op: &'static str,
        /// The object or prefix, as a URL (`s3://bucket/key`).
        object: String,
        /// The endpoint the request went to.
        endpoint: String,
        /// Why it failed, for exit codes and hints.
        failure: RemoteFailure,
        /// The store's own words (status, error code, transport error).
        detail: String,
    },
}

/// Why an object-store request failed. None of these means "absent": a caller that must tell
/// absence from trouble (archive-get) treats every one of them as trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// No connection (refused, reset, DNS), after the driver's retries.
    Unreachable,
    /// A request or connection timed out, after the driver's retries.
    Timeout,
    /// The TLS handshake failed (untrusted or mismatched certificate, http/https mix-up).
    Tls,
    /// The credentials were refused or lack a permission (401/403).
    Auth,
    /// The bucket does not exist.
    NoBucket,
    /// The server kept failing (5xx, 429 SlowDown) until the retry budget ran out.
    Server,
    /// The store redirected us: usually the bucket lives in another region.
    WrongRegion,
    /// The configuration is unusable (bad URL, unreadable CA file, bad endpoint).
    Config,
    /// Anything else the store answered that we do not expect (a protocol error).
    Other,
}

impl RemoteFailure {
    /// One lowercase phrase saying what happened.
    pub fn summary(self) -> &'static str {
        match self {
            RemoteFailure::Unreachable => "the endpoint is unreachable",
            RemoteFailure::Timeout => "the request timed out",
            RemoteFailure::Tls => "the TLS handshake failed",
            RemoteFailure::Auth => "access denied",
            RemoteFailure::NoBucket => "the bucket does not exist",
            RemoteFailure::Server => "the server keeps failing",
            RemoteFailure::WrongRegion => "the bucket is in another region",
            RemoteFailure::Config => "the S3 configuration is invalid",
            RemoteFailure::Other => "unexpected answer from the object store",
        }
    }

    /// What to check.
    pub fn hint(self) -> &'static str {
        match self {
            RemoteFailure::Unreachable => "check --s3-endpoint / AWS_ENDPOINT_URL, that the server is running and that this host can reach it",
            RemoteFailure::Timeout => "check the network path to the endpoint and the server's load; the driver already retried for its retry budget",
            RemoteFailure::Tls => "check that the endpoint speaks https and that its certificate is trusted (the system's roots, or --s3-ca-file for a private CA); an http:// endpoint needs the http scheme in its URL",
            RemoteFailure::Auth => "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (or the configured credentials) and that they grant s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on the bucket",
            RemoteFailure::NoBucket => "create the bucket first, or fix the bucket name in --repo s3://BUCKET/prefix",
            RemoteFailure::Server => "the object store is overloaded, failing or out of space (SeaweedFS answers a full disk with HTTP 500); check its logs and free space, then try again",
            RemoteFailure::WrongRegion => "set --s3-region / AWS_REGION to the bucket's region",
            RemoteFailure::Config => "fix the S3 settings (--repo s3://bucket/prefix, --s3-endpoint, --s3-region, the CA file)",
            RemoteFailure::Other => "see the detail; if it persists, report it with the object store's name and version",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            RemoteFailure::Unreachable | RemoteFailure::Timeout | RemoteFailure::Server
        )
    }
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

    /// The object-store failure class, for a remote error.
    pub fn remote_failure(&self) -> Option<RemoteFailure> {
        match self {
            StorageError::Remote { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// True when retrying the same operation may succeed (network-ish or interrupted I/O).
    ///
    /// The S3 driver has already retried such failures for its whole retry budget before
    /// returning them.
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
            StorageError::Remote { failure, .. } => failure.is_transient(),
            _ => false,
        }
    }
}
