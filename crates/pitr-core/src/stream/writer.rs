//! The stream's repository side, a task of its own so that receiving never waits on storage:
//! it appends the WAL the receiver hands it to the segment in progress, keeps that segment
//! durable as a streamed `.partial` ([`ClusterRepo::put_stream_partial`]), stores each
//! completed segment with `archive-push`'s function and then deletes its `.partial`, and
//! publishes how far the WAL is durable in the repository (what `--synchronous` reports as
//! flushed).
//!
//! When the `.partial` is written: once everything queued has been taken in (so a burst of
//! WAL makes one write, not one per message), and, with a `partial_interval`, not more often
//! than that (never delayed with `--synchronous`: the primary is waiting). It is always
//! written before the writer ends and when the stream moves to another timeline.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use pitr_pg::page::LONG_HEADER_LEN;
use pitr_pg::{Lsn, TimelineId, WalFileName, WalSegSize};
use pitr_repo::frame::GrowingFrame;
use pitr_repo::{ClusterRepo, Compression};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

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
    /// Bytes of it durable in the repository (0 when no `.partial` was written yet).
    written: usize,
    /// Length of a `.partial` found in the repository when the segment began (an earlier
    /// run's): a shorter one is never written over it.
    found: usize,
    /// Its long page header was checked against the repository's cluster.
    admitted: bool,
}

/// The writer task's state.
pub(super) struct Writer {
    cluster: ClusterRepo,
    opts: WriterOptions,
    current: Option<Current>,
    last_write: Option<Instant>,
    report: WriterReport,
    durable: watch::Sender<Option<Durable>>,
}

impl Writer {
    /// A writer publishing durable positions on `durable`.
    pub(super) fn new(
        cluster: ClusterRepo,
        opts: WriterOptions,
        durable: watch::Sender<Option<Durable>>,
    ) -> Writer {
        Writer {
            cluster,
            opts,
            current: None,
            last_write: None,
            report: WriterReport::default(),
            durable,
        }
    }

    /// Runs until the receiver closes the channel (then the `.partial` is written a last
    /// time) or a repository error.
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<ToWriter>,
    ) -> Result<WriterReport, StreamError> {
        loop {
            // Take in everything queued before writing anything.
            let msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let due = self.partial_due();
                    match due {
                        Some(at) if at <= Instant::now() => {
                            self.write_partial().await?;
                            continue;
                        }
                        Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                            Ok(m) => m,
                            Err(_) => continue,
                        },
                        None => rx.recv().await,
                    }
                }
            };
            match msg {
                Some(m) => self.take(m).await?,
                None => break,
            }
        }
        if self.dirty() {
            self.write_partial().await?;
        }
        Ok(self.report)
    }

    /// True when the segment in progress holds bytes not yet durable (and at least its long
    /// page header, which identifies the cluster).
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
                store_file(&self.cluster, &self.opts, &name, &content).await
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

    /// Stores the completed segment in progress, then deletes its `.partial`.
    ///
    /// The object is the growing frame itself (its zstd pieces are already compressed): the
    /// same content, length and checksum as the object `archive-push` makes of that segment,
    /// so either one stored first makes the other a duplicate, never a conflict; only the
    /// payload's cut into zstd frames differs (which archive-push's own depends on the cores).
    async fn complete(&mut self) -> Result<(), StreamError> {
        let Some(mut cur) = self.current.take() else {
            return Ok(());
        };
        let name = cur.name.to_string();
        if !cur.admitted {
            archive::admit_segment(
                &self.cluster,
                &cur.name,
                cur.frame.data(),
                self.opts.seg.bytes(),
            )
            .await?;
        }
        let (obj, summary) = cur.frame.snapshot().map_err(StreamError::Encode)?;
        let put = self
            .cluster
            .put_wal_frame(&cur.name, obj, summary)
            .await
            .map_err(archive::ArchiveError::from)?;
        tracing::info!("stored {name} ({put:?})");
        if cur.written > 0 || cur.found > 0 {
            self.cluster
                .delete_stream_partial(&cur.name)
                .await
                .map_err(archive::ArchiveError::from)?;
        }
        self.report.segments += 1;
        self.report.last_segment = Some(name);
        self.set_durable(cur.tli, Lsn(cur.start.0 + cur.frame.len() as u64));
        Ok(())
    }

    /// Writes the segment in progress as its `.partial`.
    async fn write_partial(&mut self) -> Result<(), StreamError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let len = cur.frame.len();
        if !cur.admitted {
            let head = cur.frame.data();
            archive::admit_segment(&self.cluster, &cur.name, head, self.opts.seg.bytes()).await?;
            cur.admitted = true;
        }
        let (obj, _) = cur.frame.snapshot().map_err(StreamError::Encode)?;
        self.cluster
            .put_stream_partial(&cur.name, obj)
            .await
            .map_err(archive::ArchiveError::from)?;
        cur.written = len;
        let (tli, end) = (cur.tli, Lsn(cur.start.0 + len as u64));
        tracing::debug!("stored {}.partial up to {end}", cur.name);
        self.last_write = Some(Instant::now());
        self.report.partial_writes += 1;
        self.set_durable(tli, end);
        Ok(())
    }

    fn set_durable(&mut self, tli: TimelineId, lsn: Lsn) {
        let d = Durable { tli, lsn };
        self.report.durable = Some(d);
        self.durable.send_replace(Some(d));
    }
}

/// Writes `data` to the spool as `name` and stores it with `archive-push`'s function.
async fn store_file(
    cluster: &ClusterRepo,
    opts: &WriterOptions,
    name: &str,
    data: &[u8],
) -> Result<(), StreamError> {
    let path = opts.spool.join(name);
    let spool_err = |source| StreamError::Spool {
        path: path.clone(),
        source,
    };
    tokio::fs::create_dir_all(&opts.spool)
        .await
        .map_err(spool_err)?;
    tokio::fs::write(&path, data).await.map_err(spool_err)?;
    let pushed = archive::push(cluster, &path, opts.compression).await;
    if let Err(e) = tokio::fs::remove_file(&path).await {
        tracing::debug!("removing spool file {}: {e}", path.display());
    }
    let pushed = pushed?;
    tracing::info!("stored {} ({:?})", pushed.name, pushed.outcome);
    Ok(())
}
