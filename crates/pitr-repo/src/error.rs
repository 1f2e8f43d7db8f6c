//! Repository errors.

use pitr_pg::WalFileName;
use pitr_storage::StorageError;

use crate::frame::{Checksum, FrameError};
use crate::meta::MetaError;

/// Result of a repository operation.
pub type RepoResult<T> = Result<T, RepoError>;

/// A repository operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored object is damaged.
    #[error("{key} in repository {repo} is corrupt: {source}\nhint: run `pitr verify`; the object must be restored from another copy or removed")]
    Corrupt {
        /// Repository location.
        repo: String,
        /// Object key.
        key: String,
        /// What is wrong.
        source: FrameError,
    },
    /// A metadata file is damaged or foreign.
    #[error("{key} in repository {repo} cannot be trusted: {source}")]
    BadMeta {
        /// Repository location.
        repo: String,
        /// Object key.
        key: String,
        /// What is wrong.
        source: MetaError,
    },
    /// A different file with the same WAL name is already archived.
    #[error("refusing to archive {name}: the repository already holds a different {name} (stored blake3 {stored}, {stored_len} bytes; new blake3 {new}, {new_len} bytes); the stored copy was left untouched\nhint: two servers may be archiving into the same repository and cluster; give each its own --cluster")]
    WalConflict {
        /// The WAL file name.
        name: WalFileName,
        /// Checksum of the stored copy.
        stored: Checksum,
        /// Length of the stored copy.
        stored_len: u64,
        /// Checksum of the file being pushed.
        new: Checksum,
        /// Length of the file being pushed.
        new_len: u64,
    },
    /// The cluster name is not usable as a key.
    #[error(
        "invalid cluster name {0:?}: use letters, digits, '_', '-' and '.' (not starting with '.')"
    )]
    BadClusterName(String),
    /// The repository was written by a newer pitr.
    #[error("repository {repo} has format {found}; this pitr understands format {supported}\nhint: upgrade pitr")]
    UnsupportedFormat {
        /// Repository location.
        repo: String,
        /// Format found.
        found: u32,
        /// Format supported.
        supported: u32,
    },
    /// The location holds something else than a repository: no marker, and not empty.
    #[error("{location:?} is not a pitr repository: it has no pitr.repository marker and is not empty (it holds {example:?})\nhint: check --repo / PITR_REPO; to create a repository, run `pitr init --repo DIR` with a new or empty directory")]
    NotARepository {
        /// Repository location.
        location: String,
        /// One of its entries.
        example: String,
    },
    /// The encryption key is missing, wrong, or not expected.
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    /// Local encoding failed (out of memory, etc.).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}
