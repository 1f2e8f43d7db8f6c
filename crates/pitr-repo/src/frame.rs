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
use std::sync::{mpsc, Arc};

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

enum Enc {
    None(Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Lz4(lz4_flex::frame::FrameEncoder<Vec<u8>>),
}

/// Streaming encoder: feed chunks with [`FrameEncoder::write`], collect output with
/// [`FrameEncoder::take_output`], and end with [`FrameEncoder::finish`].
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
            Compression::Zstd(level) => Enc::Zstd(zstd::stream::write::Encoder::new(start, level)?),
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
            Enc::Zstd(e) => e.write_all(data),
            Enc::Lz4(e) => e.write_all(data),
        }
    }

    /// Takes the encoded bytes produced so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        match &mut self.enc {
            Enc::None(v) => std::mem::take(v),
            Enc::Zstd(e) => std::mem::take(e.get_mut()),
            Enc::Lz4(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Ends the frame: the remaining encoded bytes (trailer included) and the summary.
    pub fn finish(self) -> io::Result<(Vec<u8>, FrameSummary)> {
        let mut out = match self.enc {
            Enc::None(v) => v,
            Enc::Zstd(e) => e.finish()?,
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
