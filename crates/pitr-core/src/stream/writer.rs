//! The stream's repository side, apart from receiving so that receiving never waits on
//! storage. The writer (this task) appends the WAL the receiver hands it to the segment in
//! progress (a growing frame, compressed and hashed in pieces on threads of its own) and
//! prepares the repository writes: the segment in progress as its streamed `.partial`
//! ([`ClusterRepo::put_stream_partial`]), each completed segment as the object `archive-push`
//! makes of it. The store (`store.rs`, a task of its own) does those writes in order and
//! publishes how far the WAL is durable in the repository (what `--synchronous` reports as
//! flushed), so the writer goes on with the next segment while one is fsynced or uploaded.
//!
//! When the `.partial` is written: once everything queued has been taken in (so a burst of
//! WAL makes one write, not one per message) and the store has finished its previous writes
//! (a `.partial` written while more WAL arrives covers all of it: with `--synchronous` one
//! write makes every commit waiting meanwhile durable at once), and, with a
//! `partial_interval`, not more often than that (never delayed with `--synchronous`: the
//! primary is waiting). It is always written before the writer ends and when the stream
//! moves to another timeline.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use pitr_pg::page::LONG_HEADER_LEN;
use pitr_pg::{Lsn, TimelineId, WalFileName, WalSegSize};
use pitr_repo::frame::GrowingFrame;
use pitr_repo::{ClusterRepo, Compression};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::store::{StoreHandle, StoreJob};
use super::StreamError;
use crate::archive;

/// What the receiver hands the writer.
#[derive(Debug)]
pub(super) enum ToWriter {
    /// WAL bytes of timeline `tli` from `start`, all inside one segment.
    Wal {
        /// Timeline.
        tli: TimelineId,
        /// Position of the first byte.
        start: Lsn,
        /// The bytes.
        bytes: Bytes,
    },
    /// A timeline history file to store (the stream follows a new timeline).
    History {
        /// `TTTTTTTT.history`.
        name: String,
        /// Its content.
        content: Vec<u8>,
    },
}

/// Where WAL is durable in the repository: end of the last stored segment or `.partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Durable {
    /// Its timeline.
    pub tli: TimelineId,
    /// The position.
    pub lsn: Lsn,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub(super) struct WriterOptions {
    /// Compression of stored objects.
    pub compression: Compression,
    /// Where a timeline history file is written before it is stored.
    pub spool: PathBuf,
    /// Least time between two `.partial` writes (zero: as received).
    pub partial_interval: Duration,
    /// Write the `.partial` at once, whatever the interval.
    pub synchronous: bool,
    /// The segment size.
    pub seg: WalSegSize,
}

/// What the writer did.
#[derive(Debug, Clone, Default)]
pub(super) struct WriterReport {
    /// Segments stored.
    pub segments: u64,
    /// The last one.
    pub last_segment: Option<String>,
    /// `.partial` writes.
    pub partial_writes: u64,
    /// Where WAL is durable.
    pub durable: Option<Durable>,
}

/// The segment in progress.
struct Current {
    tli: TimelineId,
    name: WalFileName,
    start: Lsn,
    frame: GrowingFrame,
    /// Bytes of it handed to the store as a `.partial` (0 when none was yet).
    written: usize,
    /// Length of a `.partial` found in the repository when the segment began (an earlier
    /// run's): a shorter one is never written over it.
    found: usize,
    /// Its long page header was handed to the store to check against the repository's
    /// cluster.
    admitted: bool,
}

impl Current {
    /// The first bytes, for the store to check the first time the segment is stored.
    fn admit(&mut self) -> Option<Vec<u8>> {
        (!std::mem::replace(&mut self.admitted, true)).then(|| self.frame.head().to_vec())
    }
}

/// The writer task's state.
pub(super) struct Writer {
    cluster: ClusterRepo,
    opts: WriterOptions,
    current: Option<Current>,
    last_write: Option<Instant>,
    store: StoreHandle,
}

impl Writer {
    /// A writer whose store publishes durable positions on `durable`.
    pub(super) fn new(
        cluster: ClusterRepo,
        opts: WriterOptions,
        durable: watch::Sender<Option<Durable>>,
    ) -> Writer {
        let store = StoreHandle::start(
            cluster.clone(),
            opts.compression,
            opts.spool.clone(),
            opts.seg.bytes(),
            durable,
        );
        Writer {
            cluster,
            opts,
            current: None,
            last_write: None,
            store,
        }
    }

