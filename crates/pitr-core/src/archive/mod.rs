//! `archive-push` and `archive-get`: PostgreSQL's `archive_command` and `restore_command`.
//!
//! One way through, no file importing one that imports it back:
//! - [`push`] (`push.rs`): check a WAL file against the repository's cluster, store it durably;
//! - [`PushSpool`] (`ahead.rs`): asynchronous push, the detached worker that pushes the files
//!   PostgreSQL marked ready ahead of its requests and the "done" markers it leaves in `pg_wal`;
//! - [`get`] (`get.rs`): serve a WAL file from the read-ahead spool or the repository, and say
//!   which segments to read ahead;
//! - [`Spool`] (`spool.rs`): the read-ahead directory and its filler;
//! - `fetch.rs`: one WAL file from the repository into a local file, verified, for `get` and
//!   the spool alike.

mod ahead;
mod fetch;
mod get;
mod push;
mod spool;

use std::io;
use std::path::PathBuf;

use pitr_pg::WalFileName;
use pitr_repo::RepoError;
use pitr_storage::StorageError;

pub use ahead::{
    AheadOptions, FileStamp, PushSpool, Relayed, Spooled, WorkerFailure, WorkerReport,
    PUSH_SPOOL_DIR,
};
pub use get::{get, GetOutcome, GET_RETRY_DELAYS};
pub(crate) use push::admit_segment;
pub use push::{push, push_opening, segment_identity, PushOutcome, PushReport};
pub use spool::Spool;

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

/// `name` as a WAL file name, or the error that says what PostgreSQL passes.
fn parse_name(name: &str) -> Result<WalFileName, ArchiveError> {
    WalFileName::parse(name).map_err(|_| ArchiveError::NotWalName {
        name: name.to_string(),
    })
}
