//! File restore: every file of the manifest, largest first, on `jobs` parallel tasks: fetched
//! from the repository (transient storage errors retried), decoded and verified into place, or
//! kept when `--delta` finds it intact. Progress is reported as bytes land.

use std::path::PathBuf;
use std::sync::Arc;

use pitr_repo::{BackupManifest, ClusterRepo, ManifestFile, RepoError};
use pitr_storage::Storage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::blocking;
use super::write::{self, FileAction, WriteError};
use crate::restore::layout::Layout;
use crate::restore::{Progress, RestoreError};

/// What the file restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Files written from the repository (or created empty).
    pub files_restored: u64,
    /// Files kept (`--delta`).
    pub files_reused: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes kept.
    pub bytes_reused: u64,
    /// Bytes read from the repository.
    pub bytes_fetched: u64,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Restored { bytes, fetched } => {
                self.files_restored += 1;
                self.bytes_written += bytes;
                self.bytes_fetched += fetched;
            }
            Outcome::Reused { bytes } => {
                self.files_reused += 1;
                self.bytes_reused += bytes;
            }
        }
    }
}

/// Restores every file of `m` to where `layout` puts it, `jobs` at a time. `progress` hears the
/// totals first, then every piece written or file kept, and each finished file.
pub async fn restore_files(
    cluster: &ClusterRepo,
    m: &BackupManifest,
    layout: &Layout,
    delta: bool,
    jobs: usize,
    progress: Option<Arc<dyn Progress>>,
) -> Result<Tally, RestoreError> {
    let storage = cluster.repo().storage().clone();
    let repo = cluster.repo().location();
    if let Some(p) = &progress {
        p.start(m.files.len() as u64, m.total_size());
    }
    let sem = Arc::new(Semaphore::new(jobs.max(1)));
    let mut set: JoinSet<Result<Outcome, RestoreError>> = JoinSet::new();
    let mut tally = Tally::default();
    // Largest first, so that a large relation does not start last and finish alone.
    let mut order: Vec<&ManifestFile> = m.files.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.size));
    for f in order {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))?;
        while let Some(done) = set.try_join_next() {
            tally.add(done.map_err(|e| RestoreError::Internal(e.to_string()))??);
        }
        let job = FileJob {
            storage: storage.clone(),
            repo: repo.clone(),
            key: cluster.backup_file_key(f.stored_in.as_deref().unwrap_or(&m.label), &f.path),
            label: m.label.clone(),
            dest: layout.dest(&f.path),
            file: f.clone(),
            delta,
            threads: jobs,
            progress: progress.clone(),
        };
        set.spawn(async move {
            let _permit = permit;
            restore_one(job).await
        });
    }
    while let Some(done) = set.join_next().await {
        tally.add(done.map_err(|e| RestoreError::Internal(e.to_string()))??);
    }
    if let Some(p) = &progress {
        p.finish();
    }
    Ok(tally)
}

/// How one file was restored.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Restored { bytes: u64, fetched: u64 },
    Reused { bytes: u64 },
}

/// One file to restore, with what its task needs.
struct FileJob {
    storage: Arc<dyn Storage>,
    repo: String,
    key: String,
    label: String,
    dest: PathBuf,
    file: ManifestFile,
    delta: bool,
    /// Threads a large object may be decoded on.
    threads: usize,
    progress: Option<Arc<dyn Progress>>,
}

/// Restores one file: kept, created empty, or fetched and written; tells `progress` it is done.
async fn restore_one(job: FileJob) -> Result<Outcome, RestoreError> {
    let progress = job.progress.clone();
    let outcome = restore_file(job).await?;
    if let Some(p) = &progress {
        if let Outcome::Reused { bytes } = outcome {
            p.advance(bytes);
        }
        p.file_done();
    }
    Ok(outcome)
}

/// Reads the file's object, retrying transient storage errors.
async fn fetch(job: &FileJob) -> Result<bytes::Bytes, RestoreError> {
    let mut attempt = 0;
    loop {
        match job.storage.get(&job.key).await {
            Ok(Some(b)) => return Ok(b),
            Ok(None) => {
                return Err(RestoreError::MissingObject {
                    repo: job.repo.clone(),
                    key: job.key.clone(),
                    path: job.file.path.clone(),
                    label: job.label.clone(),
                })
            }
            Err(e) if e.is_transient() && attempt < crate::archive::GET_RETRY_DELAYS.len() => {
                tracing::warn!("reading {} failed ({e}); retrying", job.key);
                tokio::time::sleep(crate::archive::GET_RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            Err(e) => return Err(RepoError::Storage(e).into()),
        }
    }
}

async fn restore_file(job: FileJob) -> Result<Outcome, RestoreError> {
    let (dest, file, delta) = (job.dest.clone(), job.file.clone(), job.delta);
    let action = blocking(move || {
        let ex = write::existing(&dest).map_err(RestoreError::io("inspect", &dest))?;
        write::decide(&file, ex, delta, || write::hash_file(&dest))
            .map_err(RestoreError::io("read", &dest))
    })
    .await?;
    let obj = match action {
        FileAction::Keep => {
            let (dest, file) = (job.dest.clone(), job.file.clone());
            return blocking(move || {
                let f = std::fs::File::open(&dest).map_err(RestoreError::io("open", &dest))?;
                write::apply_attrs(&f, &file)
                    .map_err(RestoreError::io("set mode and mtime of", &dest))?;
                Ok(Outcome::Reused { bytes: file.size })
            })
            .await;
        }
        FileAction::CreateEmpty => None,
        FileAction::Fetch => Some(fetch(&job).await?),
    };
    let fetched = obj.as_ref().map(|o| o.len() as u64).unwrap_or(0);
    blocking(move || {
        let progress = job.progress.as_deref();
        let n = write::write_file(&job.dest, obj.as_deref(), &job.file, job.threads, progress)
            .map_err(|e| match e {
                WriteError::Frame(source) => RestoreError::Repo(RepoError::Corrupt {
                    repo: job.repo.clone(),
                    key: job.key.clone(),
                    source,
                }),
                WriteError::Mismatch { expected, found } => RestoreError::ObjectMismatch {
                    repo: job.repo.clone(),
                    key: job.key.clone(),
                    path: job.file.path.clone(),
                    label: job.label.clone(),
                    expected_len: expected.0,
                    expected: expected.1,
                    found_len: found.0,
                    found: found.1,
                },
                WriteError::Io(op, source) => RestoreError::Io {
                    op,
                    path: job.dest.clone(),
                    source,
                },
            })?;
        Ok(Outcome::Restored { bytes: n, fetched })
    })
    .await
}
