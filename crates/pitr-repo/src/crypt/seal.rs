//! The sealed object format: what an encrypted repository stores under every key.
//!
//! ```text
//! header (32 bytes): "PITRENC" 0x01 | salt (24 random bytes, new for every object written)
//! chunk 0          : AES-256-GCM(ciphertext of plaintext bytes [0, C)) | tag (16)
//! chunk 1          : …[C, 2C) | tag
//! …
//! last chunk       : the remaining 0..=C bytes | tag (an empty object has one empty chunk)
//! ```
//! `C` is [`CHUNK`] (64 KiB). Each object has its own AES key, `BLAKE3-keyed(data key,
//! "pitr object key v1" | salt)`, so the 96-bit nonce of chunk `i` can be the counter `i`. The
//! associated data of chunk `i` is `"pitr chunk v1" | last (u8) | i (u64 LE) | object key`: a
//! chunk moved to another position, a chunk from another object, an object renamed or copied
//! under another key, an object cut at a chunk boundary or extended, all fail authentication.
//! The chunk layout is fixed, so a plaintext byte range maps to a ciphertext range (ranged
//! reads) and chunks open independently (parallel decryption).

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

/// Magic at the start of every sealed object (includes the format version byte).
pub const SEAL_MAGIC: &[u8; 8] = b"PITRENC\x01";
/// Length of the random per-object salt.
pub const SALT_LEN: usize = 24;
/// Header length: magic and salt.
pub const SEAL_HEADER: usize = 8 + SALT_LEN;
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 << 10;
/// Authentication tag per chunk.
pub const TAG: usize = 16;
/// A full chunk as stored.
const SEALED_CHUNK: u64 = (CHUNK + TAG) as u64;

/// The repository's data key: 32 random bytes made at `pitr init`, stored wrapped.
#[derive(Clone)]
pub struct DataKey(pub(crate) [u8; 32]);

impl Drop for DataKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Why a sealed object does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a sealed object (an unencrypted one, or damaged at its start).
    #[error(
        "it does not start with pitr's encrypted-object header (written unencrypted, or damaged)"
    )]
    BadHeader,
    /// Its length cannot be a sealed object's: cut inside a chunk.
    #[error("its length ({0} bytes) cannot be an encrypted object's (truncated or extended)")]
    BadLength(u64),
    /// A chunk fails authentication.
    #[error("chunk {index} fails authentication (damaged, truncated, reordered, or copied from another object)")]
    Chunk {
        /// Index of the chunk.
        index: u64,
    },
    /// The random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(String),
}

/// Random bytes from the OS.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(b)
}

/// The cipher of one object: its key derived from the data key and the object's salt.
pub(crate) struct ObjectCipher {
    aead: LessSafeKey,
}

impl ObjectCipher {
    /// The cipher for the object whose header holds `salt`.
    ///
    /// AES-256-GCM as ring implements it (BoringSSL's assembly: AES-NI, VAES and carry-less
    /// multiplication where the CPU has them), the same bytes as RustCrypto's `aes-gcm` (which
    /// still wraps the data key, [`super::Keyring`]) at several times its speed: decrypting a
    /// restore's objects is what an encrypted repository costs (`bench/README.md`).
    pub(crate) fn new(dk: &DataKey, salt: &[u8; SALT_LEN]) -> ObjectCipher {
        let mut sub = blake3::Hasher::new_keyed(&dk.0)
            .update(b"pitr object key v1")
            .update(salt)
            .finalize()
            .as_bytes()
            .to_owned();
        let unbound = UnboundKey::new(&AES_256_GCM, &sub);
        zeroize::Zeroize::zeroize(&mut sub);
        // ring refuses only a key of the wrong length; `sub` is 32 bytes, AES-256's length.
        #[allow(clippy::expect_used)]
        let aead = LessSafeKey::new(unbound.expect("a 32-byte AES-256 key"));
        ObjectCipher { aead }
    }

    /// Encrypts chunk `index` of object `key` in place and appends its tag.
    pub(crate) fn seal(&self, key: &str, index: u64, last: bool, buf: &mut Vec<u8>) {
        let tag = self.seal_detached(key, index, last, buf);
        buf.extend_from_slice(&tag);
    }

