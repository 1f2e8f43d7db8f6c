//! Where a pitr repository's bytes live.
//!
//! [`Storage`] is deliberately small: whole-object `put` (with an atomic "create only if absent"
//! mode, the primitive duplicate-WAL detection relies on), streamed uploads for large files,
//! `get`, ranged `get`, `head`, `list`, `delete`. Nothing half-written is ever visible under its
//! final key: the local driver writes a temporary file, fsyncs it and links/renames it into place
//! (then fsyncs the directory); an object-store driver would use a conditional PUT. Wrappers
//! (fault injection, later encryption) implement the same trait.

mod error;
mod fault;
mod local;

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{StorageError, StorageResult};
pub use fault::{Fault, FaultyStorage};
pub use local::LocalFs;
/// The effective OS user's name (or `uid N` when it has none), e.g. `postgres`, for
/// permission messages.
pub use pitr_os::effective_user_name as current_os_user;

/// How `put` treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Publish only if nothing exists under the key; atomic against concurrent writers.
    Create,
    /// Replace whatever exists, atomically.
    Overwrite,
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object is now durable under its key.
    Written,
    /// `PutMode::Create` and an object already existed: nothing was changed.
    AlreadyExists,
}

/// Size and key of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the storage root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A repository backend. Keys are relative, `/`-separated, without `..` or empty segments.
#[async_trait]
pub trait Storage: Send + Sync + Debug {
    /// Human-readable location (a path or URL), for messages.
    fn location(&self) -> String;

    /// Stores `data` under `key`, durably, before returning `Written`.
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome>;

    /// Starts a streamed upload to `key`; nothing is visible until [`Upload::finish`].
    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>>;

    /// The whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>>;

    /// Bytes `range` of the object (clamped to its end), or `None` when it does not exist.
    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>>;

    /// Metadata, or `None` when the object does not exist.
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix` (recursively), sorted by key.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;

    /// Names of up to `limit` entries at the top of the storage root, in no set order: a
    /// filesystem's files and directories (hidden and temporary ones included), the first key
    /// segments of an object store. Tells an empty location from somebody else's without
    /// listing everything.
    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>>;

    /// Removes an object; removing an absent object is not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;

    /// Removes the directories under `prefix` (a `/`-terminated key prefix) that no longer hold
    /// anything, the prefix's own directory included, with the temporary files of writes that
    /// died more than an hour ago. Object stores have no directories: the default does nothing.
    async fn prune(&self, _prefix: &str) -> StorageResult<()> {
        Ok(())
    }
}

/// A streamed upload. Dropping it without `finish` leaves nothing visible.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> StorageResult<()>;
    /// Makes the object durable and visible under its key (honouring `mode`).
    async fn finish(self: Box<Self>, mode: PutMode) -> StorageResult<PutOutcome>;
}

/// Checks that a key is relative and free of `.`/`..`/empty segments.
pub fn validate_key(key: &str) -> StorageResult<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || key.contains('\0');
    if bad {
        return Err(StorageError::InvalidKey(key.to_string()));
    }
    Ok(())
}
