//! Sequential decoding: the payload is decompressed in order while its length and BLAKE3
//! checksum are checked.

use std::io::{self, Write};

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
    let mut w = Hashing {
        inner: out,
        hasher: blake3::Hasher::new(),
        len: 0,
        limit: summary.len,
    };
    let res = match code {
        CODE_NONE => w.write_all(payload),
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

/// Decodes a whole frame into memory, verified.
pub fn decode(obj: &[u8]) -> Result<Vec<u8>, FrameError> {
    let (_, _, s) = parts(obj)?;
    let mut out = Vec::with_capacity(usize::try_from(s.len.min(1 << 30)).unwrap_or(0));
    decode_into(obj, &mut out)?;
    Ok(out)
}
