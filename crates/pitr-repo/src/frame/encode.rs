//! Encoding: a whole buffer, a file (ranges read and compressed on several threads while
//! another hashes them), or a stream fed in chunks ([`FrameEncoder`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

use super::layout::{header, trailer, HEADER_LEN, TRAILER_LEN};
use super::{Checksum, Compression, FrameSummary};

/// Smallest range of a file that [`encode_file`] reads and compresses on a thread of its own.
pub(super) const PARALLEL_CHUNK: usize = 4 << 20;

/// Encodes a whole buffer (small files: timeline histories, backup history files, metadata-
/// sized objects; WAL segments go through [`encode_file`]).
pub fn encode(data: &[u8], c: Compression) -> io::Result<(Vec<u8>, FrameSummary)> {
    let h = header(c);
    let payload = compress(data, c)?;
    let summary = FrameSummary {
        len: data.len() as u64,
        checksum: Checksum::of(data),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(&h);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&trailer(&h, summary));
    Ok((out, summary))
}

/// Encodes the first `len` bytes of `file` like [`encode`], without ever holding the
/// whole file in one buffer first: the file is split into one range per core, each range is
/// read (positioned reads) and compressed by its own thread, and a further thread hashes the
/// ranges in order as they arrive. Reading, hashing and compressing overlap, which matters for
/// `archive-push`: one process per 16 MB segment, where a plain read costs as much as the
/// compression of a piece.
pub fn encode_file(file: &File, len: u64, c: Compression) -> io::Result<(Vec<u8>, FrameSummary)> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    if len == 0 {
        return encode(&[], c);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pieces = match c {
        Compression::Zstd(_) => (len / PARALLEL_CHUNK).clamp(1, threads.max(1)),
        Compression::None | Compression::Lz4 => 1,
    };
    let size = len.div_ceil(pieces).max(1);
    let ranges: Vec<(usize, usize)> = (0..len)
        .step_by(size)
        .map(|start| (start, (start + size).min(len)))
        .collect();
    let (outputs, checksum) = std::thread::scope(|s| {
        let mut to_hasher = Vec::new();
        let mut workers = Vec::new();
        for &(start, end) in &ranges {
            let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(1);
            to_hasher.push(rx);
            workers.push(s.spawn(move || -> io::Result<Compressed> {
                let mut buf = pooled_buffer(end - start);
                file.read_exact_at(&mut buf, start as u64)?;
                let buf = Arc::new(buf);
                // The hasher may be gone only if it panicked; the join below reports that.
                let _ = tx.send(buf.clone());
                Ok((compress_pooled(&buf, c)?, buf))
            }));
        }
        let hasher = s.spawn(move || {
            let mut h = blake3::Hasher::new();
            let mut hashed = 0usize;
            for rx in to_hasher {
                match rx.recv() {
                    Ok(piece) => {
                        h.update(&piece);
                        hashed += piece.len();
                    }
                    // The worker failed to read; its own error is reported.
                    Err(_) => return None,
                }
            }
            Some((Checksum(*h.finalize().as_bytes()), hashed))
        });
        let outputs: Vec<io::Result<Compressed>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("compression thread panicked")))
            })
            .collect();
        (outputs, hasher.join().ok().flatten())
    });
    // The hasher is done with the read buffers: they go back to the pool.
    let outputs: Vec<io::Result<Vec<u8>>> = outputs
        .into_iter()
        .map(|o| {
            o.map(|(compressed, buf)| {
                if let Ok(buf) = Arc::try_unwrap(buf) {
                    return_buffer(buf);
                }
                compressed
            })
        })
        .collect();
    let h = header(c);
    let mut out = Vec::with_capacity(HEADER_LEN + len / 3 + TRAILER_LEN);
    out.extend_from_slice(&h);
    for o in outputs {
        out.extend_from_slice(&o?);
    }
    let (checksum, hashed) = checksum.ok_or_else(|| io::Error::other("checksum thread failed"))?;
    if hashed != len {
        return Err(io::Error::other(format!(
            "read {hashed} bytes, expected {len}"
        )));
    }
    let summary = FrameSummary {
        len: len as u64,
        checksum,
    };
    out.extend_from_slice(&trailer(&h, summary));
    Ok((out, summary))
}