    /// Encrypts chunk `index` of object `key` in place; returns its tag.
    fn seal_detached(&self, key: &str, index: u64, last: bool, buf: &mut [u8]) -> [u8; TAG] {
        // AES-GCM refuses only plaintexts over 64 GiB; a chunk is 64 KiB.
        let mut out = [0u8; TAG];
        if let Ok(tag) = self.aead.seal_in_place_separate_tag(
            nonce(index),
            Aad::from(aad(key, index, last)),
            buf,
        ) {
            out.copy_from_slice(tag.as_ref());
        }
        out
    }

    /// Decrypts chunk `index` of object `key` (ciphertext and tag) in place; returns the
    /// plaintext's length (the start of `buf`).
    #[cfg(test)]
    pub(crate) fn open(
        &self,
        key: &str,
        index: u64,
        last: bool,
        buf: &mut [u8],
    ) -> Result<usize, SealError> {
        let n = buf
            .len()
            .checked_sub(TAG)
            .ok_or(SealError::Chunk { index })?;
        let (data, tag) = buf.split_at_mut(n);
        self.open_detached(key, index, last, data, tag)?;
        Ok(n)
    }

    /// Decrypts chunk `index` of object `key` in place, checking `tag`.
    fn open_detached(
        &self,
        key: &str,
        index: u64,
        last: bool,
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), SealError> {
        let bad = SealError::Chunk { index };
        let tag = Tag::try_from(tag).map_err(|_| SealError::Chunk { index })?;
        self.aead
            .open_in_place_separate_tag(
                nonce(index),
                Aad::from(aad(key, index, last)),
                tag,
                data,
                0..,
            )
            .map(|_| ())
            .map_err(|_| bad)
    }
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(key: &str, index: u64, last: bool) -> Vec<u8> {
    let mut a = Vec::with_capacity(22 + key.len());
    a.extend_from_slice(b"pitr chunk v1");
    a.push(u8::from(last));
    a.extend_from_slice(&index.to_le_bytes());
    a.extend_from_slice(key.as_bytes());
    a
}

/// Number of chunks of a plaintext of `len` bytes (an empty one has one empty chunk).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK as u64).max(1)
}

/// Stored size of a plaintext of `len` bytes.
pub fn sealed_len(len: u64) -> u64 {
    SEAL_HEADER as u64 + len + chunk_count(len) * TAG as u64
}

/// Plaintext size of a sealed object of `stored` bytes; `None` when no plaintext seals to it.
pub fn plain_len(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(SEAL_HEADER as u64)?;
    let chunks = body.div_ceil(SEALED_CHUNK).max(1);
    let len = body.checked_sub(chunks * TAG as u64)?;
    (sealed_len(len) == stored).then_some(len)
}

/// Plaintext range of chunk `i` of an object of `len` bytes.
pub(crate) fn chunk_range(i: u64, len: u64) -> (u64, u64) {
    let start = i * CHUNK as u64;
    (start, (start + CHUNK as u64).min(len))
}

/// Stored offset of chunk `i`.
pub(crate) fn chunk_offset(i: u64) -> u64 {
    SEAL_HEADER as u64 + i * SEALED_CHUNK
}

/// A fresh header: magic and a new random salt.
pub(crate) fn new_header() -> Result<([u8; SEAL_HEADER], [u8; SALT_LEN]), SealError> {
    let salt = random::<SALT_LEN>()?;
    let mut h = [0u8; SEAL_HEADER];
    h[..8].copy_from_slice(SEAL_MAGIC);
    h[8..].copy_from_slice(&salt);
    Ok((h, salt))
}

/// The salt of a sealed object's header.
pub(crate) fn parse_header(obj: &[u8]) -> Result<[u8; SALT_LEN], SealError> {
    let h = obj
        .first_chunk::<SEAL_HEADER>()
        .ok_or(SealError::BadHeader)?;
    let (magic, salt) = h.split_first_chunk::<8>().ok_or(SealError::BadHeader)?;
    if magic != SEAL_MAGIC {
        return Err(SealError::BadHeader);
    }
    salt.first_chunk::<SALT_LEN>()
        .copied()
        .ok_or(SealError::BadHeader)
}

