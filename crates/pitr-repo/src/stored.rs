//! Reading a stored frame with memory bounded by a few pieces, whatever the object's size.
//!
//! An object that fits in [`FIRST_READ`] is read in one request and decoded from memory (one
//! round trip, as a whole-object GET). A larger one is read by ranged GETs of [`READ_PIECE`]
//! bytes: a task on the async runtime fetches them in order, at most [`PIECES_AHEAD`] ahead of
//! the decoder, which decompresses and hashes them on a blocking thread as they arrive. Memory
//! stays at the first read plus a few pieces and the decompressor's window (at most one zstd
//! piece), whatever the object's size. An encrypted repository's objects are read with the
//! same requests ([`EncryptedStorage::open_first`]: the sealed chunks of each range in one
//! read), their chunks opened on blocking threads as they arrive, so the decryption runs
//! beside the decompression rather than before it.
//!
//! Objects that are replaced while they are read (a streamed `.partial`) must be read whole
//! (one GET is atomic, a series of ranges is not): [`decode_stored`] is for objects that are
//! written once.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use std::ops::Range;

use bytes::Bytes;
use futures_util::StreamExt;
use pitr_storage::{Storage, StorageError};
use tokio::sync::mpsc;

use crate::crypt::{EncryptedStorage, SealedFirst, SealedObject};
use crate::frame::{self, FrameError, FrameSummary, HEADER_LEN, TRAILER_LEN};

/// The first read of an object: objects up to this size take one request.
pub const FIRST_READ: u64 = 8 << 20;
/// The size of each further ranged read.
pub const READ_PIECE: u64 = 4 << 20;
/// How many pieces the fetching task may hold ready before the decoder takes them.
pub const PIECES_AHEAD: usize = 1;
/// How many ranged reads of one object may be in flight (on an object store each waits for
/// the network): memory is at most this many pieces more.
pub const READS_IN_FLIGHT: usize = 2;

/// Why a stored frame could not be decoded.
#[derive(Debug)]
pub enum StoredError {
    /// The storage failed (or the object changed size while it was read).
    Storage(StorageError),
    /// The bytes are not a valid frame, or `out` failed ([`FrameError::Write`] is not used:
    /// the caller's writer keeps its own error).
    Frame(FrameError),
}

/// What [`decode_stored`] gives back: the writer (`None` only if the decoding thread was
/// cancelled, when the runtime shuts down) and the outcome.
pub type StoredRead<W> = (Option<W>, Result<Option<FrameSummary>, StoredError>);

/// A stored frame opened for reading: small, in memory; or large, its payload arriving in
/// pieces (see [`open_stored`]).
#[derive(Debug)]
pub enum Opened {
    /// The whole object (at most [`FIRST_READ`] bytes).
    Whole(Bytes),
    /// A larger object, read by ranged reads as its payload is consumed.
    Streamed(StreamedFrame),
}

/// A large stored frame being read: its header and trailer checked, its payload a [`Read`]
/// fed by a task doing ranged reads at most [`PIECES_AHEAD`] pieces ahead. The task stops when
/// this is dropped.
#[derive(Debug)]
pub struct StreamedFrame {
    /// Compression code of the payload (the header's).
    pub code: u8,
    /// What the trailer says.
    pub summary: FrameSummary,
    /// The object's stored size.
    pub stored_len: u64,
    /// The payload (read it to the end, then check [`StreamedFrame::storage_error`]).
    pub payload: Pieces,
    fetcher: tokio::task::AbortHandle,
}

impl StreamedFrame {
    /// The storage failure that cut the payload short, if any (report it rather than the
    /// decoder's error).
    pub fn storage_error(&self) -> Option<StorageError> {
        lock(&self.payload.error).take()
    }
}

impl Drop for StreamedFrame {
    fn drop(&mut self) {
        self.fetcher.abort();
    }
}