/// A zstd compressor at `level`. Level 1 (the default) is zstd's level 1 with three parameters
/// tuned for WAL and relation pages, measured on pgbench WAL (`bench/README.md`): matches of 5
/// bytes instead of 6, a hash table of 2^17 entries instead of 2^13 and a 2 MiB window instead
/// of 512 KiB. That stores 17% fewer bytes than plain level 1 (4% fewer than level 3) for
/// about a third more CPU (level 3 costs two and a half times as much). Other levels are
/// zstd's own. Decoding needs nothing special: the parameters are in each zstd frame.
pub(crate) fn zstd_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::stream::raw::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    if level == 1 {
        c.set_parameter(CParameter::MinMatch(5))?;
        c.set_parameter(CParameter::HashLog(17))?;
        c.set_parameter(CParameter::WindowLog(21))?;
    }
    Ok(c)
}

/// A compressed range and the buffer it was read into (shared with the hasher until it is done).
type Compressed = (Vec<u8>, Arc<Vec<u8>>);

/// Read buffers and zstd compressors of [`encode_file`], kept for its next call in the same
/// process: the push-ahead worker encodes one segment after another, and fresh 8 MiB buffers
/// (zeroed, page-faulted in, unmapped again) and fresh compression contexts cost a fifth of its
/// CPU (perf, pgbench WAL). At most [`POOL_MAX`] of each are kept (64 MiB of buffers at most).
static READ_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static COMPRESSORS: Mutex<Vec<(i32, zstd::bulk::Compressor<'static>)>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 8;

/// A buffer of `len` bytes, from the pool when it has one (its old bytes are left: the caller
/// overwrites them all), else a new one.
fn pooled_buffer(len: usize) -> Vec<u8> {
    let mut buf = READ_BUFFERS
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    } else {
        buf.truncate(len);
    }
    buf
}

fn return_buffer(buf: Vec<u8>) {
    if let Ok(mut pool) = READ_BUFFERS.lock() {
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// [`compress`] with a zstd context from the pool (each compression is a complete frame of its
/// own: a reused context carries nothing from one to the next).
fn compress_pooled(data: &[u8], c: Compression) -> io::Result<Vec<u8>> {
    let Compression::Zstd(level) = c else {
        return compress(data, c);
    };
    let pooled = COMPRESSORS.lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|(l, _)| *l == level)?;
        Some(pool.swap_remove(i).1)
    });
    let mut compressor = match pooled {
        Some(z) => z,
        None => zstd_compressor(level)?,
    };
    let out = compressor.compress(data)?;
    if let Ok(mut pool) = COMPRESSORS.lock() {
        if pool.len() < POOL_MAX {
            pool.push((level, compressor));
        }
    }
    Ok(out)
}

/// Compresses `data` as one piece.
pub(super) fn compress(data: &[u8], c: Compression) -> io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd(level) => zstd_compressor(level)?.compress(data),
        Compression::Lz4 => {
            let mut out = Vec::with_capacity(data.len() / 2);
            let mut enc = lz4_flex::frame::FrameEncoder::new(&mut out);
            enc.write_all(data)?;
            enc.finish().map_err(io::Error::other)?;
            Ok(out)
        }
    }
}

/// Encodes one small buffer after another as complete frames (each exactly as [`encode`]
/// writes it), reusing one compression context: the members of a bundle, where a fresh zstd
/// context per 8 KB file would cost more than compressing it.
pub struct MemberEncoder {
    c: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl fmt::Debug for MemberEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberEncoder").field("c", &self.c).finish()
    }
}

impl MemberEncoder {
    /// An encoder for compression `c`.
    pub fn new(c: Compression) -> io::Result<MemberEncoder> {
        let zstd = match c {
            Compression::Zstd(level) => Some(zstd_compressor(level)?),
            Compression::None | Compression::Lz4 => None,
        };
        Ok(MemberEncoder { c, zstd })
    }