    /// Runs until the receiver closes the channel (then the `.partial` is written a last
    /// time and the store finishes) or a repository error.
    pub(super) async fn run(
        mut self,
        rx: mpsc::Receiver<ToWriter>,
    ) -> Result<WriterReport, StreamError> {
        let taken = self.take_all(rx).await;
        let stored = self.store.finish().await;
        // The store's own error explains a writer that could not hand it more.
        let stored = match (taken, stored) {
            (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
            (Ok(()), Ok(s)) => s,
        };
        Ok(WriterReport {
            segments: stored.segments,
            last_segment: stored.last_segment,
            partial_writes: stored.partial_writes,
            durable: stored.durable,
        })
    }

    /// Takes in WAL until the channel closes, then hands the store the last `.partial`.
    async fn take_all(&mut self, mut rx: mpsc::Receiver<ToWriter>) -> Result<(), StreamError> {
        loop {
            // Take in everything queued before writing anything.
            let msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match self.partial_due() {
                    Some(at) if at <= Instant::now() && self.store.idle() => {
                        self.write_partial().await?;
                        continue;
                    }
                    // Due, but the store is still writing: when it is done, this WAL and
                    // whatever arrives meanwhile go in one write.
                    // Each wait also ends when the store finishes a job, so that a failed
                    // store stops the writer at once.
                    Some(at) if at <= Instant::now() => tokio::select! {
                        m = rx.recv() => m,
                        r = self.store.job_done() => { r?; continue; }
                    },
                    Some(at) => tokio::select! {
                        m = tokio::time::timeout_at(at, rx.recv()) => match m {
                            Ok(m) => m,
                            Err(_) => continue,
                        },
                        r = self.store.job_done() => { r?; continue; }
                    },
                    None => tokio::select! {
                        m = rx.recv() => m,
                        r = self.store.job_done() => { r?; continue; }
                    },
                },
            };
            match msg {
                Some(m) => self.take(m).await?,
                None => break,
            }
        }
        if self.dirty() {
            self.write_partial().await?;
        }
        Ok(())
    }

    /// True when the segment in progress holds bytes not yet handed to the store (and at
    /// least its long page header, which identifies the cluster).
    fn dirty(&self) -> bool {
        self.current.as_ref().is_some_and(|c| {
            let len = c.frame.len();
            len > c.written && len > c.found && len >= LONG_HEADER_LEN
        })
    }

    /// When the `.partial` should be written next, if it needs writing.
    fn partial_due(&self) -> Option<Instant> {
        if !self.dirty() {
            return None;
        }
        let now = Instant::now();
        if self.opts.synchronous || self.opts.partial_interval.is_zero() {
            return Some(now);
        }
        Some(
            self.last_write
                .map_or(now, |t| t + self.opts.partial_interval),
        )
    }

    async fn take(&mut self, msg: ToWriter) -> Result<(), StreamError> {
        match msg {
            ToWriter::Wal { tli, start, bytes } => self.wal(tli, start, &bytes).await,
            ToWriter::History { name, content } => {
                // The old timeline's last bytes are made durable before it is left.
                if self.dirty() {
                    self.write_partial().await?;
                }
                self.store.send(StoreJob::History { name, content }).await
            }
        }
    }

    async fn wal(&mut self, tli: TimelineId, start: Lsn, bytes: &[u8]) -> Result<(), StreamError> {
        let seg = self.opts.seg;
        let seg_start = seg.start_of(seg.segno_of(start)).unwrap_or(start);
        let continues = self.current.as_ref().is_some_and(|c| {
            c.tli == tli && c.start == seg_start && c.start.0 + c.frame.len() as u64 == start.0
        });
        if !continues {
            // Another segment or timeline: what is left of the current one is written first.
            if self.dirty() {
                self.write_partial().await?;
            }
            self.current = None;
            if start != seg_start {
                return Err(StreamError::Unexpected(format!(
                    "WAL at {start} on timeline {tli} does not continue the segment in progress"
                )));
            }
            let name = WalFileName::segment(tli, seg.segno_of(start), seg);
            let found = self
                .cluster
                .stream_partial_summary(&name)
                .await
                .map_err(archive::ArchiveError::from)?
                .map_or(0, |s| usize::try_from(s.len).unwrap_or(usize::MAX));
            self.current = Some(Current {
                tli,
                name,
                start: seg_start,
                frame: GrowingFrame::new(self.opts.compression).map_err(StreamError::Encode)?,
                written: 0,
                found,
                admitted: false,
            });
        }
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        cur.frame.append(bytes).map_err(StreamError::Encode)?;
        if cur.frame.len() as u64 == seg.bytes() {
            self.complete().await?;
        }
        Ok(())
    }

    /// Hands the store the completed segment in progress (it waits for the frame's last
    /// pieces, stores it, then deletes its `.partial`).
    ///
    /// The object is the growing frame itself (its zstd pieces are already compressed): the
    /// same content, length and checksum as the object `archive-push` makes of that segment,
    /// so either one stored first makes the other a duplicate, never a conflict; only the
    /// payload's cut into zstd frames differs (which archive-push's own depends on the cores).
    async fn complete(&mut self) -> Result<(), StreamError> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        let admit = cur.admit();
        let durable = Durable {
            tli: cur.tli,
            lsn: Lsn(cur.start.0 + cur.frame.len() as u64),
        };
        let job = StoreJob::Segment {
            name: cur.name,
            admit,
            frame: cur.frame,
            delete_partial: cur.written > 0 || cur.found > 0,
            durable,
        };
        self.store.send(job).await
    }

    /// Hands the store the segment in progress as its `.partial`.
    async fn write_partial(&mut self) -> Result<(), StreamError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let len = cur.frame.len();
        let (obj, _) = cur.frame.snapshot().map_err(StreamError::Encode)?;
        let job = StoreJob::Partial {
            name: cur.name,
            admit: cur.admit(),
            obj,
            durable: Durable {
                tli: cur.tli,
                lsn: Lsn(cur.start.0 + len as u64),
            },
        };
        cur.written = len;
        self.last_write = Some(Instant::now());
        self.store.send(job).await
    }
}
