//! Reading one sealed object by plaintext ranges, one request per range: what restore and
//! archive-get use (through [`crate::stored`]) to read an encrypted repository's objects as
//! they read plain ones, the chunks opened on the blocking threads while the next range is
//! fetched and the previous one decompressed.
//!
//! [`EncryptedStorage::open_first`] makes one request for a small object (the whole sealed
//! object, opened at once) and, for a large one, the same requests as an unencrypted read:
//! the first bytes, the object's size (HEAD) and then each range. Every chunk is
//! authenticated with its index, whether it is the object's last (from the stored size) and
//! the object's key, so a truncated, extended, reordered or renamed object fails as it does
//! when read whole.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use pitr_storage::{Storage, StorageError, StorageResult};

use super::seal::{
    self, chunk_count, chunk_offset, parse_header, plain_len, sealed_offset, ObjectCipher,
    SealError, CHUNK, SEAL_HEADER, TAG,
};
use super::EncryptedStorage;

/// Sealed bytes from which chunks are opened on a blocking thread rather than on the async
/// runtime's (about 0.1 ms of AES-GCM at this size).
const BLOCKING_OPEN: usize = 256 << 10;

/// The start of a sealed object, as [`EncryptedStorage::open_first`] read it.
#[derive(Debug)]
pub enum SealedFirst {
    /// The whole object's plaintext (shorter than the first read).
    Whole(Bytes),
    /// A larger object: its first plaintext bytes, and the object for ranged reads.
    Large {
        /// The first plaintext bytes (as many as asked for).
        first: Bytes,
        /// The object, for the rest.
        object: SealedObject,
    },
}

/// A sealed object whose salt and size are known: plaintext ranges read with one request.
#[derive(Clone)]
pub struct SealedObject {
    inner: Arc<dyn Storage>,
    repo: String,
    key: String,
    cipher: Arc<ObjectCipher>,
    len: u64,
    stored: u64,
}

impl std::fmt::Debug for SealedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedObject")
            .field("key", &self.key)
            .field("len", &self.len)
            .finish()
    }
}

fn unauthentic(repo: String, key: &str, e: SealError) -> StorageError {
    StorageError::Unauthentic {
        repo,
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// Opens `sealed`, the chunks from index `first` of object `key` (of `n` chunks), on a
/// blocking thread when it is large.
async fn open_chunks(
    cipher: Arc<ObjectCipher>,
    key: &str,
    first: u64,
    n: u64,
    sealed: Bytes,
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < BLOCKING_OPEN {
        return seal::open_run(&cipher, key, first, n, &sealed);
    }
    let k = key.to_string();
    tokio::task::spawn_blocking(move || seal::open_run(&cipher, &k, first, n, &sealed))
        .await
        .unwrap_or_else(|e| Err(SealError::Random(format!("an opening thread stopped: {e}"))))
}

impl SealedObject {
    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stored (sealed) length.
    pub fn stored_len(&self) -> u64 {
        self.stored
    }

    /// Plaintext bytes `range` (clamped to the end), read with one request and authenticated;
    /// `None` when the object is gone. A stored object shorter than its size said (cut while
    /// it was read) fails authentication.
    pub async fn read(&self, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        let (start, end) = (range.start.min(self.len), range.end.min(self.len));
        if start >= end {
            return Ok(Some(Bytes::new()));
        }
        let (first, last) = (start / CHUNK as u64, (end - 1) / CHUNK as u64);
        let sealed_end = (chunk_offset(last) + (CHUNK + TAG) as u64).min(self.stored);
        let Some(raw) = self
            .inner
            .get_range(&self.key, chunk_offset(first)..sealed_end)
            .await?
        else {
            return Ok(None);
        };
        let n = chunk_count(self.len);
        let plain = open_chunks(self.cipher.clone(), &self.key, first, n, raw)
            .await
            .map_err(|e| unauthentic(self.repo.clone(), &self.key, e))?;
        let base = first * CHUNK as u64;
        let (from, to) = ((start - base) as usize, (end - base) as usize);
        if plain.len() < to {
            let e = SealError::BadLength(self.stored);
            return Err(unauthentic(self.repo.clone(), &self.key, e));
        }
        Ok(Some(Bytes::from(plain).slice(from..to)))
    }
}

impl EncryptedStorage {
    /// Reads the start of object `key`: its first `first` plaintext bytes (a multiple of the
    /// chunk size) with one request, and the whole object when it is shorter than that; for a
    /// larger one also its size (one HEAD), giving a [`SealedObject`] for the rest. `None` when
    /// the object does not exist.
    pub async fn open_first(&self, key: &str, first: u64) -> StorageResult<Option<SealedFirst>> {
        let first = first.max(CHUNK as u64) / CHUNK as u64 * CHUNK as u64;
        let inner = self.inner();
        let want = sealed_offset(first);
        let Some(raw) = inner.get_range(key, 0..want).await? else {
            return Ok(None);
        };
        let fail = |e| unauthentic(inner.location(), key, e);
        let salt = parse_header(&raw).map_err(fail)?;
        let cipher = Arc::new(ObjectCipher::new(self.data_key(), &salt));
        let body = raw.slice(SEAL_HEADER.min(raw.len())..);
        if (raw.len() as u64) < want {
            let len = plain_len(raw.len() as u64)
                .ok_or_else(|| fail(SealError::BadLength(raw.len() as u64)))?;
            let plain = open_chunks(cipher, key, 0, chunk_count(len), body)
                .await
                .map_err(fail)?;
            return Ok(Some(SealedFirst::Whole(Bytes::from(plain))));
        }
        let Some(meta) = inner.head(key).await? else {
            return Ok(None);
        };
        let len = plain_len(meta.size)
            .filter(|&l| l >= first)
            .ok_or_else(|| fail(SealError::BadLength(meta.size)))?;
        let plain = open_chunks(cipher.clone(), key, 0, chunk_count(len), body)
            .await
            .map_err(fail)?;
        let object = SealedObject {
            inner: inner.clone(),
            repo: inner.location(),
            key: key.to_string(),
            cipher,
            len,
            stored: meta.size,
        };
        Ok(Some(SealedFirst::Large {
            first: Bytes::from(plain),
            object,
        }))
    }

    /// Object `key` for ranged reads (its header and size read concurrently), `None` when it
    /// does not exist.
    pub async fn sealed_object(&self, key: &str) -> StorageResult<Option<SealedObject>> {
        let inner = self.inner();
        let (meta, header) = futures_util::future::join(
            inner.head(key),
            inner.get_range(key, 0..SEAL_HEADER as u64),
        )
        .await;
        let (Some(meta), Some(header)) = (meta?, header?) else {
            return Ok(None);
        };
        let fail = |e| unauthentic(inner.location(), key, e);
        let len = plain_len(meta.size).ok_or_else(|| fail(SealError::BadLength(meta.size)))?;
        let salt = parse_header(&header).map_err(fail)?;
        Ok(Some(SealedObject {
            inner: inner.clone(),
            repo: inner.location(),
            key: key.to_string(),
            cipher: Arc::new(ObjectCipher::new(self.data_key(), &salt)),
            len,
            stored: meta.size,
        }))
    }
}