/// Plaintext bytes per thread above which sealing and opening use several threads.
const PARALLEL_MIN: usize = 4 << 20;

/// Seals `data` as object `key`: the whole stored object.
pub fn seal(dk: &DataKey, key: &str, data: &[u8]) -> Result<Vec<u8>, SealError> {
    let (header, salt) = new_header()?;
    let cipher = ObjectCipher::new(dk, &salt);
    let len = data.len() as u64;
    let n = chunk_count(len);
    let mut out = vec![0u8; usize::try_from(sealed_len(len)).unwrap_or(usize::MAX)];
    let (h, body) = out.split_at_mut(SEAL_HEADER);
    h.copy_from_slice(&header);
    in_place(body, CHUNK + TAG, n, data.len(), |i, sealed| {
        let (s, e) = chunk_range(i, len);
        let plain = data
            .get(s as usize..e as usize)
            .ok_or(SealError::Chunk { index: i })?;
        let (buf, tag) = sealed
            .split_at_mut_checked(plain.len())
            .ok_or(SealError::Chunk { index: i })?;
        buf.copy_from_slice(plain);
        let t = cipher.seal_detached(key, i, i + 1 == n, buf);
        tag.copy_from_slice(&t);
        Ok(())
    })?;
    Ok(out)
}

/// Opens a whole sealed object stored under `key`: the plaintext, authenticated.
pub fn open(dk: &DataKey, key: &str, obj: &[u8]) -> Result<Vec<u8>, SealError> {
    let salt = parse_header(obj)?;
    let len = plain_len(obj.len() as u64).ok_or(SealError::BadLength(obj.len() as u64))?;
    let cipher = ObjectCipher::new(dk, &salt);
    let body = obj.get(SEAL_HEADER..).unwrap_or_default();
    open_run(&cipher, key, 0, chunk_count(len), body)
}

/// Opens a run of consecutive sealed chunks of object `key` (of `n` chunks) as stored, the
/// first being chunk `first`: their plaintext, authenticated, the chunks opened on several
/// threads when the run is large. Only chunk `n - 1` may be shorter than a full chunk; a run
/// cut inside a chunk, or reaching past chunk `n - 1`, fails.
pub(crate) fn open_run(
    cipher: &ObjectCipher,
    key: &str,
    first: u64,
    n: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    let count = (sealed.len() as u64).div_ceil(SEALED_CHUNK).max(1);
    let bad = SealError::Chunk {
        index: first + count - 1,
    };
    let len = sealed
        .len()
        .checked_sub(usize::try_from(count).unwrap_or(usize::MAX) * TAG)
        .ok_or_else(|| bad.clone())?;
    let short = !(sealed.len() as u64).is_multiple_of(SEALED_CHUNK);
    if first + count > n || (short && first + count != n) {
        return Err(bad);
    }
    let mut out = vec![0u8; len];
    let open_chunk = |j: u64, plain: &mut [u8]| {
        let i = first + j;
        let start = usize::try_from(j * SEALED_CHUNK).unwrap_or(usize::MAX);
        let sealed = sealed
            .get(start..start + plain.len() + TAG)
            .ok_or(SealError::Chunk { index: i })?;
        let (data, tag) = sealed.split_at(plain.len());
        plain.copy_from_slice(data);
        cipher.open_detached(key, i, i + 1 == n, plain, tag)
    };
    if len == 0 {
        open_chunk(0, &mut [])?;
    } else {
        in_place(&mut out, CHUNK, count, len, open_chunk)?;
    }
    Ok(out)
}

/// Stored offset of plaintext byte `at`, a multiple of [`CHUNK`]: where its chunk starts.
pub(crate) fn sealed_offset(at: u64) -> u64 {
    chunk_offset(at / CHUNK as u64)
}

