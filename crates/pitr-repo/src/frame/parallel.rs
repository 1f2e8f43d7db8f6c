//! Parallel decoding of a zstd payload cut in pieces of one power-of-two size: each thread
//! decompresses a piece, writes it at its offset and hashes it as a BLAKE3 subtree; the
//! subtree hashes are merged into the object's checksum.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use zstd::bulk::Decompressor;

use super::decode::decode_into;
use super::layout::{parts, CODE_ZSTD};
use super::{Checksum, FrameError, FrameSummary};

/// A destination that takes decoded bytes at any offset, from several threads (a file, through
/// positioned writes).
pub trait WriteAt: Sync {
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// Decodes a frame into `out` like [`decode_into`], verifying length and checksum, but on up to
/// `threads` threads when the payload allows it: a zstd payload cut in frames that each record
/// their size, all of the same power-of-two size but the last (what [`FrameEncoder`](super::FrameEncoder) and
/// [`encode_file`](super::encode_file) on two cores write). Each thread decompresses a piece, hashes it as a BLAKE3
/// subtree and writes it at its offset; the subtree hashes are then merged into the file's
/// checksum. Other payloads are decoded in order on the calling thread. A failure of `out` is
/// reported as [`FrameError::Write`]. On error, `out` may have received bytes.
pub fn decode_to(
    obj: &[u8],
    threads: usize,
    out: &dyn WriteAt,
) -> Result<FrameSummary, FrameError> {
    let (code, payload, summary) = parts(obj)?;
    let pieces = match code {
        CODE_ZSTD if threads > 1 => zstd_pieces(payload, summary.len),
        _ => None,
    };
    let Some((piece_len, pieces)) = pieces else {
        let mut w = Positioned {
            out,
            offset: 0,
            error: None,
        };
        return decode_into(obj, &mut w).map_err(|e| match w.error.take() {
            Some(io) => FrameError::Write(io.to_string()),
            None => e,
        });
    };
    let shared = Shared {
        pieces: &pieces,
        piece_len,
        total: summary.len,
        out,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    };
    let results: Vec<Result<Vec<(usize, ChainingValue)>, FrameError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(pieces.len()))
            .map(|_| s.spawn(|| shared.work()))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(FrameError::Decompress("decoding thread panicked".into()))
                })
            })
            .collect()
    });
    let mut cvs: Vec<Option<ChainingValue>> = vec![None; pieces.len()];
    for r in results {
        for (i, cv) in r? {
            if let Some(slot) = cvs.get_mut(i) {
                *slot = Some(cv);
            }
        }
    }
    let cvs: Option<Vec<ChainingValue>> = cvs.into_iter().collect();
    let cvs = cvs.ok_or_else(|| FrameError::Decompress("a piece was not decoded".into()))?;
    let root = root_hash(&cvs, piece_len, summary.len)
        .ok_or_else(|| FrameError::Decompress("the pieces do not cover the object".into()))?;
    let actual = Checksum(*root.as_bytes());
    if actual != summary.checksum {
        return Err(FrameError::ChecksumMismatch {
            expected: summary.checksum,
            actual,
        });
    }
    Ok(summary)
}

/// The pieces of one payload and where they go, shared by the decoding threads.
struct Shared<'a> {
    pieces: &'a [Piece<'a>],
    piece_len: u64,
    /// The object's length.
    total: u64,
    out: &'a dyn WriteAt,
    /// Next piece to take.
    next: AtomicUsize,
    /// Set by the first thread that fails: the others stop.
    failed: AtomicBool,
}

