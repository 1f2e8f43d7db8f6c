//! Copies files into the repository in parallel: each file is read once, in chunks, through
//! checksum + compression, and streamed to storage.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pitr_repo::frame::FrameEncoder;
use pitr_repo::{ClusterRepo, Compression, ManifestFile, RepoError, BUNDLE_LIMIT};
use pitr_storage::{PutMode, StorageError};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::blocks::{copy_blocks, copy_summarized, BlockIncr, BlockOutcome};
use super::bundle::{Added, Bundler};
use super::walk::SourceFile;

/// Read size; also the granularity of output flushes to storage.
pub(super) const CHUNK: usize = 1 << 20;

/// Checks data pages while they are copied.
pub trait PageVerifier: Send + Sync {
    /// Returns the numbers of the blocks of `chunk` (read at `offset` of the file at `path`)
    /// that fail verification. `first_block` is the block number of the chunk's first page
    /// within the relation.
    fn bad_blocks(
        &self,
        path: &std::path::Path,
        offset: u64,
        first_block: u32,
        chunk: &[u8],
    ) -> Vec<u32>;
    /// Page size.
    fn block_size(&self) -> usize;
    /// Blocks per relation segment file.
    fn blocks_per_segment(&self) -> u32;
}

/// A failed file copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the source failed.
    #[error("cannot read {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        CopyError::Repo(RepoError::Storage(e))
    }
}

/// Progress counters shared with a progress reporter (which polls them).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read so far.
    pub bytes: AtomicU64,
    /// Files done.
    pub files: AtomicU64,
    /// Files to copy, once known (0 until then; the replication method never knows).
    pub total_files: AtomicU64,
    /// Bytes to read, once known (their size when listed: files still grow or shrink while
    /// the backup runs, so this is an estimate).
    pub total_bytes: AtomicU64,
}

/// What a copy task hands back: manifest entries.
type Copied = Result<Vec<ManifestFile>, CopyError>;

