//! Encoding a file (a WAL segment) on several threads, streaming it through small buffers.
//!
//! The file is cut into pieces of one power-of-two size (the last may be shorter), one per
//! core. Each thread reads its piece through a small reused buffer, a [`FRAME`] at a time,
//! hashes it as one BLAKE3 subtree and compresses each buffer as a zstd frame that records its
//! size, so that the parallel decoder can split the payload again. Nothing holds a whole piece: in a fresh process (one
//! `archive-push` per segment) a piece-sized buffer costs a page fault and a zeroed page per
//! 4 KiB, which was a quarter of a push's CPU (perf, pgbench WAL), and the extra hashing
//! thread competed with the compression for the cores.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use blake3::hazmat::{ChainingValue, HasherExt};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

use super::encode::PARALLEL_CHUNK;
use super::layout::{header, trailer, HEADER_LEN, TRAILER_LEN};
use super::parallel::root_hash;
use super::{Checksum, Compression, FrameSummary};

/// Bytes read, hashed and compressed at a time by each thread, as one zstd frame of their own:
/// small enough to stay in the core's cache from the read to the compression, and compressed
/// in one pass from the read buffer (a streamed frame would copy its input into a window and
/// use zstd's slower external-dictionary matcher). A power of two, so the parallel decoder can
/// split the payload at every frame; 1.9% more bytes than 8 MiB frames on pgbench WAL.
const FRAME: usize = 1 << 20;

/// Encodes the first `len` bytes of `file` like [`encode`](super::encode), without ever holding
/// the whole file (or a whole piece) in memory when it is compressed with zstd. Reads are
/// positioned, so `file` is shared by the threads.
pub fn encode_file(file: &File, len: u64, c: Compression) -> io::Result<(Vec<u8>, FrameSummary)> {
    let total = usize::try_from(len).map_err(io::Error::other)?;
    let Compression::Zstd(level) = c else {
        // Uncompressed and lz4 objects are one piece: read whole.
        let mut data = vec![0u8; total];
        file.read_exact_at(&mut data, 0)?;
        return super::encode(&data, c);
    };
    if total == 0 {
        return super::encode(&[], c);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The smallest power of two that covers the file in at most `threads` pieces.
    let piece_len = total
        .div_ceil(threads.max(1))
        .max(PARALLEL_CHUNK)
        .next_power_of_two();
    let starts: Vec<usize> = (0..total).step_by(piece_len).collect();
    let results: Vec<io::Result<Piece>> = std::thread::scope(|s| {
        let workers: Vec<_> = starts
            .iter()
            .map(|&start| {
                let end = (start + piece_len).min(total);
                s.spawn(move || zstd_piece(file, start, end, level, total))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("compression thread panicked")))
            })
            .collect()
    });
    let mut pieces = results.into_iter();
    // The first piece's buffer begins with the header and has room for the others.
    let first = pieces
        .next()
        .ok_or_else(|| io::Error::other("no piece encoded"))??;
    let mut out = first.out;
    let mut cvs = vec![first.cv];
    let mut root = first.root;
    for p in pieces {
        let p = p?;
        out.extend_from_slice(&p.out);
        cvs.push(p.cv);
        root = None;
    }
    let checksum = match root {
        Some(whole) => whole,
        None => root_hash(&cvs, piece_len as u64, len)
            .ok_or_else(|| io::Error::other("the pieces do not cover the file"))?,
    };
    let summary = FrameSummary {
        len,
        checksum: Checksum(*checksum.as_bytes()),
    };
    out.extend_from_slice(&trailer(&header(c), summary));
    Ok((out, summary))
}

/// One compressed piece: its bytes (the first begins with the frame header), its subtree's
/// chaining value, and the whole file's hash when the piece is all of it.
struct Piece {
    out: Vec<u8>,
    cv: ChainingValue,
    root: Option<blake3::Hash>,
}

/// Reads and hashes `file[start..end]` (of a file of `total` bytes) as one BLAKE3 subtree and
/// compresses it as zstd frames of [`FRAME`] bytes, each recording its size.
fn zstd_piece(
    file: &File,
    start: usize,
    end: usize,
    level: i32,
    total: usize,
) -> io::Result<Piece> {
    let len = end - start;
    let first = start == 0;
    // Compressed WAL is a fifth to a third of its size: room for that, grown when needed.
    let mut out = Vec::with_capacity(HEADER_LEN + len / 3 + TRAILER_LEN);
    if first {
        out.extend_from_slice(&header(Compression::Zstd(level)));
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(start as u64);
    let mut z = Pooled::take(level)?;
    let mut buf = z.buf.take().unwrap_or_else(|| vec![0u8; FRAME]);
    let result = (|| -> io::Result<()> {
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len());
            let chunk = buf
                .get_mut(..n)
                .ok_or_else(|| io::Error::other("read buffer too small"))?;
            file.read_exact_at(chunk, at as u64)?;
            h.update(chunk);
            // One frame per chunk, compressed straight from the buffer into `out` (zstd's
            // one-pass path: all the input at once, room for its bound, `e_end`).
            out.reserve(zstd_safe::compress_bound(n));
            let mut input = InBuffer::around(chunk);
            let mut done = false;
            while !done {
                let pos = out.len();
                let mut output = OutBuffer::around_pos(&mut out, pos);
                done = z
                    .ctx
                    .compress_stream2(&mut output, &mut input, ZSTD_e_end)
                    .map_err(zstd_error)?
                    == 0;
                if !done {
                    out.reserve(FRAME);
                }
            }
            at += n;
        }
        Ok(())
    })();
    z.buf = Some(buf);
    z.give_back(result.is_ok());
    result?;
    let root = (first && end == total).then(|| h.finalize());
    Ok(Piece {
        out,
        cv: h.finalize_non_root(),
        root,
    })
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

/// A compression context and read buffer kept for the next piece of this process: the
/// push-ahead worker encodes one segment after another, and fresh contexts and buffers are
/// page-faulted in again each time.
struct Pooled {
    level: i32,
    ctx: CCtx<'static>,
    buf: Option<Vec<u8>>,
}

static POOL: Mutex<Vec<Pooled>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 8;

impl Pooled {
    /// A context for `level` from the pool, or a new one with pitr's parameters.
    fn take(level: i32) -> io::Result<Pooled> {
        let pooled = POOL.lock().ok().and_then(|mut pool| {
            let i = pool.iter().position(|p| p.level == level)?;
            Some(pool.swap_remove(i))
        });
        if let Some(p) = pooled {
            return Ok(p);
        }
        let mut ctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
        ctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zstd_error)?;
        for p in super::encode::zstd_parameters(level) {
            ctx.set_parameter(p).map_err(zstd_error)?;
        }
        Ok(Pooled {
            level,
            ctx,
            buf: None,
        })
    }

    /// Back to the pool, its session reset (a context whose frame failed midway is dropped).
    fn give_back(mut self, clean: bool) {
        if !clean || self.ctx.reset(ResetDirective::SessionOnly).is_err() {
            return;
        }
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_MAX {
                pool.push(self);
            }
        }
    }
}
