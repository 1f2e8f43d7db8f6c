//! The framing of every data object in a repository (WAL files, backup files).
//!
//! ```text
//! header  (16 bytes): "PITRFRM" 0x01 | compression u8 | flags u8 | 6 reserved zero bytes
//! payload           : the original bytes, compressed as the header says
//! trailer (48 bytes): original length u64 LE | BLAKE3 of the original bytes (32)
//!                     | CRC-32C of header + the 40 bytes before it, u32 LE | "PEND"
//! ```
//! The trailer lets a writer stream (length and checksum are known only at the end) and lets a
//! reader tell an identical re-push without decompressing. Every read verifies the decompressed
//! length and BLAKE3 checksum: a flipped byte anywhere is detected.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Header magic (includes the frame format version byte).
pub const MAGIC: &[u8; 8] = b"PITRFRM\x01";
/// Trailer magic.
pub const END_MAGIC: &[u8; 4] = b"PEND";
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Trailer length.
pub const TRAILER_LEN: usize = 48;
/// Largest original size a frame may claim (guards allocations when decoding).
pub const MAX_ORIGINAL_LEN: u64 = 1 << 40;

/// Compression of a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// Zstandard at the given level (1–19).
    Zstd(i32),
    /// LZ4 frame format.
    Lz4,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
            Compression::Lz4 => 2,
        }
    }

    /// Parses `zstd`, `zstd:LEVEL`, `lz4` or `none`.
    pub fn parse(s: &str) -> Option<Compression> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" | "zst" => Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            other => {
                let level = other
                    .strip_prefix("zstd:")
                    .or_else(|| other.strip_prefix("zst:"))?
                    .parse()
                    .ok()?;
                (1..=19)
                    .contains(&level)
                    .then_some(Compression::Zstd(level))
            }
        }
    }
}

/// Default zstd level: fast, and within a few percent of level 3's ratio on WAL.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::Lz4 => write!(f, "lz4"),
        }
    }
}

/// BLAKE3 checksum of an object's original bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// Checksum of `data`.
    pub fn of(data: &[u8]) -> Checksum {
        Checksum(*blake3::hash(data).as_bytes())
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Checksum> {
        let v = hex::decode(s).ok()?;
        Some(Checksum(v.try_into().ok()?))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

/// What a frame says about its original bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Original length.
    pub len: u64,
    /// BLAKE3 of the original bytes.
    pub checksum: Checksum,
}

/// A frame that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Too short to hold a header and trailer.
    #[error("object is truncated ({0} bytes)")]
    Truncated(usize),
    /// Not a pitr frame.
    #[error(
        "object does not start with pitr's frame header (wrong file, or an unsupported format)"
    )]
    BadMagic,
    /// Header or trailer damaged.
    #[error("object header/trailer checksum mismatch (damaged or truncated)")]
    BadFrameCrc,
    /// Unknown compression code.
    #[error("object uses unknown compression code {0}")]
    UnknownCompression(u8),
    /// Payload does not decompress.
    #[error("object payload does not decompress: {0}")]
    Decompress(String),
    /// Decompressed length differs from the trailer.
    #[error("object decompresses to {actual} bytes, expected {expected}")]
    LengthMismatch {
        /// Length the trailer records.
        expected: u64,
        /// Length obtained.
        actual: u64,
    },
    /// Decompressed bytes have another checksum.
    #[error("object content checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// Checksum the trailer records.
        expected: Checksum,
        /// Checksum obtained.
        actual: Checksum,
    },
    /// Writing the decoded bytes failed.
    #[error("cannot write decoded bytes: {0}")]
    Write(String),
}

fn header(c: Compression) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = c.code();
    h
}

fn trailer(header: &[u8; HEADER_LEN], s: FrameSummary) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&s.len.to_le_bytes());
    t[8..40].copy_from_slice(&s.checksum.0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(header), &t[..40]);
    t[40..44].copy_from_slice(&crc.to_le_bytes());
    t[44..48].copy_from_slice(END_MAGIC);
    t
}

/// Smallest range of a file that [`encode_file`] reads and compresses on a thread of its own.
const PARALLEL_CHUNK: usize = 4 << 20;

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
            workers.push(s.spawn(move || -> io::Result<Vec<u8>> {
                let mut buf = vec![0u8; end - start];
                file.read_exact_at(&mut buf, start as u64)?;
                let buf = Arc::new(buf);
                // The hasher may be gone only if it panicked; the join below reports that.
                let _ = tx.send(buf.clone());
                compress(&buf, c)
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
        let outputs: Vec<io::Result<Vec<u8>>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("compression thread panicked")))
            })
            .collect();
        (outputs, hasher.join().ok().flatten())
    });
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