impl Shared<'_> {
    /// One thread's work: pieces taken in turn until none is left or a thread failed. Returns
    /// the index and chaining value of each piece decoded.
    fn work(&self) -> Result<Vec<(usize, ChainingValue)>, FrameError> {
        let mut dctx = Decompressor::new().map_err(|e| FrameError::Decompress(e.to_string()))?;
        let mut buf = vec![0u8; self.piece_len as usize];
        let mut cvs = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&(frame, len)) = self.pieces.get(i) else {
                return Ok(cvs);
            };
            if self.failed.load(Ordering::Relaxed) {
                return Ok(cvs);
            }
            match self.piece(&mut dctx, &mut buf, i, frame, len) {
                Ok(cv) => cvs.push((i, cv)),
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// Decompresses piece `i` (`frame`, `len` bytes once decompressed) into `buf`, writes it
    /// at its offset and returns its chaining value.
    fn piece(
        &self,
        dctx: &mut Decompressor<'_>,
        buf: &mut [u8],
        i: usize,
        frame: &[u8],
        len: u64,
    ) -> Result<ChainingValue, FrameError> {
        let offset = i as u64 * self.piece_len;
        let piece = usize::try_from(len)
            .ok()
            .and_then(|l| buf.get_mut(..l))
            .ok_or_else(|| FrameError::Decompress(format!("zstd piece {i} is too large")))?;
        match dctx.decompress_to_buffer(frame, piece) {
            Ok(n) if n as u64 == len => {}
            Ok(n) => {
                return Err(FrameError::LengthMismatch {
                    expected: self.total,
                    actual: offset + n as u64,
                })
            }
            Err(e) => return Err(FrameError::Decompress(e.to_string())),
        }
        self.out
            .write_at(offset, piece)
            .map_err(|e| FrameError::Write(e.to_string()))?;
        Ok(blake3::Hasher::new()
            .set_input_offset(offset)
            .update(piece)
            .finalize_non_root())
    }
}

/// One zstd frame of a payload and its decompressed size.
type Piece<'a> = (&'a [u8], u64);

/// Splits a zstd payload into its frames when [`decode_to`] can decode them in parallel: at least
/// two frames, each recording its decompressed size, all of one power-of-two size of at least a
/// BLAKE3 chunk but the last (shorter, not empty), adding up to `total`. Returns that size and
/// each frame with its decompressed size.
pub(super) fn zstd_pieces(mut payload: &[u8], total: u64) -> Option<(u64, Vec<Piece<'_>>)> {
    let mut pieces = Vec::new();
    while !payload.is_empty() {
        let n = zstd::zstd_safe::find_frame_compressed_size(payload).ok()?;
        if n == 0 || n > payload.len() {
            return None;
        }
        let (frame, rest) = payload.split_at(n);
        let len = zstd::zstd_safe::get_frame_content_size(frame).ok()??;
        pieces.push((frame, len));
        payload = rest;
    }
    let piece_len = pieces.first()?.1;
    let (last, full) = pieces.split_last()?;
    let uniform = !full.is_empty()
        && piece_len.is_power_of_two()
        && piece_len >= blake3::CHUNK_LEN as u64
        && piece_len <= 1 << 30
        && full.iter().all(|&(_, len)| len == piece_len)
        && last.1 > 0
        && last.1 <= piece_len;
    let sum = piece_len * full.len() as u64 + last.1;
    (uniform && sum == total).then_some((piece_len, pieces))
}

/// The BLAKE3 hash of `len` bytes from the chaining values of its `piece_len`-sized subtrees
/// (BLAKE3's tree: the left subtree holds the largest power of two of chunks below the whole).
/// `None` when `cvs` are too few for `len`.
pub(super) fn root_hash(cvs: &[ChainingValue], piece_len: u64, len: u64) -> Option<blake3::Hash> {
    let (left, right) = children(cvs, piece_len, len)?;
    Some(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The chaining values of the two children of the parent node over `len` bytes.
fn children(
    cvs: &[ChainingValue],
    piece_len: u64,
    len: u64,
) -> Option<(ChainingValue, ChainingValue)> {
    let left = left_subtree_len(len);
    let (lcvs, rcvs) = cvs.split_at_checked(usize::try_from(left / piece_len).ok()?)?;
    Some((
        subtree(lcvs, piece_len, left)?,
        subtree(rcvs, piece_len, len - left)?,
    ))
}

/// The chaining value of the subtree over `len` bytes made of `cvs`' pieces.
fn subtree(cvs: &[ChainingValue], piece_len: u64, len: u64) -> Option<ChainingValue> {
    if len <= piece_len {
        return cvs.first().copied();
    }
    let (left, right) = children(cvs, piece_len, len)?;
    Some(merge_subtrees_non_root(&left, &right, Mode::Hash))
}

/// Adapts a [`WriteAt`] to the sequential decoder, remembering the first failure of `out`.
pub(super) struct Positioned<'a> {
    pub(super) out: &'a dyn WriteAt,
    pub(super) offset: u64,
    pub(super) error: Option<io::Error>,
}

impl Write for Positioned<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.out.write_at(self.offset, buf) {
            let kind = e.kind();
            let msg = e.to_string();
            self.error.get_or_insert(e);
            return Err(io::Error::new(kind, msg));
        }
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
