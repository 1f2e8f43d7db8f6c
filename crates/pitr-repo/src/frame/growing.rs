//! A frame over bytes that keep arriving (the WAL segment `pitr stream` is receiving): each
//! [`GrowingFrame::snapshot`] is a complete, ordinary frame of everything appended so far, made
//! without recompressing or rehashing what earlier snapshots already covered.
//!
//! With zstd (or no compression), the bytes are cut into [`GROWING_PIECE`]-sized pieces, each
//! compressed as a zstd frame of its own (a payload may be several concatenated zstd frames)
//! and hashed as a BLAKE3 subtree by a few threads of the frame's own, so that the thread
//! appending (the stream's writer) only copies the bytes into the piece being filled. A
//! snapshot waits for the pieces in flight, compresses and hashes only the tail that does not
//! fill a piece yet, and merges the pieces' chaining values into the checksum (as
//! [`decode_to`](super::decode_to) does when it verifies such a payload). Piece buffers are
//! reused, so a long stream does not keep allocating fresh memory.
//! LZ4, rare for WAL, is re-encoded whole at each snapshot.

use std::collections::VecDeque;
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use blake3::hazmat::{ChainingValue, HasherExt};

use super::encode::encode;
use super::layout::{header, trailer, HEADER_LEN, TRAILER_LEN};
use super::parallel::root_hash;
use super::{Checksum, Compression, FrameSummary};

/// Original bytes per zstd frame in a growing frame's payload: small enough that a snapshot
/// recompresses little, large enough to compress WAL as well as one frame would. A power of
/// two, so that each piece is a BLAKE3 subtree.
pub const GROWING_PIECE: usize = 1 << 20;

/// Bytes of the beginning kept apart for [`GrowingFrame::head`] (a WAL segment's long page
/// header identifies its cluster).
const HEAD_LEN: usize = 8192;

/// An ever-longer frame; see the module documentation.
pub struct GrowingFrame {
    c: Compression,
    len: usize,
    /// The first [`HEAD_LEN`] bytes (all of them with LZ4).
    head: Vec<u8>,
    /// The pieces' part (zstd and none).
    pieces: Option<Pieces>,
}

impl std::fmt::Debug for GrowingFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrowingFrame")
            .field("compression", &self.c)
            .field("len", &self.len)
            .finish()
    }
}

impl GrowingFrame {
    /// An empty frame with compression `c`.
    pub fn new(c: Compression) -> io::Result<GrowingFrame> {
        let pieces = match c {
            Compression::Zstd(_) | Compression::None => Some(Pieces::new(c)?),
            Compression::Lz4 => None,
        };
        Ok(GrowingFrame {
            c,
            len: 0,
            head: Vec::new(),
            pieces,
        })
    }

    /// Original bytes appended so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before anything was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first original bytes: at least the first 8 KiB (or all when fewer were appended).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Appends original bytes (complete pieces go to the frame's threads now).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len();
        let Some(p) = &mut self.pieces else {
            self.head.extend_from_slice(bytes);
            return Ok(());
        };
        if self.head.len() < HEAD_LEN {
            let take = (HEAD_LEN - self.head.len()).min(bytes.len());
            self.head
                .extend_from_slice(bytes.get(..take).unwrap_or_default());
        }
        p.append(bytes)
    }

    /// The frame of everything appended so far, and its summary.
    pub fn snapshot(&mut self) -> io::Result<(Vec<u8>, FrameSummary)> {
        match &mut self.pieces {
            Some(p) => p.snapshot(self.c, self.len),
            None => encode(&self.head, self.c),
        }
    }
}

/// A piece handed to a thread.
struct Job {
    /// Offset of its first byte in the frame.
    offset: u64,
    data: Vec<u8>,
    done: mpsc::SyncSender<Done>,
}