/// Opens the frame stored under `key`: one read when it is at most [`FIRST_READ`] bytes,
/// else its header and trailer (checked) and a payload fed by ranged reads. `None` when the
/// object does not exist. Must be called on a Tokio runtime (the fetching task is spawned on
/// it); the payload is read from a blocking thread.
///
/// In an encrypted repository ([`EncryptedStorage`]) the requests are the same (the sealed
/// chunks of each range in one read) and each range's chunks are opened on a blocking thread
/// as they arrive, while the decoder works on the previous range.
pub async fn open_stored(
    storage: &Arc<dyn Storage>,
    key: &str,
) -> Result<Option<Opened>, StoredError> {
    let sealed = storage
        .as_any()
        .and_then(|a| a.downcast_ref::<EncryptedStorage>());
    let (first, ranged, size, stored_len) = match sealed {
        Some(enc) => match enc
            .open_first(key, FIRST_READ)
            .await
            .map_err(StoredError::Storage)?
        {
            None => return Ok(None),
            Some(SealedFirst::Whole(b)) => return Ok(Some(Opened::Whole(b))),
            Some(SealedFirst::Large { first, object }) => {
                let (size, stored) = (object.len(), object.stored_len());
                (first, Ranged::Sealed(object), size, stored)
            }
        },
        None => {
            let Some(first) = storage
                .get_range(key, 0..FIRST_READ)
                .await
                .map_err(StoredError::Storage)?
            else {
                return Ok(None);
            };
            if (first.len() as u64) < FIRST_READ {
                return Ok(Some(Opened::Whole(first)));
            }
            let Some(meta) = storage.head(key).await.map_err(StoredError::Storage)? else {
                return Ok(None);
            };
            let ranged = Ranged::Plain(storage.clone(), key.to_string());
            (first, ranged, meta.size, meta.size)
        }
    };
    let Some(plan) = plan(&ranged, size, &first).await? else {
        return Ok(None);
    };
    let (tx, rx) = mpsc::channel(PIECES_AHEAD);
    let fetcher = tokio::spawn(fetch_pieces(ranged, FIRST_READ..plan.payload_end, tx));
    Ok(Some(Opened::Streamed(StreamedFrame {
        code: plan.code,
        summary: plan.summary,
        stored_len,
        payload: Pieces {
            current: first.slice(HEADER_LEN.min(first.len())..),
            left: plan.payload_end - HEADER_LEN as u64,
            rx,
            error: Arc::new(Mutex::new(None)),
        },
        fetcher: fetcher.abort_handle(),
    })))
}

/// Where the ranges of a large object come from.
#[derive(Clone)]
enum Ranged {
    /// Ranged reads of the storage.
    Plain(Arc<dyn Storage>, String),
    /// A sealed object's plaintext ranges, one request each.
    Sealed(SealedObject),
}

impl Ranged {
    async fn read(&self, range: Range<u64>) -> Result<Option<Bytes>, StorageError> {
        match self {
            Ranged::Plain(storage, key) => storage.get_range(key, range).await,
            Ranged::Sealed(object) => object.read(range).await,
        }
    }
}

/// Decodes the frame stored under `key` into `out`, verified (length and BLAKE3), with memory
/// bounded by a few pieces (see the module documentation). Returns `out` back with the
/// summary, `None` when the object does not exist. On error `out` may have received bytes:
/// write to a temporary destination and publish it only on success.
pub async fn decode_stored<W: Write + Send + 'static>(
    storage: &Arc<dyn Storage>,
    key: &str,
    mut out: W,
) -> StoredRead<W> {
    let streamed = match open_stored(storage, key).await {
        Ok(None) => return (Some(out), Ok(None)),
        Err(e) => return (Some(out), Err(e)),
        Ok(Some(Opened::Whole(obj))) => {
            let r = frame::decode_into(&obj, &mut out);
            return (Some(out), r.map(Some).map_err(StoredError::Frame));
        }
        Ok(Some(Opened::Streamed(s))) => s,
    };
    let joined = tokio::task::spawn_blocking(move || {
        let mut streamed = streamed;
        let (code, summary) = (streamed.code, streamed.summary);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame::decode_payload(code, &mut streamed.payload, summary, &mut out)
        }))
        .unwrap_or_else(|_| {
            Err(FrameError::Decompress(
                "the decoding thread panicked".into(),
            ))
        });
        let r = match streamed.storage_error() {
            Some(e) => Err(StoredError::Storage(e)),
            None => r.map(Some).map_err(StoredError::Frame),
        };
        (out, r)
    })
    .await;
    match joined {
        Ok((out, r)) => (Some(out), r),
        Err(e) => (
            None,
            Err(StoredError::Frame(FrameError::Decompress(format!(
                "the decoding thread stopped: {e}"
            )))),
        ),
    }
}

