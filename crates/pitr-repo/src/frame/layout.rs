//! The bytes around a payload: the 16-byte header (magic with the format version, compression
//! code) and the 48-byte trailer (original length, BLAKE3, CRC-32C of both, end magic).

use super::{Checksum, Compression, FrameError, FrameSummary};

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

/// Header code of an uncompressed payload.
pub(super) const CODE_NONE: u8 = 0;
/// Header code of a zstd payload.
pub(super) const CODE_ZSTD: u8 = 1;
/// Header code of an LZ4 payload.
pub(super) const CODE_LZ4: u8 = 2;

impl Compression {
    /// The header's compression code.
    fn code(self) -> u8 {
        match self {
            Compression::None => CODE_NONE,
            Compression::Zstd(_) => CODE_ZSTD,
            Compression::Lz4 => CODE_LZ4,
        }
    }
}

/// The header of a frame with compression `c`.
pub(super) fn header(c: Compression) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = c.code();
    h
}

/// The trailer of a frame with this `header` and `s`ummary.
pub(super) fn trailer(header: &[u8; HEADER_LEN], s: FrameSummary) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&s.len.to_le_bytes());
    t[8..40].copy_from_slice(&s.checksum.0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(header), &t[..40]);
    t[40..44].copy_from_slice(&crc.to_le_bytes());
    t[44..48].copy_from_slice(END_MAGIC);
    t
}

/// Reads and checks a frame's header and trailer without decompressing.
pub fn summary(obj: &[u8]) -> Result<FrameSummary, FrameError> {
    parts(obj).map(|(_, _, s)| s)
}

/// Checks a frame's header and trailer; returns the compression code, the payload and the
/// summary.
pub(super) fn parts(obj: &[u8]) -> Result<(u8, &[u8], FrameSummary), FrameError> {
    let framed = obj
        .split_first_chunk::<HEADER_LEN>()
        .and_then(|(h, rest)| Some((h, rest.split_last_chunk::<TRAILER_LEN>()?)));
    let Some((h, (payload, t))) = framed else {
        if obj.first_chunk::<8>().is_some_and(|m| m != MAGIC) {
            return Err(FrameError::BadMagic);
        }
        return Err(FrameError::Truncated(obj.len()));
    };
    let (code, summary) = ends(h, t)?;
    Ok((code, payload, summary))
}

/// Checks a frame's header `h` and trailer `t` (read apart, e.g. by ranged reads of a large
/// object); returns the compression code and the summary.
pub fn ends(h: &[u8; HEADER_LEN], t: &[u8; TRAILER_LEN]) -> Result<(u8, FrameSummary), FrameError> {
    if &h[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
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
    Ok((h[8], summary))
}