/// A piece compressed and hashed.
struct Done {
    /// Its payload bytes (a zstd frame, or the bytes as they are).
    z: io::Result<Vec<u8>>,
    /// Its BLAKE3 chaining value as a subtree at its offset.
    cv: ChainingValue,
    /// The piece's own root hash, for the first piece (the whole frame when it is all).
    root: Option<blake3::Hash>,
    /// The piece's buffer, to fill again.
    buf: Vec<u8>,
}

/// The pieces of a zstd (or uncompressed) growing frame.
struct Pieces {
    /// The piece being filled.
    fill: Vec<u8>,
    /// Payload of the pieces done, in order.
    payload: Vec<u8>,
    /// Chaining values of the pieces done.
    cvs: Vec<ChainingValue>,
    /// Root hash of the first piece once done.
    first_root: Option<blake3::Hash>,
    /// Pieces handed to the threads, oldest first.
    in_flight: VecDeque<mpsc::Receiver<Done>>,
    /// Bytes handed to the threads (a multiple of [`GROWING_PIECE`]).
    queued: usize,
    /// Buffers to fill again.
    spare: Vec<Vec<u8>>,
    /// The queue the threads take pieces from (started with the first piece).
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Compresses a snapshot's tail.
    tail: Option<zstd::bulk::Compressor<'static>>,
    c: Compression,
    /// Threads compressing pieces (one per core, at most 4).
    thread_count: usize,
}

impl Pieces {
    fn new(c: Compression) -> io::Result<Pieces> {
        let tail = match c {
            Compression::Zstd(level) => Some(super::encode::zstd_compressor(level)?),
            Compression::None | Compression::Lz4 => None,
        };
        Ok(Pieces {
            fill: Vec::new(),
            payload: Vec::new(),
            cvs: Vec::new(),
            first_root: None,
            in_flight: VecDeque::new(),
            queued: 0,
            spare: Vec::new(),
            jobs: None,
            threads: Vec::new(),
            tail,
            c,
            thread_count: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        })
    }

    fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.fill.capacity() == 0 {
                self.fill = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(GROWING_PIECE));
            }
            let take = (GROWING_PIECE - self.fill.len()).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.fill.extend_from_slice(now);
            bytes = rest;
            if self.fill.len() == GROWING_PIECE {
                self.send_fill()?;
            }
        }
        // Take in what the threads finished meanwhile (their buffers are filled next).
        while let Some(Ok(d)) = self.in_flight.front().map(mpsc::Receiver::try_recv) {
            self.in_flight.pop_front();
            self.take_done(d)?;
        }
        Ok(())
    }

    /// Hands the full piece being filled to the threads.
    fn send_fill(&mut self) -> io::Result<()> {
        // Enough pieces queued to keep every thread busy: wait for the oldest.
        while self.in_flight.len() >= 2 * self.thread_count {
            self.finish_oldest()?;
        }
        if self.jobs.is_none() {
            self.start_threads()?;
        }
        let data = std::mem::take(&mut self.fill);
        let (done, rx) = mpsc::sync_channel(1);
        let job = Job {
            offset: self.queued as u64,
            data,
            done,
        };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the compression threads stopped"));
        }
        self.in_flight.push_back(rx);
        self.queued += GROWING_PIECE;
        Ok(())
    }

    fn start_threads(&mut self) -> io::Result<()> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.thread_count {
            let rx = Arc::clone(&rx);
            let c = self.c;
            let t = std::thread::Builder::new()
                .name("pitr-piece".into())
                .spawn(move || piece_worker(c, &rx))?;
            self.threads.push(t);
        }
        self.jobs = Some(tx);
        Ok(())
    }

    /// Waits for the oldest piece in flight and appends it to the payload.
    fn finish_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let d = rx
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))?;
        self.take_done(d)
    }

    fn take_done(&mut self, d: Done) -> io::Result<()> {
        let z = d.z?;
        self.payload.extend_from_slice(&z);
        if self.cvs.is_empty() {
            self.first_root = d.root;
        }
        self.cvs.push(d.cv);
        let mut buf = d.buf;
        buf.clear();
        if buf.capacity() >= GROWING_PIECE {
            self.spare.push(buf);
        }
        Ok(())
    }

    /// The frame of the `len` bytes appended so far.
    fn snapshot(&mut self, c: Compression, len: usize) -> io::Result<(Vec<u8>, FrameSummary)> {
        while !self.in_flight.is_empty() {
            self.finish_oldest()?;
        }
        let tail = self.fill.as_slice();
        let tail_z = match (&mut self.tail, tail.is_empty() && self.queued > 0) {
            // An empty frame still gets one (empty) zstd frame, as `encode` writes.
            (_, true) => Vec::new(),
            (Some(z), false) => z.compress(tail)?,
            (None, false) => tail.to_vec(),
        };
        let checksum = if self.queued == 0 {
            blake3::hash(tail)
        } else if len == GROWING_PIECE {
            self.first_root
                .ok_or_else(|| io::Error::other("the first piece has no hash"))?
        } else {
            let mut cvs = self.cvs.clone();
            if !tail.is_empty() {
                cvs.push(subtree_cv(self.queued as u64, tail).0);
            }
            root_hash(&cvs, GROWING_PIECE as u64, len as u64)
                .ok_or_else(|| io::Error::other("the pieces do not cover the frame"))?
        };
        let h = header(c);
        let summary = FrameSummary {
            len: len as u64,
            checksum: Checksum(*checksum.as_bytes()),
        };
        let mut out =
            Vec::with_capacity(HEADER_LEN + self.payload.len() + tail_z.len() + TRAILER_LEN);
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&tail_z);
        out.extend_from_slice(&trailer(&h, summary));
        Ok((out, summary))
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        // Closing the queue ends the threads once their piece is done.
        self.jobs = None;
        self.in_flight.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The chaining value of `data` as the BLAKE3 subtree at `offset`, and its root hash when it