/// Runs `f(i, piece)` over the `stride`-sized pieces of `buf` (chunk `i` of `n`), the pieces cut
/// in contiguous runs, one per thread when the object (`len` plaintext bytes) is large enough to
/// gain from it. Each piece is written in place: no copy beyond the one `f` makes.
fn in_place<F>(buf: &mut [u8], stride: usize, n: u64, len: usize, f: F) -> Result<(), SealError>
where
    F: Fn(u64, &mut [u8]) -> Result<(), SealError> + Sync,
{
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = (len / PARALLEL_MIN).clamp(1, cores) as u64;
    let per = usize::try_from(n.div_ceil(threads))
        .unwrap_or(usize::MAX)
        .max(1);
    let run = |first: u64, part: &mut [u8]| -> Result<(), SealError> {
        for (j, piece) in part.chunks_mut(stride).enumerate() {
            f(first + j as u64, piece)?;
        }
        Ok(())
    };
    if threads <= 1 {
        return run(0, buf);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks_mut(stride.saturating_mul(per))
            .enumerate()
            .map(|(k, part)| {
                let run = &run;
                s.spawn(move || run((k * per) as u64, part))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(SealError::Random("a sealing thread panicked".into())))
        })
    })
}

/// Streaming sealer for uploads: feed plaintext, take sealed bytes as chunks complete.
pub(crate) struct Sealer {
    cipher: ObjectCipher,
    key: String,
    next: u64,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl Sealer {
    /// Starts object `key`; its header is the first output.
    pub(crate) fn new(dk: &DataKey, key: &str) -> Result<Sealer, SealError> {
        let (header, salt) = new_header()?;
        Ok(Sealer {
            cipher: ObjectCipher::new(dk, &salt),
            key: key.to_string(),
            next: 0,
            pending: Vec::with_capacity(CHUNK),
            out: header.to_vec(),
        })
    }

    /// Adds plaintext. A full chunk is sealed only once a byte after it arrives, since
    /// whether it is the last is part of its authentication.
    pub(crate) fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.pending.len() == CHUNK {
                self.seal_pending(false);
            }
            let take = (CHUNK - self.pending.len()).min(data.len());
            let (now, rest) = data.split_at(take);
            self.pending.extend_from_slice(now);
            data = rest;
        }
    }

    fn seal_pending(&mut self, last: bool) {
        let mut buf = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        self.cipher.seal(&self.key, self.next, last, &mut buf);
        self.out.extend_from_slice(&buf);
        self.next += 1;
    }

    /// Sealed bytes produced so far.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Seals the last chunk; returns the remaining sealed bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.seal_pending(true);
        self.out
    }
}

#[cfg(test)]
mod ring_matches_rustcrypto {
    #![allow(clippy::unwrap_used)]
    use aes_gcm::aead::{Aead, Payload};
    use aes_gcm::KeyInit;

    use super::*;

    /// Objects sealed before chunks went through ring (by RustCrypto's `aes-gcm`) open, and
    /// the other way round: the same AES-256-GCM bytes.
    #[test]
    fn chunks_are_the_same_aes_256_gcm_bytes() {
        let dk = DataKey([9u8; 32]);
        let salt = [3u8; SALT_LEN];
        let sub = blake3::Hasher::new_keyed(&dk.0)
            .update(b"pitr object key v1")
            .update(&salt)
            .finalize();
        let rc = aes_gcm::Aes256Gcm::new(sub.as_bytes().into());
        let cipher = ObjectCipher::new(&dk, &salt);
        let plain: Vec<u8> = (0..CHUNK as u32).map(|i| (i * 7 % 251) as u8).collect();
        for (index, last) in [(0u64, false), (5, true)] {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&index.to_le_bytes());
            let aad = aad("c/wal/x", index, last);
            let theirs = rc
                .encrypt(
                    (&n).into(),
                    Payload {
                        msg: &plain,
                        aad: &aad,
                    },
                )
                .unwrap();
            let mut ours = plain.clone();
            cipher.seal("c/wal/x", index, last, &mut ours);
            assert_eq!(ours, theirs);
            let len = cipher.open("c/wal/x", index, last, &mut ours).unwrap();
            assert_eq!(&ours[..len], &plain[..]);
            assert!(cipher
                .open("c/wal/x", index, !last, &mut theirs.clone())
                .is_err());
        }
    }
}