/// What a large object holds, from its size and trailer.
struct Plan {
    /// Where the payload ends (the trailer starts).
    payload_end: u64,
    code: u8,
    summary: FrameSummary,
}

/// The header (from `first`) and trailer (one more ranged read) of a large object of `size`
/// bytes (plaintext bytes, for a sealed one).
async fn plan(ranged: &Ranged, size: u64, first: &Bytes) -> Result<Option<Plan>, StoredError> {
    let short = || StoredError::Frame(FrameError::Truncated(usize::try_from(size).unwrap_or(0)));
    let payload_end = size
        .checked_sub(TRAILER_LEN as u64)
        .filter(|&e| e >= HEADER_LEN as u64 && size >= first.len() as u64)
        .ok_or_else(short)?;
    let Some(trailer) = ranged
        .read(payload_end..size)
        .await
        .map_err(StoredError::Storage)?
    else {
        return Ok(None);
    };
    let header = first.first_chunk::<HEADER_LEN>().ok_or_else(short)?;
    let trailer = trailer.first_chunk::<TRAILER_LEN>().ok_or_else(short)?;
    let (code, summary) = frame::ends(header, trailer).map_err(StoredError::Frame)?;
    Ok(Some(Plan {
        payload_end,
        code,
        summary,
    }))
}

/// Fetches `range` of the object in pieces of [`READ_PIECE`], [`READS_IN_FLIGHT`] requests at
/// a time, in order, into `tx`; stops at the first failure (sent) or when the decoder is gone
/// (the reads in flight are dropped with this task).
async fn fetch_pieces(
    ranged: Ranged,
    range: Range<u64>,
    tx: mpsc::Sender<Result<Bytes, Option<StorageError>>>,
) {
    let pieces = (range.start..range.end)
        .step_by(usize::try_from(READ_PIECE).unwrap_or(usize::MAX))
        .map(|at| at..(at + READ_PIECE).min(range.end));
    let mut reads = futures_util::stream::iter(pieces)
        .map(|r| {
            let ranged = &ranged;
            async move {
                let want = r.end - r.start;
                // Shorter than its size said: cut while it was read (objects read this way
                // are never replaced), reported as a truncated object by the decoder.
                match ranged.read(r).await {
                    Ok(Some(b)) if b.len() as u64 == want => Ok(b),
                    Ok(_) => Err(None),
                    Err(e) => Err(Some(e)),
                }
            }
        })
        .buffered(READS_IN_FLIGHT);
    while let Some(piece) = reads.next().await {
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            return;
        }
    }
}