/// starts the input (then it may be all of it).
fn subtree_cv(offset: u64, data: &[u8]) -> (ChainingValue, Option<blake3::Hash>) {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    let root = (offset == 0).then(|| h.finalize());
    (h.finalize_non_root(), root)
}

/// One of a frame's threads: takes pieces from `jobs` until the queue closes.
fn piece_worker(c: Compression, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut z = match c {
        Compression::Zstd(level) => Some(super::encode::zstd_compressor(level)),
        Compression::None | Compression::Lz4 => None,
    };
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        let (cv, root) = subtree_cv(job.offset, &job.data);
        let z = match &mut z {
            Some(Ok(z)) => z.compress(&job.data),
            Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(job.data.clone()),
        };
        // The frame may be gone (dropped mid-way): nothing waits for this piece then.
        let _ = job.done.send(Done {
            z,
            cv,
            root,
            buf: job.data,
        });
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
                let head = if c == Compression::Lz4 {
                    at
                } else {
                    at.min(HEAD_LEN)
                };
                assert_eq!(g.head(), &all[..head]);
            }
        }
    }

    #[test]
    fn checksums_match_at_piece_boundaries_and_over_many_pieces() {
        // Lengths where the BLAKE3 tree changes shape: one piece exactly, one piece and a
        // byte, a power of two of pieces, and a segment of 16 pieces appended in WAL-sized
        // messages.
        let all = wal_like(16 * GROWING_PIECE);
        for len in [
            GROWING_PIECE,
            GROWING_PIECE + 1,
            2 * GROWING_PIECE,
            4 * GROWING_PIECE - 1,
            16 * GROWING_PIECE,
        ] {
            let mut g = GrowingFrame::new(Compression::Zstd(1)).unwrap();
            for chunk in all[..len].chunks(128 * 1024 - 24) {
                g.append(chunk).unwrap();
            }
            let (obj, s) = g.snapshot().unwrap();
            assert_eq!(s.checksum, Checksum::of(&all[..len]), "{len}");
            assert_eq!(s.len, len as u64);
            assert_eq!(decode(&obj).unwrap(), &all[..len], "{len}");
        }
    }
}
