//! The stream's storing stage, a task of its own behind the writer: it does the repository
//! writes the writer prepared (a `.partial`, a completed segment, a timeline history file)
//! one at a time in the order given, and publishes how far the WAL is durable in the
//! repository after each. So receiving and compressing go on while a segment is fsynced or
//! uploaded, and the durable position (what `--synchronous` reports as flushed) never runs
//! ahead of what the repository holds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pitr_pg::WalFileName;
use pitr_repo::frame::GrowingFrame;
use pitr_repo::{ClusterRepo, Compression};
use tokio::sync::{mpsc, watch, Notify};

use super::writer::Durable;
use super::StreamError;
use crate::archive;

/// Completed segments (and other writes) queued for the store before the writer waits.
pub(super) const STORE_QUEUE: usize = 4;

/// A repository write prepared by the writer.
#[derive(Debug)]
pub(super) enum StoreJob {
    /// The segment in progress as its `.partial`.
    Partial {
        /// The segment.
        name: WalFileName,
        /// Its first bytes, when its cluster is still to be checked.
        admit: Option<Vec<u8>>,
        /// The frame of the bytes so far.
        obj: Vec<u8>,
        /// Where the WAL is durable once it is written.
        durable: Durable,
    },
    /// A completed segment.
    Segment {
        /// The segment.
        name: WalFileName,
        /// Its first bytes, when its cluster is still to be checked.
        admit: Option<Vec<u8>>,
        /// Its frame, complete (its last pieces may still be compressing: the store waits
        /// for them, not the writer).
        frame: GrowingFrame,
        /// A `.partial` of it may exist: delete it once the segment is stored.
        delete_partial: bool,
        /// Where the WAL is durable once it is stored.
        durable: Durable,
    },
    /// A timeline history file.
    History {
        /// `TTTTTTTT.history`.
        name: String,
        /// Its content.
        content: Vec<u8>,
    },
}

/// What the store did.
#[derive(Debug, Clone, Default)]
pub(super) struct StoreReport {
    /// Segments stored.
    pub segments: u64,
    /// The last one.
    pub last_segment: Option<String>,
    /// `.partial` writes.
    pub partial_writes: u64,
    /// Where WAL is durable.
    pub durable: Option<Durable>,
}

/// The writer's side of the store: its queue and how many jobs it has not finished.
pub(super) struct StoreHandle {
    tx: mpsc::Sender<StoreJob>,
    /// Jobs sent and not yet done.
    pending: Arc<AtomicUsize>,
    /// Signalled each time a job is done.
    done: Arc<Notify>,
    /// Set when a job failed (the store then stops).
    failed: Arc<AtomicBool>,
    join: tokio::task::JoinHandle<Result<StoreReport, StreamError>>,
}

impl StoreHandle {
    /// Starts the store task, publishing durable positions on `durable`.
    pub(super) fn start(
        cluster: ClusterRepo,
        compression: Compression,
        spool: PathBuf,
        seg_bytes: u64,
        durable: watch::Sender<Option<Durable>>,
    ) -> StoreHandle {
        let (tx, rx) = mpsc::channel(STORE_QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        let failed = Arc::new(AtomicBool::new(false));
        let store = Store {
            cluster,
            compression,
            spool,
            seg_bytes,
            durable,
            report: StoreReport::default(),
            pending: Arc::clone(&pending),
            done: Arc::clone(&done),
            failed: Arc::clone(&failed),
        };
        StoreHandle {
            tx,
            pending,
            done,
            failed,
            join: tokio::spawn(store.run(rx)),
        }
    }

    /// True when every job sent is done.
    pub(super) fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Waits until a job is done (at once when one was done since the last wait); fails
    /// when the store stopped on an error (returned by [`StoreHandle::finish`]), so that the
    /// writer stops at once rather than at its next write.
    pub(super) async fn job_done(&self) -> Result<(), StreamError> {
        self.done.notified().await;
        if self.failed.load(Ordering::Acquire) {
            return Err(StreamError::WriterStopped);
        }
        Ok(())
    }

    /// Queues a job (waits while the queue is full); fails when the store stopped (its error
    /// is returned by [`StoreHandle::finish`]).
    pub(super) async fn send(&self, job: StoreJob) -> Result<(), StreamError> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.tx.send(job).await.map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            StreamError::WriterStopped
        })
    }

    /// Lets the store finish the jobs queued and returns its report.
    pub(super) async fn finish(self) -> Result<StoreReport, StreamError> {
        drop(self.tx);
        self.join
            .await
            .map_err(|e| StreamError::Unexpected(format!("the repository store failed: {e}")))?
    }
}