/// Compresses `data` as one piece.
fn compress(data: &[u8], c: Compression) -> io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd(level) => zstd::bulk::compress(data, level),
        Compression::Lz4 => {
            let mut out = Vec::with_capacity(data.len() / 2);
            let mut enc = lz4_flex::frame::FrameEncoder::new(&mut out);
            enc.write_all(data)?;
            enc.finish().map_err(io::Error::other)?;
            Ok(out)
        }
    }
}

/// Size of the pieces [`FrameEncoder`] compresses as separate zstd frames. A power of two (and a
/// multiple of BLAKE3's 1 KiB chunk), so that [`decode_to`] can decompress and hash the pieces of
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
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
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
                compressor: zstd::bulk::Compressor::new(level)?,
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

/// Reads and checks a frame's header and trailer without decompressing.
pub fn summary(obj: &[u8]) -> Result<FrameSummary, FrameError> {
    parts(obj).map(|(_, _, s)| s)
}

fn parts(obj: &[u8]) -> Result<(u8, &[u8], FrameSummary), FrameError> {
    if obj.len() < HEADER_LEN + TRAILER_LEN {
        if obj.len() >= 8 && &obj[..8] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        return Err(FrameError::Truncated(obj.len()));
    }
    let (h, rest) = obj.split_at(HEADER_LEN);
    if &h[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let (payload, t) = rest.split_at(rest.len() - TRAILER_LEN);
    if &t[44..48] != END_MAGIC {
        return Err(FrameError::BadFrameCrc);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(h), &t[..40]);
    if crc.to_le_bytes() != t[40..44] {
        return Err(FrameError::BadFrameCrc);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&t[..8]);
    let mut sum = [0u8; 32];
    sum.copy_from_slice(&t[8..40]);
    let summary = FrameSummary {
        len: u64::from_le_bytes(len),
        checksum: Checksum(sum),
    };
    if summary.len > MAX_ORIGINAL_LEN {
        return Err(FrameError::BadFrameCrc);
    }
    Ok((h[8], payload, summary))
}

/// A writer that hashes and counts what passes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    hasher: blake3::Hasher,
    len: u64,
    limit: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame decompresses past its recorded length",
            ));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes a frame into `out`, streaming, and verifies length and checksum. On error, `out` may
/// have received bytes: callers write to a temporary destination and publish only on success.
pub fn decode_into<W: Write>(obj: &[u8], out: &mut W) -> Result<FrameSummary, FrameError> {
    let (code, payload, summary) = parts(obj)?;
    let mut w = Hashing {
        inner: out,
        hasher: blake3::Hasher::new(),
        len: 0,
        limit: summary.len,
    };
    let res = match code {
        0 => w.write_all(payload),
        1 => zstd::stream::copy_decode(payload, &mut w),
        2 => io::copy(&mut lz4_flex::frame::FrameDecoder::new(payload), &mut w).map(|_| ()),
        other => return Err(FrameError::UnknownCompression(other)),
    };
    if let Err(e) = res {
        if w.len > summary.len || e.kind() == io::ErrorKind::InvalidData && w.len >= summary.len {
            return Err(FrameError::LengthMismatch {
                expected: summary.len,
                actual: w.len,
            });
        }
        return Err(FrameError::Decompress(e.to_string()));
    }
    if w.len != summary.len {
        return Err(FrameError::LengthMismatch {
            expected: summary.len,
            actual: w.len,
        });
    }
    let actual = Checksum(*w.hasher.finalize().as_bytes());
    if actual != summary.checksum {
        return Err(FrameError::ChecksumMismatch {
            expected: summary.checksum,
            actual,
        });
    }
    Ok(summary)
}

