//! Parallel decoding of a payload that arrives as a stream (ranged reads of a large object):
//! [`decode_to`](super::decode_to)'s work, on a window of whole zstd pieces at a time, so that
//! memory holds a few pieces whatever the object's size.

use std::io::{self, Read};

use blake3::hazmat::{ChainingValue, HasherExt};
use zstd::bulk::Decompressor;

use super::decode::decode_payload;
use super::encode::ZSTD_PIECE;
use super::layout::CODE_ZSTD;
use super::parallel::{root_hash, Positioned, WriteAt};
use super::{Checksum, FrameError, FrameSummary};

/// Compressed bytes a piece may take beyond its original size (zstd's bound on incompressible
/// input is far below this).
const PIECE_SLACK: usize = 64 << 10;

/// Decodes the payload read from `payload` (compression `code`, `summary` from the frame's
/// trailer) into `out` on up to `threads` threads, verifying length and checksum, holding at
/// most `threads` compressed pieces and `threads` decoded pieces at a time. A zstd payload cut
/// in pieces of one power-of-two size (what pitr writes) is decoded a window of pieces at a
/// time, each piece hashed as a BLAKE3 subtree; any other payload is decoded in order. A
/// failure of `out` is [`FrameError::Write`]. On error, `out` may have received bytes.
pub fn decode_stream_to<R: Read>(
    code: u8,
    payload: R,
    summary: FrameSummary,
    threads: usize,
    out: &dyn WriteAt,
) -> Result<FrameSummary, FrameError> {
    let mut w = Windowed {
        payload,
        buf: Vec::new(),
        eof: false,
        window: threads.max(1) * (ZSTD_PIECE + PIECE_SLACK),
    };
    if code != CODE_ZSTD || threads < 2 {
        return w.sequential(code, summary, out);
    }
    w.fill()?;
    let first = w.frames(1).first().map(|f| w.content_size(f.clone()));
    let piece_len = match first {
        Some(Some(n))
            if n.is_power_of_two()
                && n >= blake3::CHUNK_LEN as u64
                && n <= ZSTD_PIECE as u64
                && n < summary.len =>
        {
            n
        }
        _ => return w.sequential(code, summary, out),
    };
    let mut cvs: Vec<ChainingValue> = Vec::new();
    let mut decoded = 0u64;
    loop {
        w.fill()?;
        let frames = w.frames(threads);
        if frames.is_empty() {
            if w.buf.is_empty() && w.eof {
                break;
            }
            return Err(FrameError::Decompress(
                "the payload ends inside a zstd piece".into(),
            ));
        }
        let mut batch = Vec::with_capacity(frames.len());
        for f in &frames {
            let len = w.content_size(f.clone()).ok_or_else(irregular)?;
            let last = f.end == w.buf.len() && w.eof;
            if len == 0 || len > piece_len || (len < piece_len && !last) {
                return Err(irregular());
            }
            batch.push((cvs.len() + batch.len(), f.clone(), len));
        }
        let results = decode_batch(&w.buf, &batch, piece_len, out);
        for r in results {
            cvs.push(r?);
        }
        decoded += batch.iter().map(|b| b.2).sum::<u64>();
        if decoded > summary.len {
            return Err(FrameError::LengthMismatch {
                expected: summary.len,
                actual: decoded,
            });
        }
        let used = frames.last().map_or(0, |f| f.end);
        w.buf.drain(..used);
    }
    if decoded != summary.len {
        return Err(FrameError::LengthMismatch {
            expected: summary.len,
            actual: decoded,
        });
    }
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

fn irregular() -> FrameError {
    FrameError::Decompress("the zstd pieces of the payload are not of one size".into())
}

/// The payload being read, and the window of it in memory.
struct Windowed<R> {
    payload: R,
    buf: Vec<u8>,
    eof: bool,
    /// How many compressed bytes to hold before looking for whole pieces.
    window: usize,
}

impl<R: Read> Windowed<R> {
    /// Reads until the window is full or the payload ends.
    fn fill(&mut self) -> Result<(), FrameError> {
        let mut chunk = vec![0u8; 1 << 20];
        while !self.eof && self.buf.len() < self.window {
            let want = chunk.len().min(self.window - self.buf.len());
            let got = chunk.get_mut(..want).unwrap_or_default();
            match self.payload.read(got) {
                Ok(0) => self.eof = true,
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Decompress(e.to_string())),
            }
        }
        Ok(())
    }

    /// Up to `max` whole zstd frames at the start of the window.
    fn frames(&self, max: usize) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut at = 0;
        while out.len() < max {
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match zstd::zstd_safe::find_frame_compressed_size(rest) {
                Ok(n) if n > 0 && n <= rest.len() => {
                    out.push(at..at + n);
                    at += n;
                }
                _ => break,
            }
        }
        out
    }

    /// The decompressed size a frame records, if it does.
    fn content_size(&self, f: std::ops::Range<usize>) -> Option<u64> {
        let frame = self.buf.get(f)?;
        zstd::zstd_safe::get_frame_content_size(frame).ok()?
    }

    /// Decodes what is in the window and the rest of the payload in order.
    fn sequential(
        self,
        code: u8,
        summary: FrameSummary,
        out: &dyn WriteAt,
    ) -> Result<FrameSummary, FrameError> {
        let mut w = Positioned {
            out,
            offset: 0,
            error: None,
        };
        let reader = io::Cursor::new(self.buf).chain(self.payload);
        decode_payload(code, reader, summary, &mut w).map_err(|e| match w.error.take() {
            Some(io) => FrameError::Write(io.to_string()),
            None => e,
        })
    }
}

/// Decodes each `(index, frame, len)` of `batch` (frames within `buf`) on its own thread,
/// writes it at `index * piece_len` and returns its chaining value, in order.
fn decode_batch(
    buf: &[u8],
    batch: &[(usize, std::ops::Range<usize>, u64)],
    piece_len: u64,
    out: &dyn WriteAt,
) -> Vec<Result<ChainingValue, FrameError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .iter()
            .map(|(i, f, len)| {
                let frame = buf.get(f.clone()).unwrap_or_default();
                let offset = *i as u64 * piece_len;
                s.spawn(move || decode_piece(frame, offset, *len, out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(FrameError::Decompress("decoding thread panicked".into()))
                })
            })
            .collect()
    })
}

/// One piece: decompressed (exactly `len` bytes), written at `offset`, hashed as a subtree.
fn decode_piece(
    frame: &[u8],
    offset: u64,
    len: u64,
    out: &dyn WriteAt,
) -> Result<ChainingValue, FrameError> {
    let mut dctx = Decompressor::new().map_err(|e| FrameError::Decompress(e.to_string()))?;
    let mut piece =
        vec![0u8; usize::try_from(len).map_err(|e| FrameError::Decompress(e.to_string()))?];
    match dctx.decompress_to_buffer(frame, &mut piece) {
        Ok(n) if n as u64 == len => {}
        Ok(n) => {
            return Err(FrameError::LengthMismatch {
                expected: len,
                actual: n as u64,
            })
        }
        Err(e) => return Err(FrameError::Decompress(e.to_string())),
    }
    out.write_at(offset, &piece)
        .map_err(|e| FrameError::Write(e.to_string()))?;
    Ok(blake3::Hasher::new()
        .set_input_offset(offset)
        .update(&piece)
        .finalize_non_root())
}