/// Copies `files` into backup `label`, `jobs` at a time (with `blocks`, relation files the
/// parent holds are stored block-wise); returns their manifest entries as the copies finish
/// (the caller sorts them: one entry per file, never a second list of them).
///
/// Files of [`BUNDLE_LIMIT`] bytes or more (and block-level candidates) are copied one task
/// each, largest first; then `jobs` bundlers ([`bundle`](super::bundle)) take the smaller files
/// from one queue, largest first too.
#[allow(clippy::too_many_arguments)]
pub async fn copy_files(
    cluster: &ClusterRepo,
    label: &str,
    files: Vec<SourceFile>,
    jobs: usize,
    compression: Compression,
    verifier: Option<Arc<dyn PageVerifier>>,
    blocks: Option<Arc<BlockIncr>>,
    progress: Arc<Progress>,
) -> Result<Vec<ManifestFile>, CopyError> {
    progress
        .total_files
        .fetch_add(files.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .fetch_add(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    // An object store's uploads wait on the network: more of them in flight than cores.
    let in_flight = jobs.max(cluster.repo().storage().requests_in_flight());
    let sem = Arc::new(Semaphore::new(in_flight.max(1)));
    let (mut own, mut small): (Vec<SourceFile>, Vec<SourceFile>) =
        files.into_iter().partition(|f| {
            f.size >= BUNDLE_LIMIT
                || blocks
                    .as_ref()
                    .is_some_and(|b| b.parent_of(&f.rel).is_some())
        });
    // Largest first, so the long copies start early and the pool drains evenly.
    own.sort_by_key(|f| std::cmp::Reverse(f.size));
    small.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut results: Vec<ManifestFile> = Vec::new();
    let joined = |done: Result<Copied, tokio::task::JoinError>,
                  results: &mut Vec<ManifestFile>|
     -> Result<(), CopyError> {
        let entries = done.map_err(|e| CopyError::Read {
            path: PathBuf::new(),
            source: io::Error::other(e),
        })??;
        results.extend(entries);
        Ok(())
    };
    let acquire = |sem: Arc<Semaphore>| async move {
        sem.acquire_owned().await.map_err(|e| CopyError::Read {
            path: PathBuf::new(),
            source: io::Error::other(e),
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for file in own {
        let permit = acquire(sem.clone()).await?;
        let cluster = cluster.clone();
        let label = label.to_string();
        let verifier = verifier.clone();
        let blocks = blocks.clone();
        let progress = progress.clone();
        let handle = Handle::current();
        tasks.spawn_blocking(move || {
            let r = copy_any(
                &handle,
                &cluster,
                &label,
                &file,
                compression,
                verifier.as_deref(),
                blocks.as_deref(),
                &progress,
            );
            drop(permit);
            Ok(r?.into_iter().collect())
        });
        // Surface failures early instead of after queuing everything.
        while let Some(done) = tasks.try_join_next() {
            joined(done, &mut results)?;
        }
    }
    let queue = Arc::new((small, AtomicUsize::new(0)));
    let ids = Arc::new(AtomicU64::new(0));
    for _ in 0..jobs.max(1).min(queue.0.len()) {
        let permit = acquire(sem.clone()).await?;
        let (cluster, label) = (cluster.clone(), label.to_string());
        let (queue, ids) = (queue.clone(), ids.clone());
        let (verifier, progress) = (verifier.clone(), progress.clone());
        let handle = Handle::current();
        tasks.spawn_blocking(move || {
            let env = (&handle, &cluster, label.as_str(), compression);
            let r = bundle_queue(env, &queue, &ids, verifier.as_deref(), &progress);
            drop(permit);
            r
        });
    }
    while let Some(done) = tasks.join_next().await {
        joined(done, &mut results)?;
    }
    // Files that vanished during the copy (dropped relations) are simply not in the backup.
    Ok(results)
}

/// One bundler's work: files from `queue` until it is empty (a file that grew past the limit
/// since it was listed is copied as its own object).
fn bundle_queue(
    (rt, cluster, label, compression): (&Handle, &ClusterRepo, &str, Compression),
    queue: &(Vec<SourceFile>, AtomicUsize),
    ids: &AtomicU64,
    verifier: Option<&dyn PageVerifier>,
    progress: &Progress,
) -> Copied {
    let read_err = |source| CopyError::Read {
        path: PathBuf::new(),
        source,
    };
    let mut bundler = Bundler::new(rt, cluster, label, ids, compression).map_err(read_err)?;
    let mut own = Vec::new();
    while let Some(file) = queue.0.get(queue.1.fetch_add(1, Ordering::Relaxed)) {
        match bundler.add(file, verifier, progress)? {
            Added::Taken | Added::Vanished => {}
            Added::TooLarge => {
                let entry = copy_one(rt, cluster, label, file, compression, verifier, progress)?;
                own.extend(entry);
            }
        }
    }
    let mut done = bundler.finish()?;
    done.extend(own);
    Ok(done)
}

/// Copies one file, block-wise when `blocks` allows it; `None` when it disappeared before it
/// could be opened.
#[allow(clippy::too_many_arguments)]
fn copy_any(
    rt: &Handle,
    cluster: &ClusterRepo,
    label: &str,
    file: &SourceFile,
    compression: Compression,
    verifier: Option<&dyn PageVerifier>,
    blocks: Option<&BlockIncr>,
    progress: &Progress,
) -> Result<Option<ManifestFile>, CopyError> {
    let verify = verifier.filter(|_| is_checksummed(&file.rel));
    if let Some((incr, pf)) = blocks.and_then(|b| b.parent_of(&file.rel).map(|pf| (b, pf))) {
        let summarized = match &incr.summarized {
            Some(sum) => copy_summarized(
                rt,
                cluster,
                label,
                file,
                compression,
                verify,
                progress,
                (incr, sum),
                pf,
            )?,
            None => None,
        };
        let outcome = match summarized {
            Some(o) => o,
            None => copy_blocks(
                rt,
                cluster,
                label,
                file,
                compression,
                verify,
                progress,
                incr,
                pf,
            )?,
        };
        match outcome {
            BlockOutcome::Vanished => return Ok(None),
            BlockOutcome::Stored(entry) => return Ok(Some(*entry)),
            BlockOutcome::Whole => {}
        }
    }
    copy_one(rt, cluster, label, file, compression, verifier, progress)
}

/// Copies one file whole; `None` when it disappeared before it could be opened.
fn copy_one(
    rt: &Handle,
    cluster: &ClusterRepo,
    label: &str,
    file: &SourceFile,
    compression: Compression,
    verifier: Option<&dyn PageVerifier>,
    progress: &Progress,
) -> Result<Option<ManifestFile>, CopyError> {
    let read_err = |source| CopyError::Read {
        path: file.abs.clone(),
        source,
    };
    let mut f = match File::open(&file.abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut entry = ManifestFile::new(file.rel.clone(), file.mode, file.mtime);
    let verify = verifier.filter(|_| is_checksummed(&file.rel));
    let first_block_of_file = verify.map(|v| first_block(v, &file.rel)).unwrap_or(0);
    let key = cluster.backup_file_key(label, &file.rel);
    let storage = cluster.repo().storage().clone();
    let mut upload = None;
    let mut enc = FrameEncoder::new(compression).map_err(read_err)?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    let mut stored: u64 = 0;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if let Some(v) = verify {
            let bs = v.block_size() as u64;
            let first = first_block_of_file.saturating_add((offset / bs) as u32);
            entry
                .checksum_failures
                .extend(v.bad_blocks(&file.abs, offset, first, chunk));
        }
        enc.write(chunk).map_err(read_err)?;
        offset += n as u64;
        progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let out = enc.take_output();
        if !out.is_empty() {
            if upload.is_none() {
                upload = Some(rt.block_on(storage.upload(&key))?);
            }
            if let Some(up) = upload.as_mut() {
                stored += out.len() as u64;
                rt.block_on(up.write(Bytes::from(out)))?;
            }
        }
        if n < buf.len() {
            break;
        }
    }
    entry.size = offset;
    if offset > 0 {
        let (rest, summary) = enc.finish().map_err(read_err)?;
        let mut up = match upload {
            Some(u) => u,
            None => rt.block_on(storage.upload(&key))?,
        };
        stored += rest.len() as u64;
        rt.block_on(up.write(Bytes::from(rest)))?;
        rt.block_on(up.finish(PutMode::Overwrite))?;
        // What was written is what storage reports (plaintext sizes in an encrypted one).
        entry.stored_size = stored;
        entry.blake3 = summary.checksum.to_string();
    }
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(Some(entry))
}

pub(super) fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Block number, within its relation, of the first page of relation file `rel`.
pub(super) fn first_block(v: &dyn PageVerifier, rel: &str) -> u32 {
    segment_number(rel).saturating_mul(v.blocks_per_segment())
}

/// Files whose pages carry data checksums: relation files under base/, global/ and tablespaces.
pub(super) fn is_checksummed(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    (rel.starts_with("base/") || rel.starts_with("global/") || rel.starts_with("pg_tblspc/"))
        && super::walk::is_relation_file(name)
        && !name.contains("_init")
}

/// Segment number of a relation file (`16384.3` → 3).
pub(super) fn segment_number(rel: &str) -> u32 {
    rel.rsplit('/')
        .next()
        .and_then(|n| n.split_once('.'))
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}