/// A destination that takes decoded bytes at any offset, from several threads (a file, through
/// positioned writes).
pub trait WriteAt: Sync {
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// Decodes a frame into `out` like [`decode_into`], verifying length and checksum, but on up to
/// `threads` threads when the payload allows it: a zstd payload cut in frames that each record
/// their size, all of the same power-of-two size but the last (what [`FrameEncoder`] and
/// [`encode_file`] on two cores write). Each thread decompresses a piece, hashes it as a BLAKE3
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
        1 if threads > 1 => zstd_pieces(payload, summary.len),
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
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<Vec<(usize, ChainingValue)>, FrameError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(pieces.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut dctx = zstd::bulk::Decompressor::new()
                        .map_err(|e| FrameError::Decompress(e.to_string()))?;
                    let mut buf = vec![0u8; piece_len as usize];
                    let mut cvs = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= pieces.len() || failed.load(Ordering::Relaxed) {
                            return Ok(cvs);
                        }
                        let (frame, len) = pieces[i];
                        let offset = i as u64 * piece_len;
                        let piece = &mut buf[..len as usize];
                        let res = match dctx.decompress_to_buffer(frame, piece) {
                            Ok(n) if n as u64 == len => Ok(()),
                            Ok(n) => Err(FrameError::LengthMismatch {
                                expected: summary.len,
                                actual: offset + n as u64,
                            }),
                            Err(e) => Err(FrameError::Decompress(e.to_string())),
                        }
                        .and_then(|()| {
                            out.write_at(offset, piece)
                                .map_err(|e| FrameError::Write(e.to_string()))
                        });
                        if let Err(e) = res {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        let cv = blake3::Hasher::new()
                            .set_input_offset(offset)
                            .update(piece)
                            .finalize_non_root();
                        cvs.push((i, cv));
                    }
                })
            })
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
            cvs[i] = Some(cv);
        }
    }
    let cvs: Option<Vec<ChainingValue>> = cvs.into_iter().collect();
    let cvs = cvs.ok_or_else(|| FrameError::Decompress("a piece was not decoded".into()))?;
    let actual = Checksum(*root_hash(&cvs, piece_len, summary.len).as_bytes());
    if actual != summary.checksum {
        return Err(FrameError::ChecksumMismatch {
            expected: summary.checksum,
            actual,
        });
    }
    Ok(summary)
}

/// One zstd frame of a payload and its decompressed size.
type Piece<'a> = (&'a [u8], u64);

