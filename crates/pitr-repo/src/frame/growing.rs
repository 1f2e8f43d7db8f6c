//! A frame over bytes that keep arriving (the WAL segment `pitr stream` is receiving): each
//! [`GrowingFrame::snapshot`] is a complete, ordinary frame of everything appended so far, made
//! without recompressing or rehashing what earlier snapshots already covered.
//!
//! With zstd, the bytes are cut into [`GROWING_PIECE`]-sized zstd frames compressed once each
//! (a payload may be several concatenated zstd frames), on threads of their own, a few at a time
//! (so that receiving goes on while pieces compress); a snapshot waits for them in order and
//! compresses only the tail that does not fill a piece yet. BLAKE3 is kept as a running hasher,
//! finalized per snapshot.
//! Other compressions are rare for WAL and re-encoded whole.

use std::collections::VecDeque;
use std::io;
use std::thread::JoinHandle;

use super::encode::encode;
use super::layout::{header, trailer, HEADER_LEN, TRAILER_LEN};
use super::{Checksum, Compression, FrameSummary};

/// Original bytes per zstd frame in a growing frame's payload: small enough that a snapshot
/// recompresses little, large enough to compress WAL as well as one frame would.
pub const GROWING_PIECE: usize = 1 << 20;

/// An ever-longer frame; see the module documentation.
pub struct GrowingFrame {
    c: Compression,
    data: Vec<u8>,
    /// Concatenated zstd frames of `data[..pieces_len]` (zstd only).
    pieces: Vec<u8>,
    pieces_len: usize,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Pieces of `data[pieces_len..queued_len]` being compressed, oldest first.
    in_flight: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    queued_len: usize,
    hasher: blake3::Hasher,
}

impl std::fmt::Debug for GrowingFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrowingFrame")
            .field("compression", &self.c)
            .field("len", &self.data.len())
            .finish()
    }
}

impl GrowingFrame {
    /// An empty frame with compression `c`.
    pub fn new(c: Compression) -> io::Result<GrowingFrame> {
        let compressor = match c {
            Compression::Zstd(level) => Some(super::encode::zstd_compressor(level)?),
            Compression::None | Compression::Lz4 => None,
        };
        Ok(GrowingFrame {
            c,
            data: Vec::new(),
            pieces: Vec::new(),
            pieces_len: 0,
            compressor,
            in_flight: VecDeque::new(),
            queued_len: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    /// Original bytes appended so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True before anything was appended.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The original bytes appended so far.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Appends original bytes (complete pieces are compressed now).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.data.extend_from_slice(bytes);
        let Compression::Zstd(level) = self.c else {
            return Ok(());
        };
        let most = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        while self.data.len() - self.queued_len >= GROWING_PIECE {
            if self.in_flight.len() >= most {
                self.finish_oldest()?;
            }
            let end = self.queued_len + GROWING_PIECE;
            let piece = self
                .data
                .get(self.queued_len..end)
                .unwrap_or_default()
                .to_vec();
            self.in_flight.push_back(std::thread::spawn(move || {
                super::encode::zstd_compressor(level)?.compress(&piece)
            }));
            self.queued_len = end;
        }
        Ok(())
    }

    /// Waits for the oldest piece in flight and appends it to the payload.
    fn finish_oldest(&mut self) -> io::Result<()> {
        let Some(t) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let z = t
            .join()
            .map_err(|_| io::Error::other("a compression thread panicked"))??;
        self.pieces.extend_from_slice(&z);
        self.pieces_len += GROWING_PIECE;
        Ok(())
    }

    /// The frame of everything appended so far, and its summary.
    pub fn snapshot(&mut self) -> io::Result<(Vec<u8>, FrameSummary)> {
        while !self.in_flight.is_empty() {
            self.finish_oldest()?;
        }
        let Some(z) = &mut self.compressor else {
            return encode(&self.data, self.c);
        };
        let tail = self.data.get(self.pieces_len..).unwrap_or_default();
        // An empty frame still gets one (empty) zstd frame, as `encode` writes.
        let tail_z = if tail.is_empty() && self.pieces_len > 0 {
            Vec::new()
        } else {
            z.compress(tail)?
        };
        let h = header(self.c);
        let summary = FrameSummary {
            len: self.data.len() as u64,
            checksum: Checksum(*self.hasher.finalize().as_bytes()),
        };
        let mut out =
            Vec::with_capacity(HEADER_LEN + self.pieces.len() + tail_z.len() + TRAILER_LEN);
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.pieces);
        out.extend_from_slice(&tail_z);
        out.extend_from_slice(&trailer(&h, summary));
        Ok((out, summary))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::frame::{decode, summary};

    fn wal_like(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i / 7) % 251) as u8).collect()
    }

    #[test]
    fn every_snapshot_is_an_ordinary_frame_of_the_bytes_so_far() {
        for c in [Compression::Zstd(1), Compression::Lz4, Compression::None] {
            let all = wal_like(3 * GROWING_PIECE + 12_345);
            let mut g = GrowingFrame::new(c).unwrap();
            let (empty, s) = g.snapshot().unwrap();
            assert_eq!(s.len, 0);
            assert_eq!(decode(&empty).unwrap(), Vec::<u8>::new());
            let mut at = 0;
            for step in [10, GROWING_PIECE - 10, 1, GROWING_PIECE * 2, 12_344] {
                g.append(&all[at..at + step]).unwrap();
                at += step;
                let (obj, s) = g.snapshot().unwrap();
                assert_eq!(decode(&obj).unwrap(), &all[..at], "{c}");
                assert_eq!(s, summary(&obj).unwrap());
                // The same summary as the one-shot encoder's: a duplicate is recognised.
                assert_eq!(s, encode(&all[..at], c).unwrap().1);
            }
        }
    }
}