/// The store task's state.
struct Store {
    cluster: ClusterRepo,
    compression: Compression,
    spool: PathBuf,
    seg_bytes: u64,
    durable: watch::Sender<Option<Durable>>,
    report: StoreReport,
    pending: Arc<AtomicUsize>,
    done: Arc<Notify>,
    failed: Arc<AtomicBool>,
}

impl Store {
    async fn run(mut self, mut rx: mpsc::Receiver<StoreJob>) -> Result<StoreReport, StreamError> {
        while let Some(job) = rx.recv().await {
            let result = self.job(job).await;
            if result.is_err() {
                self.failed.store(true, Ordering::Release);
            }
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.done.notify_one();
            result?;
        }
        Ok(self.report)
    }

    async fn job(&mut self, job: StoreJob) -> Result<(), StreamError> {
        match job {
            StoreJob::Partial {
                name,
                admit,
                obj,
                durable,
            } => {
                if let Some(head) = admit {
                    archive::admit_segment(&self.cluster, &name, &head, self.seg_bytes).await?;
                }
                self.cluster
                    .put_stream_partial(&name, obj)
                    .await
                    .map_err(archive::ArchiveError::from)?;
                tracing::debug!("stored {name}.partial up to {}", durable.lsn);
                self.report.partial_writes += 1;
                self.set_durable(durable);
            }
            StoreJob::Segment {
                name,
                admit,
                mut frame,
                delete_partial,
                durable,
            } => {
                if let Some(head) = admit {
                    archive::admit_segment(&self.cluster, &name, &head, self.seg_bytes).await?;
                }
                let (obj, summary) = tokio::task::spawn_blocking(move || frame.snapshot())
                    .await
                    .map_err(|e| StreamError::Unexpected(format!("compressing {name}: {e}")))?
                    .map_err(StreamError::Encode)?;
                let put = self
                    .cluster
                    .put_wal_frame(&name, obj, summary)
                    .await
                    .map_err(archive::ArchiveError::from)?;
                tracing::info!("stored {name} ({put:?})");
                if delete_partial {
                    self.cluster
                        .delete_stream_partial(&name)
                        .await
                        .map_err(archive::ArchiveError::from)?;
                }
                self.report.segments += 1;
                self.report.last_segment = Some(name.to_string());
                self.set_durable(durable);
            }
            StoreJob::History { name, content } => self.store_file(&name, &content).await?,
        }
        Ok(())
    }

    fn set_durable(&mut self, d: Durable) {
        self.report.durable = Some(d);
        self.durable.send_replace(Some(d));
    }

    /// Writes `data` to the spool as `name` and stores it with `archive-push`'s function.
    async fn store_file(&self, name: &str, data: &[u8]) -> Result<(), StreamError> {
        let path = self.spool.join(name);
        let spool_err = |source| StreamError::Spool {
            path: path.clone(),
            source,
        };
        tokio::fs::create_dir_all(&self.spool)
            .await
            .map_err(spool_err)?;
        tokio::fs::write(&path, data).await.map_err(spool_err)?;
        let pushed = archive::push(&self.cluster, &path, self.compression).await;
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::debug!("removing spool file {}: {e}", path.display());
        }
        let pushed = pushed?;
        tracing::info!("stored {} ({:?})", pushed.name, pushed.outcome);
        Ok(())
    }
}