/// Splits a zstd payload into its frames when [`decode_to`] can decode them in parallel: at least
/// two frames, each recording its decompressed size, all of one power-of-two size of at least a
/// BLAKE3 chunk but the last (shorter, not empty), adding up to `total`. Returns that size and
/// each frame with its decompressed size.
fn zstd_pieces(mut payload: &[u8], total: u64) -> Option<(u64, Vec<Piece<'_>>)> {
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
fn root_hash(cvs: &[ChainingValue], piece_len: u64, len: u64) -> blake3::Hash {
    let (left, right) = children(cvs, piece_len, len);
    merge_subtrees_root(&left, &right, Mode::Hash)
}

/// The chaining values of the two children of the parent node over `len` bytes.
fn children(cvs: &[ChainingValue], piece_len: u64, len: u64) -> (ChainingValue, ChainingValue) {
    let left = left_subtree_len(len);
    let split = (left / piece_len) as usize;
    (
        subtree(&cvs[..split], piece_len, left),
        subtree(&cvs[split..], piece_len, len - left),
    )
}

/// The chaining value of the subtree over `len` bytes made of `cvs`' pieces.
fn subtree(cvs: &[ChainingValue], piece_len: u64, len: u64) -> ChainingValue {
    if len <= piece_len {
        return cvs[0];
    }
    let (left, right) = children(cvs, piece_len, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Adapts a [`WriteAt`] to the sequential decoder, remembering the first failure of `out`.
struct Positioned<'a> {
    out: &'a dyn WriteAt,
    offset: u64,
    error: Option<io::Error>,
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

/// Decodes a whole frame into memory, verified.
pub fn decode(obj: &[u8]) -> Result<Vec<u8>, FrameError> {
    let (_, _, s) = parts(obj)?;
    let mut out = Vec::with_capacity(usize::try_from(s.len.min(1 << 30)).unwrap_or(0));
    decode_into(obj, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trips_every_compression_whole_and_streamed() {
        let data = sample();
        for c in [
            Compression::None,
            Compression::Zstd(1),
            Compression::Zstd(3),
            Compression::Lz4,
        ] {
            let (obj, s) = encode(&data, c).unwrap();
            assert_eq!(s.len, data.len() as u64);
            assert_eq!(decode(&obj).unwrap(), data, "{c}");
            assert_eq!(summary(&obj).unwrap(), s);

            let mut enc = FrameEncoder::new(c).unwrap();
            let mut streamed = Vec::new();
            for chunk in data.chunks(7777) {
                enc.write(chunk).unwrap();
                streamed.extend(enc.take_output());
            }
            let (rest, s2) = enc.finish().unwrap();
            streamed.extend(rest);
            assert_eq!(s2, s);
            assert_eq!(decode(&streamed).unwrap(), data, "streamed {c}");
        }
    }

    #[test]
    fn chunked_zstd_payload_is_one_stream_and_damage_in_any_piece_is_caught() {
        // 9 pieces' worth of data, compressed in three pieces as encode_file does on three
        // cores (built here so that the test does not depend on the machine's core count).
        let data: Vec<u8> = (0..(9 * PARALLEL_CHUNK / 4) as u32)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 20).to_le_bytes())
            .collect();
        let one = compress(&data, Compression::Zstd(1)).unwrap();
        let three: Vec<u8> = data
            .chunks(data.len().div_ceil(3))
            .flat_map(|piece| compress(piece, Compression::Zstd(1)).unwrap())
            .collect();
        assert_ne!(one, three, "three pieces must be three frames");
        assert_eq!(zstd::stream::decode_all(&three[..]).unwrap(), data);
        let h = header(Compression::Zstd(1));
        let summary = FrameSummary {
            len: data.len() as u64,
            checksum: Checksum::of(&data),
        };
        let mut obj = h.to_vec();
        obj.extend_from_slice(&three);
        obj.extend_from_slice(&trailer(&h, summary));
        assert_eq!(decode(&obj).unwrap(), data);
        let (whole, s) = encode(&data, Compression::Zstd(1)).unwrap();
        assert_eq!(s, summary);
        assert_eq!(decode(&whole).unwrap(), data);
        // A flipped byte in the last piece is caught by decompression or the checksum.
        let at = HEADER_LEN + three.len() - 100;
        obj[at] ^= 0x40;
        assert!(decode(&obj).is_err());
    }

    /// A [`WriteAt`] into memory, optionally failing on the write that covers one offset.
    struct Memory {
        bytes: std::sync::Mutex<Vec<u8>>,
        fail_at: Option<u64>,
    }

    impl Memory {
        fn new() -> Memory {
            Memory {
                bytes: std::sync::Mutex::new(Vec::new()),
                fail_at: None,
            }
        }
        fn take(self) -> Vec<u8> {
            self.bytes.into_inner().unwrap()
        }
    }

    impl WriteAt for Memory {
        fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            if self
                .fail_at
                .is_some_and(|f| (offset..offset + data.len() as u64).contains(&f))
            {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let mut b = self.bytes.lock().unwrap();
            let end = offset as usize + data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
            .collect()
    }

    /// A frame whose zstd payload is `data` cut in `piece`-sized frames.
    fn pieced(data: &[u8], piece: usize) -> Vec<u8> {
        let h = header(Compression::Zstd(1));
        let mut obj = h.to_vec();
        for p in data.chunks(piece) {
            obj.extend(compress(p, Compression::Zstd(1)).unwrap());
        }
        let s = FrameSummary {
            len: data.len() as u64,
            checksum: Checksum::of(data),
        };
        obj.extend_from_slice(&trailer(&h, s));
        obj
    }

    #[test]
    fn parallel_decode_gives_blake3_of_the_whole_for_every_tree_shape() {
        for piece in [1024usize, 4096] {
            for pieces in 2..=9usize {
                for tail in [0usize, 1, piece / 2, piece - 1] {
                    let len = (pieces - 1) * piece + if tail == 0 { piece } else { tail };
                    let data = pseudo_random(len);
                    let obj = pieced(&data, piece);
                    let (_, payload, _) = parts(&obj).unwrap();
                    let (found, frames) = zstd_pieces(payload, len as u64).unwrap();
                    assert_eq!((found, frames.len()), (piece as u64, pieces));
                    for threads in [2, 3, 8] {
                        let out = Memory::new();
                        let s = decode_to(&obj, threads, &out).unwrap();
                        assert_eq!(s.checksum.0, *blake3::hash(&data).as_bytes());
                        assert_eq!(out.take(), data, "{piece} x {pieces} + {tail}");
                    }
                }
            }
        }
    }

    #[test]
    fn frame_encoder_cuts_zstd_in_pieces_that_decode_in_parallel() {
        let data = pseudo_random(2 * ZSTD_PIECE + ZSTD_PIECE / 3);
        let mut enc = FrameEncoder::new(Compression::Zstd(1)).unwrap();
        let mut obj = Vec::new();
        for chunk in data.chunks(1 << 20) {
            enc.write(chunk).unwrap();
            obj.extend(enc.take_output());
        }
        let (rest, s) = enc.finish().unwrap();
        obj.extend(rest);
        let (_, payload, _) = parts(&obj).unwrap();
        let (piece, frames) = zstd_pieces(payload, s.len).unwrap();
        assert_eq!((piece, frames.len()), (ZSTD_PIECE as u64, 3));
        let out = Memory::new();
        assert_eq!(decode_to(&obj, 2, &out).unwrap(), s);
        assert_eq!(out.take(), data);
        assert_eq!(decode(&obj).unwrap(), data);
        // Encoded from a file on two cores, a WAL segment-sized input is also two pieces.
        let (whole, _) = encode(&data, Compression::Zstd(1)).unwrap();
        let (_, payload, _) = parts(&whole).unwrap();
        assert!(zstd_pieces(payload, s.len).is_none(), "one frame");
        let out = Memory::new();
        assert_eq!(decode_to(&whole, 2, &out).unwrap(), s);
        assert_eq!(out.take(), data);
    }

    #[test]
    fn parallel_decode_catches_damage_reordering_and_write_failures() {
        let piece = 4096;
        let data = pseudo_random(5 * piece + 100);
        let obj = pieced(&data, piece);
        let frames: Vec<Vec<u8>> = data
            .chunks(piece)
            .map(|p| compress(p, Compression::Zstd(1)).unwrap())
            .collect();
        // A flipped byte inside any piece.
        let mut at = HEADER_LEN;
        for f in &frames {
            let mut bad = obj.clone();
            bad[at + f.len() / 2] ^= 0x10;
            assert!(decode_to(&bad, 2, &Memory::new()).is_err(), "flip at {at}");
            at += f.len();
        }
        // Two whole pieces swapped: every frame is intact, only the checksum can tell.
        let h = header(Compression::Zstd(1));
        let mut swapped = h.to_vec();
        for i in [1, 0, 2, 3, 4, 5] {
            swapped.extend_from_slice(&frames[i]);
        }
        swapped.extend_from_slice(&obj[obj.len() - TRAILER_LEN..]);
        assert!(matches!(
            decode_to(&swapped, 2, &Memory::new()),
            Err(FrameError::ChecksumMismatch { .. })
        ));
        // A piece missing: the sizes no longer add up, so it is decoded in order and the
        // length is wrong.
        let mut short = h.to_vec();
        for f in &frames[1..] {
            short.extend_from_slice(f);
        }
        short.extend_from_slice(&obj[obj.len() - TRAILER_LEN..]);
        assert!(matches!(
            decode_to(&short, 2, &Memory::new()),
            Err(FrameError::LengthMismatch { .. })
        ));
        // The destination failing is a write error, in parallel and in order.
        for threads in [1, 2] {
            let out = Memory {
                fail_at: Some(2 * piece as u64),
                ..Memory::new()
            };
            let err = decode_to(&obj, threads, &out).unwrap_err();
            assert!(
                matches!(err, FrameError::Write(ref m) if m.contains("disk full")),
                "{err}"
            );
        }
    }

    #[test]
    fn encode_file_matches_encode_for_every_compression() {
        let data: Vec<u8> = (0..(3 * PARALLEL_CHUNK / 2 + 12_345) as u32)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 22).to_le_bytes())
            .collect();
        let dir = std::env::temp_dir().join(format!("pitr-frame-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let (obj, s) = encode_file(&file, data.len() as u64, c).unwrap();
            assert_eq!(s, encode(&data, c).unwrap().1, "{c}");
            assert_eq!(decode(&obj).unwrap(), data, "{c}");
        }
        // Asking for more than the file holds is an error, not a short object.
        assert!(encode_file(&file, data.len() as u64 + 1, Compression::Zstd(1)).is_err());
        let (empty, s) = encode_file(&file, 0, Compression::Zstd(1)).unwrap();
        assert_eq!((s.len, decode(&empty).unwrap()), (0, vec![]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn detects_any_flipped_byte_and_truncation() {
        let data = sample();
        for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
            let (obj, _) = encode(&data, c).unwrap();
            for pos in [
                0,
                9,
                HEADER_LEN,
                HEADER_LEN + 100,
                obj.len() / 2,
                obj.len() - 30,
                obj.len() - 1,
            ] {
                let mut bad = obj.clone();
                bad[pos] ^= 0x40;
                assert!(decode(&bad).is_err(), "{c}: flip at {pos} undetected");
            }
            for cut in [
                0,
                10,
                HEADER_LEN + TRAILER_LEN - 1,
                obj.len() / 2,
                obj.len() - 1,
            ] {
                assert!(
                    decode(&obj[..cut]).is_err(),
                    "{c}: truncation at {cut} undetected"
                );
            }
        }
    }

    #[test]
    fn parses_compression_names() {
        assert_eq!(
            Compression::parse("zstd"),
            Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL))
        );
        assert_eq!(Compression::parse("zstd:9"), Some(Compression::Zstd(9)));
        assert_eq!(Compression::parse("LZ4"), Some(Compression::Lz4));
        assert_eq!(Compression::parse("none"), Some(Compression::None));
        assert_eq!(Compression::parse("zstd:99"), None);
        assert_eq!(Compression::parse("gzip"), None);
    }
}