    /// Appends the frame of `data` to `out`; returns its summary.
    pub fn encode_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<FrameSummary> {
        let h = header(self.c);
        let payload = match self.zstd.as_mut() {
            Some(z) => z.compress(data)?,
            None => compress(data, self.c)?,
        };
        let summary = FrameSummary {
            len: data.len() as u64,
            checksum: Checksum::of(data),
        };
        out.reserve(HEADER_LEN + payload.len() + TRAILER_LEN);
        out.extend_from_slice(&h);
        out.extend_from_slice(&payload);
        out.extend_from_slice(&trailer(&h, summary));
        Ok(summary)
    }
}

/// Size of the pieces [`FrameEncoder`] compresses as separate zstd frames. A power of two (and a
/// multiple of BLAKE3's 1 KiB chunk), so that [`decode_to`](super::decode_to) can decompress and hash the pieces of
/// a large file on several threads: each piece is a BLAKE3 subtree.
pub const ZSTD_PIECE: usize = 8 << 20;

/// A zstd stream cut into [`ZSTD_PIECE`]-sized frames, each recording its decompressed size.
struct PiecedZstd {
    compressor: zstd::bulk::Compressor<'static>,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl PiecedZstd {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = (ZSTD_PIECE - self.pending.len()).min(data.len());
            let (now, rest) = data.split_at_checked(take).unwrap_or((data, &[]));
            self.pending.extend_from_slice(now);
            data = rest;
            if self.pending.len() == ZSTD_PIECE {
                self.compress_pending()?;
            }
        }
        Ok(())
    }

    fn compress_pending(&mut self) -> io::Result<()> {
        let piece = self.compressor.compress(&self.pending)?;
        self.out.extend_from_slice(&piece);
        self.pending.clear();
        Ok(())
    }
}

enum Enc {
    None(Vec<u8>),
    Zstd(Box<PiecedZstd>),
    Lz4(lz4_flex::frame::FrameEncoder<Vec<u8>>),
}

/// Streaming encoder: feed chunks with [`FrameEncoder::write`], collect output with
/// [`FrameEncoder::take_output`], and end with [`FrameEncoder::finish`]. A zstd payload is cut
/// into frames of [`ZSTD_PIECE`] original bytes.
pub struct FrameEncoder {
    header: [u8; HEADER_LEN],
    enc: Enc,
    hasher: blake3::Hasher,
    len: u64,
}

impl fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("len", &self.len)
            .finish()
    }
}

impl FrameEncoder {
    /// Starts a frame with compression `c`.
    pub fn new(c: Compression) -> io::Result<FrameEncoder> {
        let header = header(c);
        let start = header.to_vec();
        let enc = match c {
            Compression::None => Enc::None(start),
            Compression::Zstd(level) => Enc::Zstd(Box::new(PiecedZstd {
                compressor: zstd_compressor(level)?,
                pending: Vec::new(),
                out: start,
            })),
            Compression::Lz4 => Enc::Lz4(lz4_flex::frame::FrameEncoder::new(start)),
        };
        Ok(FrameEncoder {
            header,
            enc,
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    /// Adds original bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        match &mut self.enc {
            Enc::None(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            Enc::Zstd(z) => z.write(data),
            Enc::Lz4(e) => e.write_all(data),
        }
    }

    /// Takes the encoded bytes produced so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        match &mut self.enc {
            Enc::None(v) => std::mem::take(v),
            Enc::Zstd(z) => std::mem::take(&mut z.out),
            Enc::Lz4(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Ends the frame: the remaining encoded bytes (trailer included) and the summary.
    pub fn finish(self) -> io::Result<(Vec<u8>, FrameSummary)> {
        let mut out = match self.enc {
            Enc::None(v) => v,
            Enc::Zstd(mut z) => {
                // An empty input still gets one (empty) zstd frame, as `encode` writes.
                if !z.pending.is_empty() || self.len == 0 {
                    z.compress_pending()?;
                }
                z.out
            }
            Enc::Lz4(e) => e.finish().map_err(io::Error::other)?,
        };
        let summary = FrameSummary {
            len: self.len,
            checksum: Checksum(*self.hasher.finalize().as_bytes()),
        };
        out.extend_from_slice(&trailer(&self.header, summary));
        Ok((out, summary))
    }
}