/// The payload as the decoder reads it: the rest of the first read, then the pieces.
#[derive(Debug)]
pub struct Pieces {
    current: Bytes,
    /// Payload bytes not yet handed to the decoder.
    left: u64,
    rx: mpsc::Receiver<Result<Bytes, Option<StorageError>>>,
    /// The storage failure that ended the payload early.
    error: Arc<Mutex<Option<StorageError>>>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(Some(e))) => {
                    let msg = e.to_string();
                    lock(&self.error).get_or_insert(e);
                    return Err(io::Error::other(msg));
                }
                Some(Err(None)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object is shorter than its listed size",
                    ))
                }
                None => return Err(io::Error::other("the object's reader stopped")),
            }
        }
        let n = buf
            .len()
            .min(self.current.len())
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let (dst, src) = (buf.get_mut(..n), self.current.get(..n));
        if let (Some(dst), Some(src)) = (dst, src) {
            dst.copy_from_slice(src);
        }
        self.current = self.current.slice(n..);
        self.left -= n as u64;
        Ok(n)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::crypt::{DataKey, EncryptedStorage};
    use crate::frame::{Checksum, Compression};
    use pitr_storage::{LocalFs, PutMode};

    /// Bytes zstd barely compresses (so the stored object is large), reproducible.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    async fn decode(storage: &Arc<dyn Storage>, key: &str) -> Result<Vec<u8>, StoredError> {
        let (out, r) = decode_stored(storage, key, Vec::new()).await;
        let summary = r?.expect("object exists");
        let out = out.unwrap();
        assert_eq!(summary.len, out.len() as u64);
        assert_eq!(summary.checksum, Checksum::of(&out));
        Ok(out)
    }

    /// Every compression, sizes below, at and above the first read, plain and encrypted:
    /// decoded exactly; a flipped byte in the middle, a truncated object and a missing one are
    /// told apart.
    async fn round_trips(flavor: &str) {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(LocalFs::create(dir.path()).unwrap());
        let storage: Arc<dyn Storage> = match flavor {
            "encrypted" => Arc::new(EncryptedStorage::new(local.clone(), DataKey([7; 32]))),
            _ => local.clone(),
        };
        let big = FIRST_READ as usize + READ_PIECE as usize + 12_345;
        let codecs = match flavor {
            "encrypted" => vec![Compression::Zstd(1)],
            _ => vec![Compression::None, Compression::Zstd(1), Compression::Lz4],
        };
        for c in codecs {
            for len in [0, 1000, FIRST_READ as usize - 64, big] {
                let data = noise(len);
                let (obj, _) = frame::encode(&data, c).unwrap();
                let key = format!("o/{c}-{len}");
                storage
                    .put(&key, Bytes::from(obj.clone()), PutMode::Overwrite)
                    .await
                    .unwrap();
                assert!(decode(&storage, &key).await.unwrap() == data, "{key}");
                if obj.len() as u64 <= FIRST_READ || flavor == "encrypted" {
                    continue;
                }
                // Damage in a later piece and truncation are found by the ranged reads too.
                let mut bad = obj.clone();
                bad[obj.len() - READ_PIECE as usize] ^= 1;
                storage
                    .put(&key, Bytes::from(bad), PutMode::Overwrite)
                    .await
                    .unwrap();
                assert!(matches!(
                    decode(&storage, &key).await,
                    Err(StoredError::Frame(_))
                ));
                let cut = Bytes::from(obj[..obj.len() - 1000].to_vec());
                storage.put(&key, cut, PutMode::Overwrite).await.unwrap();
                assert!(matches!(
                    decode(&storage, &key).await,
                    Err(StoredError::Frame(_))
                ));
            }
        }
        let (_, r) = decode_stored(&storage, "o/absent", Vec::new()).await;
        assert!(matches!(r, Ok(None)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn round_trips_on_a_single_threaded_runtime() {
        round_trips("plain").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trips_encrypted() {
        round_trips("encrypted").await;
    }

    /// Through an encrypted repository, small and large objects (whose chunks are opened
    /// range by range as they are decoded) still refuse every tampering of the sealed object:
    /// a flipped byte or two chunks swapped in a later piece, the last chunk cut off or only
    /// its tag, and the object copied under another name; each is an authentication failure
    /// naming the object.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encrypted_objects_read_in_ranges_refuse_tampering() {
        use crate::crypt::seal::{chunk_offset, CHUNK, TAG};
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Storage> = Arc::new(LocalFs::create(dir.path()).unwrap());
        let enc: Arc<dyn Storage> = Arc::new(EncryptedStorage::new(raw.clone(), DataKey([5; 32])));
        let big = noise(FIRST_READ as usize + 2 * READ_PIECE as usize + 777);
        let small = noise(300_000);
        for (name, data) in [("big", &big), ("small", &small)] {
            let (obj, _) = frame::encode(data, Compression::None).unwrap();
            let key = format!("o/{name}");
            enc.put(&key, Bytes::from(obj), PutMode::Create)
                .await
                .unwrap();
            assert!(decode(&enc, &key).await.unwrap() == *data, "{key}");
            let sealed = raw.get(&key).await.unwrap().unwrap().to_vec();
            let n = (sealed.len() - chunk_offset(0) as usize).div_ceil(CHUNK + TAG) as u64;
            let c = |i: u64| chunk_offset(i) as usize;
            let late = n - 2;
            let mut flipped = sealed.clone();
            flipped[c(late) + 100] ^= 1;
            let mut swapped = sealed[..c(late - 1)].to_vec();
            swapped.extend_from_slice(&sealed[c(late)..c(late + 1)]);
            swapped.extend_from_slice(&sealed[c(late - 1)..c(late)]);
            swapped.extend_from_slice(&sealed[c(late + 1)..]);
            let cut = sealed[..c(n - 1)].to_vec();
            let tag_cut = sealed[..sealed.len() - TAG].to_vec();
            for (what, bad) in [
                ("flipped", flipped),
                ("swapped", swapped),
                ("cut", cut),
                ("tag cut", tag_cut),
            ] {
                raw.put(&key, Bytes::from(bad), PutMode::Overwrite)
                    .await
                    .unwrap();
                let r = decode(&enc, &key).await;
                assert!(
                    matches!(
                        &r,
                        Err(StoredError::Storage(StorageError::Unauthentic { .. }))
                    ),
                    "{key} {what}: {r:?}"
                );
            }
            let copy = format!("o/{name}-copy");
            raw.put(&copy, Bytes::from(sealed), PutMode::Create)
                .await
                .unwrap();
            let r = decode(&enc, &copy).await;
            assert!(
                matches!(&r, Err(StoredError::Storage(StorageError::Unauthentic { ref key, .. })) if *key == copy),
                "{copy}: {r:?}"
            );
        }
    }

    /// A read that fails midway is a storage error (retryable), not a damaged object.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_ranged_read_is_a_storage_error() {
        use pitr_storage::{Fault, FaultyStorage};
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(LocalFs::create(dir.path()).unwrap());
        let data = noise(FIRST_READ as usize + 100);
        let (obj, _) = frame::encode(&data, Compression::None).unwrap();
        local
            .put("o/x", Bytes::from(obj), PutMode::Create)
            .await
            .unwrap();
        // First read, head and trailer pass; the first ranged piece fails.
        let faulty: Arc<dyn Storage> =
            Arc::new(FaultyStorage::failing_after(local, Fault::Reads, 3));
        let (out, r) = decode_stored(&faulty, "o/x", Vec::new()).await;
        assert!(out.is_some());
        assert!(matches!(r, Err(StoredError::Storage(_))), "{r:?}");
    }
}

/// Decode speed of a large object: whole (one read, [`frame::decode_to`]) against streamed
/// (ranged reads, [`frame::decode_stream_to`]), both on two threads into a file. Run by hand:
/// `cargo test -p pitr-repo --release --lib stored::speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    use super::*;
    use crate::frame::{Compression, FrameEncoder, WriteAt};
    use pitr_storage::{LocalFs, PutMode};

    struct FileOut(std::fs::File);
    impl WriteAt for FileOut {
        fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write_all_at(data, offset)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn speed() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(LocalFs::create(dir.path().join("r")).unwrap());
        let mut enc = FrameEncoder::new(Compression::Zstd(1)).unwrap();
        let mut x = 1u64;
        for _ in 0..64 {
            let block: Vec<u8> = (0..4 << 20)
                .map(|i: u32| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    if i.is_multiple_of(4) {
                        (x >> 56) as u8
                    } else {
                        0
                    }
                })
                .collect();
            enc.write(&block).unwrap();
        }
        let (obj, _) = enc.finish().unwrap();
        let stored = obj.len();
        local
            .put("o/big", Bytes::from(obj), PutMode::Create)
            .await
            .unwrap();
        for round in 0..6 {
            let out = FileOut(std::fs::File::create(dir.path().join("out1")).unwrap());
            let t = Instant::now();
            let obj = local.get("o/big").await.unwrap().unwrap();
            frame::decode_to(&obj, 2, &out).unwrap();
            drop(obj);
            let whole = t.elapsed();
            let out = FileOut(std::fs::File::create(dir.path().join("out2")).unwrap());
            let t = Instant::now();
            let Some(Opened::Streamed(mut s)) = open_stored(&local, "o/big").await.unwrap() else {
                panic!("not streamed")
            };
            tokio::task::spawn_blocking(move || {
                frame::decode_stream_to(s.code, &mut s.payload, s.summary, 2, &out).unwrap();
            })
            .await
            .unwrap();
            let streamed = t.elapsed();
            eprintln!(
                "round {round}: 256 MB ({} MB stored): whole {whole:?}, streamed {streamed:?}",
                stored >> 20
            );
        }
    }
}
