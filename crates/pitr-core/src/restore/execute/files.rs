//! File restore: every file of the manifest, largest first, on `jobs` parallel tasks: fetched
//! from the repository (transient storage errors retried), decoded and verified into place, or
//! kept when `--delta` finds it intact. Progress is reported as bytes land.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use pitr_repo::stored::{self, Opened, StoredError};
use pitr_repo::{BackupManifest, ClusterRepo, ManifestFile, RepoError};
use pitr_storage::Storage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod bundled;

use super::blocking;
use super::rebuild;
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
    // Decoding uses `jobs` threads; fetches from an object store wait on the network, so more
    // of them are in flight.
    let sem = Arc::new(Semaphore::new(
        jobs.max(storage.requests_in_flight()).max(1),
    ));
    let mut set: JoinSet<Result<Vec<Outcome>, RestoreError>> = JoinSet::new();
    let mut tally = Tally::default();
    let job = |f: &ManifestFile| FileJob {
        storage: storage.clone(),
        repo: repo.clone(),
        key: cluster.backup_file_key(f.stored_in.as_deref().unwrap_or(&m.label), &f.path),
        label: m.label.clone(),
        dest: layout.dest(&f.path),
        file: f.clone(),
        objects: f
            .objects(&m.label)
            .iter()
            .map(|o| cluster.object_key(o, &f.path))
            .collect(),
        checksums_before: m.data_checksums.then(|| m.start()),
        delta,
        threads: jobs,
        progress: progress.clone(),
    };
    // Bundled files by bundle: each bundle is read in a few large ranged reads.
    let mut bundles: BTreeMap<String, Vec<FileJob>> = BTreeMap::new();
    // Largest first, so that a large relation does not start last and finish alone.
    let mut order: Vec<&ManifestFile> = Vec::new();
    for f in &m.files {
        match (&f.bundle, &f.blocks) {
            (Some(b), None) => {
                let holder = f.stored_in.as_deref().unwrap_or(&m.label);
                let key = cluster.bundle_key(holder, b.id);
                bundles.entry(key).or_default().push(job(f));
            }
            _ => order.push(f),
        }
    }
    order.sort_by_key(|f| std::cmp::Reverse(f.size));
    let singles = order.into_iter().map(|f| Work::File(Box::new(job(f))));
    let grouped = bundles
        .into_iter()
        .map(|(key, members)| Work::Bundle(key, members));
    for work in singles.chain(grouped) {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RestoreError::Internal(e.to_string()))?;
        while let Some(done) = set.try_join_next() {
            for o in done.map_err(|e| RestoreError::Internal(e.to_string()))?? {
                tally.add(o);
            }
        }
        set.spawn(async move {
            let _permit = permit;
            match work {
                Work::File(job) => Ok(vec![restore_one(*job, None, None).await?]),
                Work::Bundle(key, members) => bundled::restore_bundle(&key, members).await,
            }
        });
    }
    while let Some(done) = set.join_next().await {
        for o in done.map_err(|e| RestoreError::Internal(e.to_string()))?? {
            tally.add(o);
        }
    }
    if let Some(p) = &progress {
        p.finish();
    }
    Ok(tally)
}

/// What one restore task does: a file, or the bundled files of one bundle.
enum Work {
    File(Box<FileJob>),
    Bundle(String, Vec<FileJob>),
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
    /// Keys of a block file's objects: base, then deltas oldest first.
    objects: Vec<String>,
    /// The backup's start LSN when the cluster has data checksums (block files verify pages).
    checksums_before: Option<pitr_pg::Lsn>,
    delta: bool,
    /// Threads a large object may be decoded on.
    threads: usize,
    progress: Option<Arc<dyn Progress>>,
}

/// Restores one file: kept, created empty, or fetched (or taken from `fetched`, its frame
/// read with its bundle) and written, as `decided` (else as [`decide`] says); tells
/// `progress` it is done.
async fn restore_one(
    job: FileJob,
    decided: Option<FileAction>,
    fetched: Option<Bytes>,
) -> Result<Outcome, RestoreError> {
    let progress = job.progress.clone();
    let outcome = restore_file(job, decided, fetched).await?;
    if let Some(p) = &progress {
        if let Outcome::Reused { bytes } = outcome {
            p.advance(bytes);
        }
        p.file_done();
    }
    Ok(outcome)
}

/// Opens the file's object (read whole when small, else in pieces as it is decoded), retrying
/// transient storage errors.
async fn fetch(job: &FileJob) -> Result<Opened, RestoreError> {
    retrying(job, &job.key, || {
        stored::open_stored(&job.storage, &job.key)
    })
    .await
}

