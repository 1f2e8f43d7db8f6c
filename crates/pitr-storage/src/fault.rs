//! A wrapper that injects failures, to test that callers stay correct when storage misbehaves.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ObjectMeta, PutMode, PutOutcome, Storage, StorageError, StorageResult, Upload};

/// Which operations fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every read (`get`, `get_range`, `head`, `list`, `list_dirs`) fails with a transient
    /// error.
    Reads,
    /// Every write (`put`, `upload`, `delete`, `delete_many`, `prune`) fails with a transient
    /// error.
    Writes,
}

/// Lets the first `successes` operations of the chosen kind through, fails the next
/// `failures`, then behaves like `inner`.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    fault: Fault,
    successes: AtomicU32,
    remaining: AtomicU32,
}

impl FaultyStorage {
    /// Wraps `inner`, failing the next `failures` operations of kind `fault`.
    pub fn new(inner: Arc<dyn Storage>, fault: Fault, failures: u32) -> FaultyStorage {
        FaultyStorage {
            inner,
            fault,
            successes: AtomicU32::new(0),
            remaining: AtomicU32::new(failures),
        }
    }

    /// Wraps `inner`, letting `successes` operations of kind `fault` through and failing every
    /// one after: a process that dies at that point, as far as storage can tell.
    pub fn failing_after(inner: Arc<dyn Storage>, fault: Fault, successes: u32) -> FaultyStorage {
        FaultyStorage {
            inner,
            fault,
            successes: AtomicU32::new(successes),
            remaining: AtomicU32::new(u32::MAX),
        }
    }

    fn trip(&self, kind: Fault, op: &str) -> StorageResult<()> {
        if kind != self.fault {
            return Ok(());
        }
        let passes = self
            .successes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if passes {
            return Ok(());
        }
        let tripped = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if tripped {
            Err(StorageError::Injected(op.to_string()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome> {
        self.trip(Fault::Writes, "put")?;
        self.inner.put(key, data, mode).await
    }
    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        self.trip(Fault::Writes, "upload")?;
        self.inner.upload(key).await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        self.trip(Fault::Reads, "get")?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        self.trip(Fault::Reads, "get_range")?;
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.trip(Fault::Reads, "head")?;
        self.inner.head(key).await
    }
    async fn modified(&self, key: &str) -> StorageResult<Option<std::time::SystemTime>> {
        self.trip(Fault::Reads, "head")?;
        self.inner.modified(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.trip(Fault::Reads, "list")?;
        self.inner.list(prefix).await
    }
    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>> {
        self.trip(Fault::Reads, "root_entries")?;
        self.inner.root_entries(limit).await
    }
    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.trip(Fault::Reads, "list_dirs")?;
        self.inner.list_dirs(prefix).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.trip(Fault::Writes, "delete")?;
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        self.trip(Fault::Writes, "delete_many")?;
        self.inner.delete_many(keys).await
    }

    async fn prune(&self, prefix: &str) -> StorageResult<()> {
        self.trip(Fault::Writes, "prune")?;
        self.inner.prune(prefix).await
    }
}
