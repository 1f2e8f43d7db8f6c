//! Parallel decoding of a payload that arrives as a stream (ranged reads of a large object):
//! [`decode_to`](super::decode_to)'s work, on a window of whole zstd pieces at a time, so that
//! memory holds a few pieces whatever the object's size.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

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
/// trailer) into `out` on up to `threads` threads, verifying length and checksum, holding a
/// few compressed and `threads` decoded pieces at a time. A zstd payload cut in pieces of one
/// power-of-two size (what pitr writes) is cut as it arrives and its pieces handed to the
/// threads, each piece hashed as a BLAKE3 subtree; any other payload is decoded in order. A
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
        window: ZSTD_PIECE + PIECE_SLACK,
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
    let threads_n = threads;
    // One piece waits while the threads work on theirs: enough to keep them busy.
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(1);
    let jobs_rx = Mutex::new(jobs_rx);
    let failed = AtomicBool::new(false);
    let (cvs, decoded) = std::thread::scope(|sc| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<ChainingValue, FrameError>)>();
        for _ in 0..threads_n {
            let (jobs_rx, done_tx, failed) = (&jobs_rx, done_tx.clone(), &failed);
            sc.spawn(move || worker(jobs_rx, done_tx, failed, piece_len, out));
        }
        drop(done_tx);
        let produced = w.produce(piece_len, &jobs_tx, &failed);
        drop(jobs_tx);
        let mut cvs: Vec<Option<ChainingValue>> = Vec::new();
        let mut first_error = None;
        for (i, r) in done_rx {
            match r {
                Ok(cv) => {
                    if cvs.len() <= i {
                        cvs.resize(i + 1, None);
                    }
                    if let Some(slot) = cvs.get_mut(i) {
                        *slot = Some(cv);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let decoded = produced?;
        if let Some(e) = first_error {
            return Err(e);
        }
        let cvs: Option<Vec<ChainingValue>> = cvs.into_iter().collect();
        let cvs = cvs.ok_or_else(|| FrameError::Decompress("a piece was not decoded".into()))?;
        Ok((cvs, decoded))
    })?;
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

/// One piece to decode: its index, its compressed bytes and its decompressed length.
type Job = (usize, Vec<u8>, u64);

/// A decoding thread: takes pieces until there are none (or one failed), decodes each into its
/// buffer, writes it at its offset and sends back its chaining value.
fn worker(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: mpsc::Sender<(usize, Result<ChainingValue, FrameError>)>,
    failed: &AtomicBool,
    piece_len: u64,
    out: &dyn WriteAt,
) {
    let mut dctx = match Decompressor::new() {
        Ok(d) => d,
        Err(e) => {
            failed.store(true, Ordering::Relaxed);
            let _ = done.send((usize::MAX, Err(FrameError::Decompress(e.to_string()))));
            return;
        }
    };
    let mut buf = vec![0u8; usize::try_from(piece_len).unwrap_or(0)];
    loop {
        let job = jobs.lock().map(|rx| rx.recv());
        let Ok(Ok((i, frame, len))) = job else {
            return;
        };
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        let r = decode_piece(&mut dctx, &mut buf, &frame, i as u64 * piece_len, len, out);
        if r.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        if done.send((i, r)).is_err() {
            return;
        }
    }
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
    /// Reads until the window is full or the payload ends (straight into the window).
    fn fill(&mut self) -> Result<(), FrameError> {
        while !self.eof && self.buf.len() < self.window {
            let at = self.buf.len();
            self.buf.resize(self.window, 0);
            let got = self
                .payload
                .read(self.buf.get_mut(at..).unwrap_or_default());
            match got {
                Ok(0) => {
                    self.buf.truncate(at);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(at + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(at),
                Err(e) => {
                    self.buf.truncate(at);
                    return Err(FrameError::Decompress(e.to_string()));
                }
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

    /// Reads the payload, cuts it into its zstd pieces and hands each to the decoding threads
    /// (waiting while they are busy: at most a few pieces are in memory); returns the bytes
    /// the pieces decode to. Stops early once a thread failed.
    fn produce(
        &mut self,
        piece_len: u64,
        jobs: &mpsc::SyncSender<Job>,
        failed: &AtomicBool,
    ) -> Result<u64, FrameError> {
        let (mut index, mut decoded) = (0usize, 0u64);
        loop {
            if failed.load(Ordering::Relaxed) {
                return Ok(decoded);
            }
            self.fill()?;
            let frames = self.frames(usize::MAX);
            if frames.is_empty() {
                if self.buf.is_empty() && self.eof {
                    return Ok(decoded);
                }
                return Err(FrameError::Decompress(
                    "the payload ends inside a zstd piece".into(),
                ));
            }
            for f in &frames {
                let len = self.content_size(f.clone()).ok_or_else(irregular)?;
                let last = f.end == self.buf.len() && self.eof;
                if len == 0 || len > piece_len || (len < piece_len && !last) {
                    return Err(irregular());
                }
                let frame = self.buf.get(f.clone()).unwrap_or_default().to_vec();
                if jobs.send((index, frame, len)).is_err() {
                    return Ok(decoded);
                }
                index += 1;
                decoded += len;
            }
            let used = frames.last().map_or(0, |f| f.end);
            self.buf.drain(..used);
        }
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

/// One piece: decompressed into `buf` (exactly `len` bytes), written at `offset`, hashed as a
/// subtree.
fn decode_piece(
    dctx: &mut Decompressor<'_>,
    buf: &mut [u8],
    frame: &[u8],
    offset: u64,
    len: u64,
    out: &dyn WriteAt,
) -> Result<ChainingValue, FrameError> {
    let piece = usize::try_from(len)
        .ok()
        .and_then(|l| buf.get_mut(..l))
        .ok_or_else(irregular)?;
    match dctx.decompress_to_buffer(frame, piece) {
        Ok(n) if n as u64 == len => {}
        Ok(n) => {
            return Err(FrameError::LengthMismatch {
                expected: len,
                actual: n as u64,
            })
        }
        Err(e) => return Err(FrameError::Decompress(e.to_string())),
    }
    out.write_at(offset, piece)
        .map_err(|e| FrameError::Write(e.to_string()))?;
    Ok(blake3::Hasher::new()
        .set_input_offset(offset)
        .update(piece)
        .finalize_non_root())
}