/// Runs `read` on object `key` until it succeeds, fails for good, or the retries for transient
/// storage errors are spent; an absent object is an error naming the file and the backup.
async fn retrying<T, F, Fut>(job: &FileJob, key: &str, read: F) -> Result<T, RestoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StoredError>>,
{
    let mut attempt = 0;
    loop {
        match read().await {
            Ok(Some(o)) => return Ok(o),
            Ok(None) => {
                return Err(RestoreError::MissingObject {
                    repo: job.repo.clone(),
                    key: key.to_string(),
                    path: job.file.path.clone(),
                    label: job.label.clone(),
                })
            }
            Err(StoredError::Storage(e))
                if e.is_transient() && attempt < crate::archive::GET_RETRY_DELAYS.len() =>
            {
                tracing::warn!("reading {key} failed ({e}); retrying");
                tokio::time::sleep(crate::archive::GET_RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            Err(StoredError::Storage(e)) => return Err(RepoError::Storage(e).into()),
            Err(StoredError::Frame(source)) => {
                return Err(RestoreError::Repo(RepoError::Corrupt {
                    repo: job.repo.clone(),
                    key: key.to_string(),
                    source,
                }))
            }
        }
    }
}

/// Whether the file must be fetched, created empty, or (`--delta`) is intact where it lies.
async fn decide(job: &FileJob) -> Result<FileAction, RestoreError> {
    let (dest, file, delta) = (job.dest.clone(), job.file.clone(), job.delta);
    blocking(move || {
        let ex = write::existing(&dest).map_err(RestoreError::io("inspect", &dest))?;
        write::decide(&file, ex, delta, || write::hash_file(&dest))
            .map_err(RestoreError::io("read", &dest))
    })
    .await
}

async fn restore_file(
    job: FileJob,
    decided: Option<FileAction>,
    fetched: Option<Bytes>,
) -> Result<Outcome, RestoreError> {
    let action = match decided {
        Some(a) => a,
        None => decide(&job).await?,
    };
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
        FileAction::Fetch if job.file.blocks.is_some() => return restore_block_file(job).await,
        FileAction::Fetch => match fetched {
            Some(b) => Some(Opened::Whole(b)),
            None => Some(fetch(&job).await?),
        },
    };
    let fetched = match &obj {
        Some(Opened::Whole(b)) => b.len() as u64,
        Some(Opened::Streamed(s)) => s.stored_len,
        None => 0,
    };
    blocking(move || {
        let progress = job.progress.as_deref();
        let whole;
        let src = match obj {
            Some(Opened::Whole(b)) => {
                whole = b;
                write::Source::Whole(&whole)
            }
            Some(Opened::Streamed(s)) => write::Source::Streamed(s),
            None => write::Source::Empty,
        };
        let n = write::write_file(&job.dest, src, &job.file, job.threads, progress).map_err(
            |e| match e {
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
                WriteError::Storage(e) => RestoreError::Repo(RepoError::Storage(e)),
                WriteError::Io(op, source) => RestoreError::Io {
                    op,
                    path: job.dest.clone(),
                    source,
                },
            },
        )?;
        Ok(Outcome::Restored { bytes: n, fetched })
    })
    .await
}

/// Rebuilds a block file, verified, from its objects read one after the other as they are
/// decoded (memory bounded by a few pieces, whatever the file's size or the chain's length).
async fn restore_block_file(job: FileJob) -> Result<Outcome, RestoreError> {
    let Some(layers) = job.file.blocks.clone() else {
        return Err(RestoreError::Internal("not a block file".into()));
    };
    let fail = {
        let (path, label, repo, dest) = (
            job.file.path.clone(),
            job.label.clone(),
            job.repo.clone(),
            job.dest.clone(),
        );
        move |e: rebuild::BlockWriteError| match e {
            rebuild::BlockWriteError::Rebuild(e) => RestoreError::BlockRebuild {
                path: path.clone(),
                label: label.clone(),
                repo: repo.clone(),
                reason: e.to_string(),
            },
            rebuild::BlockWriteError::Storage(e) => RestoreError::Repo(RepoError::Storage(e)),
            rebuild::BlockWriteError::Io(op, source) => RestoreError::Io {
                op,
                path: dest.clone(),
                source,
            },
        }
    };
    let (dest, file, before) = (job.dest.clone(), job.file.clone(), job.checksums_before);
    let f = fail.clone();
    let mut rb =
        blocking(move || rebuild::BlockRebuild::create(&dest, &layers, &file, before).map_err(f))
            .await?;
    if rb.objects() != job.objects.len() {
        return Err(RestoreError::Internal(format!(
            "{}: {} objects for {} layers",
            job.file.path,
            job.objects.len(),
            rb.objects()
        )));
    }
    let mut fetched = 0;
    for (k, key) in job.objects.iter().enumerate() {
        let obj = retrying(&job, key, || stored::open_stored(&job.storage, key)).await?;
        fetched += match &obj {
            Opened::Whole(b) => b.len() as u64,
            Opened::Streamed(s) => s.stored_len,
        };
        let (threads, progress, f) = (job.threads, job.progress.clone(), fail.clone());
        rb = blocking(move || {
            rb.layer(k, obj, threads, progress.as_deref()).map_err(f)?;
            Ok(rb)
        })
        .await?;
    }
    let n = blocking(move || rb.finish().map_err(fail)).await?;
    Ok(Outcome::Restored { bytes: n, fetched })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use bytes::Bytes;
    use pitr_repo::frame::{self, Compression, FrameEncoder};
    use pitr_repo::{BackupKind, Repo};
    use pitr_storage::{LocalFs, PutMode};

    use super::*;

    /// Records what a restore tells its progress reporter.
    #[derive(Debug, Default)]
    struct Recorder {
        started: Mutex<Vec<(u64, u64)>>,
        advances: AtomicU64,
        bytes: AtomicU64,
        files: AtomicU64,
        finished: AtomicU64,
    }

    impl Progress for Recorder {
        fn start(&self, files: u64, bytes: u64) {
            self.started.lock().unwrap().push((files, bytes));
        }
        fn advance(&self, bytes: u64) {
            self.advances.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        fn file_done(&self) {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A backup of `files` (path, content) stored in a fresh local repository, as pitr backup
    /// stores them: large files in zstd pieces that decode on several threads.
    async fn stored_backup(
        root: &std::path::Path,
        files: &[(&str, Vec<u8>)],
    ) -> (ClusterRepo, BackupManifest) {
        std::fs::create_dir_all(root.join("repo")).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalFs::open(root.join("repo")).unwrap());
        let cluster = Repo::new(storage.clone()).cluster("main").unwrap();
        let label = "20261202T000000F";
        let mut m = BackupManifest {
            label: label.into(),
            kind: BackupKind::Full,
            parent: None,
            pg_major: 17,
            system_id: 7,
            wal_seg_size: 16 << 20,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_time: "2026-12-02T00:00:00Z".parse().unwrap(),
            stop_time: "2026-12-02T00:00:01Z".parse().unwrap(),
            backup_label: String::new(),
            tablespace_map: None,
            tablespaces: Vec::new(),
            data_checksums: true,
            dirs: Vec::new(),
            files: Vec::new(),
            pitr_version: "test".into(),
        };
        for (path, content) in files {
            let (obj, summary) = if content.len() > frame::ZSTD_PIECE {
                let mut enc = FrameEncoder::new(Compression::Zstd(1)).unwrap();
                enc.write(content).unwrap();
                enc.finish().unwrap()
            } else {
                frame::encode(content, Compression::Zstd(1)).unwrap()
            };
            if !content.is_empty() {
                let key = cluster.backup_file_key(label, path);
                storage
                    .put(&key, Bytes::from(obj.clone()), PutMode::Create)
                    .await
                    .unwrap();
            }
            m.files.push(ManifestFile {
                path: path.to_string(),
                size: content.len() as u64,
                mode: 0o600,
                mtime: 1_700_000_000,
                blake3: if content.is_empty() {
                    String::new()
                } else {
                    summary.checksum.to_string()
                },
                stored_size: if content.is_empty() {
                    0
                } else {
                    obj.len() as u64
                },
                stored_in: None,
                checksum_failures: vec![],
                blocks: None,
                bundle: None,
            });
        }
        (cluster, m)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_hears_every_byte_and_file_once() {
        let d = tempfile::tempdir().unwrap();
        // A relation segment in several zstd pieces, small files, and an empty one.
        let big: Vec<u8> = (0..(frame::ZSTD_PIECE * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let files = vec![
            ("base/1/16384", big),
            ("base/1/1259", b"relation bytes".repeat(700)),
            ("PG_VERSION", b"17\n".to_vec()),
            ("pg_logical/replorigin_checkpoint", Vec::new()),
        ];
        let (cluster, m) = stored_backup(d.path(), &files).await;
        let total: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
        assert_eq!(m.total_size(), total);
        let pgdata = d.path().join("data");
        for dir in ["base/1", "pg_logical"] {
            std::fs::create_dir_all(pgdata.join(dir)).unwrap();
        }
        let layout = Layout {
            pgdata: pgdata.clone(),
            tablespaces: Default::default(),
        };

        let rec = Arc::new(Recorder::default());
        let tally = restore_files(&cluster, &m, &layout, false, 2, Some(rec.clone()))
            .await
            .unwrap();
        assert_eq!(*rec.started.lock().unwrap(), vec![(4, total)]);
        assert_eq!(rec.bytes.load(Ordering::Relaxed), total);
        assert_eq!(rec.files.load(Ordering::Relaxed), 4);
        assert_eq!(rec.finished.load(Ordering::Relaxed), 1);
        // The large file was reported piece by piece, not once at its end.
        assert!(rec.advances.load(Ordering::Relaxed) >= 3 + 2);
        assert_eq!(tally.files_restored, 4);
        assert_eq!(tally.bytes_written, total);
        for (path, content) in &files {
            assert_eq!(
                &std::fs::read(pgdata.join(path)).unwrap(),
                content,
                "{path}"
            );
        }

        // --delta over the restored files: everything is kept, and still adds up.
        let rec = Arc::new(Recorder::default());
        let tally = restore_files(&cluster, &m, &layout, true, 2, Some(rec.clone()))
            .await
            .unwrap();
        assert_eq!(rec.bytes.load(Ordering::Relaxed), total);
        assert_eq!(rec.files.load(Ordering::Relaxed), 4);
        assert_eq!((tally.files_reused, tally.bytes_reused), (4, total));
    }
}
