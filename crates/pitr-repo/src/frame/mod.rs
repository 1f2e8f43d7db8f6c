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
//!
//! - `layout`: the header and trailer bytes (what a later format version changes);
//! - `encode`: whole buffers and streams;
//! - `file`: files (WAL segments), read, hashed and compressed in pieces on several threads;
//! - `growing`: a frame re-published as bytes keep arriving (the streamed `.partial`);
//! - `decode`: sequential decoding, verified;
//! - `parallel`: decoding a zstd payload cut in pieces on several threads, the BLAKE3 tree
//!   rebuilt from the pieces' subtree hashes;
//! - `windowed`: the same for a payload read as a stream, a window of pieces at a time.

mod decode;
mod encode;
mod file;
mod growing;
mod layout;
mod parallel;
#[cfg(test)]
mod tests;
mod windowed;

use std::fmt;

pub use decode::{decode, decode_into, decode_payload};
pub use encode::{encode, FrameEncoder, MemberEncoder, ZSTD_PIECE};
pub use file::encode_file;
pub use growing::{GrowingFrame, GROWING_PIECE};
pub use layout::{ends, summary, END_MAGIC, HEADER_LEN, MAGIC, MAX_ORIGINAL_LEN, TRAILER_LEN};
pub use parallel::{decode_to, WriteAt};
pub use windowed::decode_stream_to;

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

/// Default zstd level: level 1 with pitr's tuning for WAL (see `encode::zstd_compressor`):
/// as fast as plain level 1 within a third, and smaller than level 3 on pgbench WAL.
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
