//! [`EncryptedStorage`]: a [`Storage`] that seals every object on the way in and opens it,
//! authenticated, on the way out. Keys, sizes (as plaintext sizes) and listings pass through;
//! everything below sees only sealed bytes.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pitr_storage::{ObjectMeta, PutMode, PutOutcome, Storage, StorageError, StorageResult, Upload};

use super::key::KEYRING_KEY;
use super::seal::{self, plain_len, DataKey, SealError, Sealer};

/// Objects larger than this are sealed and opened off the async runtime's threads (about
/// 0.1 ms of AES-GCM at this size).
const BLOCKING_MIN: usize = 256 << 10;

/// Every object sealed with the repository's data key (see [`super::seal`] for the format).
#[derive(Clone)]
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    dk: Arc<DataKey>,
}

impl std::fmt::Debug for EncryptedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStorage")
            .field("inner", &self.inner)
            .finish()
    }
}

impl EncryptedStorage {
    /// `inner`, with every object sealed under `dk`.
    pub fn new(inner: Arc<dyn Storage>, dk: DataKey) -> EncryptedStorage {
        EncryptedStorage {
            inner,
            dk: Arc::new(dk),
        }
    }

    /// The storage holding the sealed objects.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    pub(super) fn data_key(&self) -> &DataKey {
        &self.dk
    }

    fn unauthentic(&self, key: &str, e: SealError) -> StorageError {
        StorageError::Unauthentic {
            repo: self.inner.location(),
            key: key.to_string(),
            reason: e.to_string(),
        }
    }

    /// Refuses keys this layer must never write: the key object lives in clear.
    fn writable(key: &str) -> StorageResult<()> {
        if key == KEYRING_KEY {
            return Err(StorageError::InvalidKey(key.to_string()));
        }
        Ok(())
    }

    async fn seal_bytes(&self, key: &str, data: Bytes) -> StorageResult<Bytes> {
        let (dk, k) = (self.dk.clone(), key.to_string());
        let res = if data.len() >= BLOCKING_MIN {
            tokio::task::spawn_blocking(move || seal::seal(&dk, &k, &data))
                .await
                .unwrap_or_else(|e| Err(SealError::Random(e.to_string())))
        } else {
            seal::seal(&dk, &k, &data)
        };
        res.map(Bytes::from).map_err(|e| self.unauthentic(key, e))
    }

    async fn open_bytes(&self, key: &str, obj: Bytes) -> StorageResult<Bytes> {
        let (dk, k) = (self.dk.clone(), key.to_string());
        let res = if obj.len() >= BLOCKING_MIN {
            tokio::task::spawn_blocking(move || seal::open(&dk, &k, &obj))
                .await
                .unwrap_or_else(|e| Err(SealError::Random(e.to_string())))
        } else {
            seal::open(&dk, &k, &obj)
        };
        res.map(Bytes::from).map_err(|e| self.unauthentic(key, e))
    }
}

#[async_trait]
impl Storage for EncryptedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome> {
        Self::writable(key)?;
        let sealed = self.seal_bytes(key, data).await?;
        self.inner.put(key, sealed, mode).await
    }

    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        Self::writable(key)?;
        let sealer = Sealer::new(&self.dk, key).map_err(|e| self.unauthentic(key, e))?;
        let inner = self.inner.upload(key).await?;
        Ok(Box::new(SealedUpload { inner, sealer }))
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        match self.inner.get(key).await? {
            Some(obj) => Ok(Some(self.open_bytes(key, obj).await?)),
            None => Ok(None),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        match self.sealed_object(key).await? {
            Some(object) => object.read(range).await,
            None => Ok(None),
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        Ok(self.inner.head(key).await?.map(plain_meta))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        Ok(self
            .inner
            .list(prefix)
            .await?
            .into_iter()
            .map(plain_meta)
            .collect())
    }

    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>> {
        self.inner.root_entries(limit).await
    }

    fn requests_in_flight(&self) -> usize {
        self.inner.requests_in_flight()
    }

    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.inner.list_dirs(prefix).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        Self::writable(key)?;
        self.inner.delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        for k in keys {
            Self::writable(k)?;
        }
        self.inner.delete_many(keys).await
    }

    async fn prune(&self, prefix: &str) -> StorageResult<()> {
        self.inner.prune(prefix).await
    }
}

/// Sizes as the layers above see them: plaintext sizes (the key object and anything that is
/// not a sealed object keep their stored size).
fn plain_meta(m: ObjectMeta) -> ObjectMeta {
    let size = match m.key.as_str() {
        KEYRING_KEY => m.size,
        _ => plain_len(m.size).unwrap_or(m.size),
    };
    ObjectMeta { key: m.key, size }
}

/// A streamed upload sealed chunk by chunk.
struct SealedUpload {
    inner: Box<dyn Upload>,
    sealer: Sealer,
}

#[async_trait]
impl Upload for SealedUpload {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.sealer.write(&data);
        let out = self.sealer.take_output();
        if out.is_empty() {
            return Ok(());
        }
        self.inner.write(Bytes::from(out)).await
    }

    async fn finish(self: Box<Self>, mode: PutMode) -> StorageResult<PutOutcome> {
        let SealedUpload { mut inner, sealer } = *self;
        inner.write(Bytes::from(sealer.finish())).await?;
        inner.finish(mode).await
    }
}
