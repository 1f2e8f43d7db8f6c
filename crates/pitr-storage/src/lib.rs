//! Where a pitr repository's bytes live.
//!
//! [`Storage`] is deliberately small: whole-object `put` (with an atomic "create only if absent"
//! mode, the primitive duplicate-WAL detection relies on), streamed uploads for large files,
//! `get`, ranged `get`, `head`, `list`, `list_dirs` (one level, for finding clusters and
//! backups without listing everything), `delete`, `delete_many` (batched). Nothing half-written
//! is ever visible under its final key. `None` means absent and nothing else: trouble is an
//! error, classified by [`RemoteFailure`] for object stores. Wrappers (fault injection, later
//! encryption) implement the same trait.
//!
//! - [`LocalFs`]: a temporary file, fsynced, then linked (create) or renamed (overwrite) into
//!   place, and the directory fsynced.
//! - [`S3Storage`]: any S3-compatible store through `object_store`: conditional PUT for create,
//!   multipart uploads with bounded memory, ranged GETs, paginated and delimiter listings, bulk
//!   deletes, bounded retries. Its guarantees, their limits on SeaweedFS and the permissions it
//!   needs are in the crate README.

mod error;
mod fault;
mod local;
mod s3;

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{RemoteFailure, StorageError, StorageResult};
pub use fault::{Fault, FaultyStorage};
pub use local::LocalFs;
/// The effective OS user's name (or `uid N` when it has none), e.g. `postgres`, for
/// permission messages.
pub use pitr_os::effective_user_name as current_os_user;
pub use s3::{
    S3Config, S3Credentials, S3Storage, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PART_SIZE, DEFAULT_REGION,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_TIMEOUT, MIN_PART_SIZE,
};

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

    /// When the object was last written (archived, for a WAL segment), or `None` when it does
    /// not exist or the driver cannot tell.
    async fn modified(&self, _key: &str) -> StorageResult<Option<std::time::SystemTime>> {
        Ok(None)
    }

    /// Every object whose key starts with `prefix` (recursively), sorted by key.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;

    /// Names of up to `limit` entries at the top of the storage root, in no set order: a
    /// filesystem's files and directories (hidden and temporary ones included), the first key
    /// segments of an object store. Tells an empty location from somebody else's without
    /// listing everything.
    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>>;

    /// The immediate "sub-directories" of `prefix` (`""` or `/`-terminated): the distinct next
    /// key segments of the objects below it that have a further `/`, sorted. Over `c/b/x/1` and
    /// `c/b/y/z/2`, `list_dirs("c/b/")` is `["x", "y"]`; objects directly under the prefix are
    /// not listed. Finds clusters and backups without listing every object: one delimiter
    /// listing on S3, directory reads locally. The default filters a full [`Storage::list`].
    ///
    /// It may also name a directory whose objects were all deleted moments ago (SeaweedFS
    /// removes emptied folders asynchronously, minutes later, and lists them meanwhile): a
    /// caller that needs a particular object below a directory (a manifest) looks for it.
    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        validate_prefix(prefix)?;
        let mut dirs: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(prefix)?;
                rest.split_once('/').map(|(dir, _)| dir.to_string())
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    /// How many objects a copy of many files (backup, restore) should have in flight at least,
    /// whatever the number of cores: 1 where a request costs no round trip (a local disk),
    /// more for an object store, where each request waits for the network.
    fn requests_in_flight(&self) -> usize {
        1
    }

    /// This storage as [`std::any::Any`], for a layer above that reads one wrapper its own
    /// way (pitr-repo opens an encrypted repository's chunks in its decoding threads, with one
    /// request per range); `None` (the default) for the others.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Removes an object; removing an absent object is not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;

    /// Removes every object in `keys` (absent ones are fine): on S3 one request per 1,000 keys.
    /// On failure some may be gone and others not, so a caller that must stay consistent
    /// deletes in an order that is safe to interrupt. The default deletes one by one.
    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

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

/// Checks that a listing prefix is empty or a `/`-terminated valid key.
pub fn validate_prefix(prefix: &str) -> StorageResult<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(dir) => validate_key(dir),
        None => Err(StorageError::InvalidKey(prefix.to_string())),
    }
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
