//! Encoding: a whole buffer, or a stream fed in chunks ([`FrameEncoder`]); files are
//! encoded in pieces by [`encode_file`](super::encode_file).

use std::fmt;
use std::io::{self, Write};

use super::layout::{header, trailer, HEADER_LEN, TRAILER_LEN};
use super::{Checksum, Compression, FrameSummary};

/// Smallest range of a file that [`encode_file`](super::encode_file) reads and compresses on
/// a thread of its own.
pub(super) const PARALLEL_CHUNK: usize = 4 << 20;

/// Encodes a whole buffer (small files: timeline histories, backup history files, metadata-
/// sized objects; WAL segments go through [`encode_file`](super::encode_file)).
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

/// A zstd compressor at `level`. Level 1 (the default) is zstd's level 1 with three parameters
/// tuned for WAL and relation pages, measured on pgbench WAL (`bench/README.md`): matches of 5
/// bytes instead of 6, a hash table of 2^17 entries instead of 2^13 and a 2 MiB window instead
/// of 512 KiB. That stores 17% fewer bytes than plain level 1 (4% fewer than level 3) for
/// about a third more CPU (level 3 costs two and a half times as much). Other levels are
/// zstd's own. Decoding needs nothing special: the parameters are in each zstd frame.
pub(crate) fn zstd_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    for p in zstd_parameters(level) {
        c.set_parameter(p)?;
    }
    Ok(c)
}

/// The parameters pitr sets on top of zstd's `level` (see [`zstd_compressor`]).
pub(super) fn zstd_parameters(level: i32) -> Vec<zstd::zstd_safe::CParameter> {
    use zstd::zstd_safe::CParameter;
    if level == 1 {
        vec![
            CParameter::MinMatch(5),
            CParameter::HashLog(17),
            CParameter::WindowLog(21),
        ]
    } else {
        Vec::new()
    }
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
