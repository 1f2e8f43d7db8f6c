//! Sequential decoding: the payload is decompressed in order while its length and BLAKE3
//! checksum are checked.

use std::io::{self, Read, Write};

use super::layout::{parts, CODE_LZ4, CODE_NONE, CODE_ZSTD};
use super::{Checksum, FrameError, FrameSummary};

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
        let written = buf
            .get(..n)
            .ok_or_else(|| io::Error::other("writer reported more bytes than it was given"))?;
        self.hasher.update(written);
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
    decode_payload(code, payload, summary, out)
}

/// Decodes a payload read from `payload` (compression `code`, the frame's header and trailer
/// checked apart, see [`ends`](super::layout::ends)) into `out`, and verifies it against
/// `summary`: what [`decode_into`] does, for a payload that is not in memory as a whole.
pub fn decode_payload<R: Read, W: Write>(
    code: u8,
    mut payload: R,
    summary: FrameSummary,
    out: &mut W,
) -> Result<FrameSummary, FrameError> {
    let mut w = Hashing {
        inner: out,
        hasher: blake3::Hasher::new(),
        len: 0,
        limit: summary.len,
    };
    let res = match code {
        CODE_NONE => copy_large(&mut payload, &mut w),
        CODE_ZSTD => zstd::stream::copy_decode(payload, &mut w),
        CODE_LZ4 => io::copy(&mut lz4_flex::frame::FrameDecoder::new(payload), &mut w).map(|_| ()),
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

/// Copies `r` to `w` in pieces of 256 KiB (BLAKE3 hashes large pieces faster: its SIMD
/// paths hash several 1 KiB chunks at once).
fn copy_large<R: Read, W: Write>(r: &mut R, w: &mut W) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(buf.get(..n).unwrap_or_default())?;
    }
}

/// Decodes a whole frame into memory, verified.
pub fn decode(obj: &[u8]) -> Result<Vec<u8>, FrameError> {
    let (_, _, s) = parts(obj)?;
    let mut out = Vec::with_capacity(usize::try_from(s.len.min(1 << 30)).unwrap_or(0));
    decode_into(obj, &mut out)?;
    Ok(out)
}
