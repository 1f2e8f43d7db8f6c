//! Asynchronous `archive-push`: while PostgreSQL's archiver asks for one WAL file at a time, a
//! detached worker pushes the files it has marked ready (`pg_wal/archive_status/*.ready`),
//! several at a time, and records a "done" marker for each in a spool directory under `pg_wal`
//! (`pg_wal/pitr-push/<repository>`), so that the following `archive-push` calls return at once.
//! Each repository has a spool (and a worker) of its own: an `archive_command` that pushes into
//! two repositories runs two workers, and neither repository's calls wait for or consume the
//! other's markers.
//!
//! The promises, the same as a synchronous push:
//! - a marker is written only after the object is durable in the repository (the create-only
//!   PUT or link succeeded, and was fsynced), so a worker killed anywhere leaves no marker for a
//!   file that is not stored. The marker itself is written atomically but not fsynced: a crash
//!   can only lose it (or leave it torn, and a torn marker does not parse), and the next call
//!   then pushes the file again, which finds it archived with the same checksum;
//! - a marker is honoured only for the very file it was written for: it records the file's
//!   [`FileStamp`] (device, inode, size, mtime and ctime, and the hash of its first page), the
//!   checksum of what was stored and the repository it went to; a file re-created or rewritten
//!   under the same name (a re-initdb, a restored `pg_wal`) has another inode or ctime and is
//!   pushed again, never acknowledged from the stale marker;
//! - a worker's failure is recorded beside the markers and reported by the next call, which
//!   fails with it (PostgreSQL retries); a call that finds no marker and no live worker pushes
//!   its file itself.
//!
//! Markers of files PostgreSQL no longer lists as ready are removed by the worker.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitr_pg::WalFileName;
use pitr_repo::{ClusterRepo, Compression};

use super::push::{push_stamped, KnownIdentity, PushReport, HEAD_LEN};
use super::ArchiveError;

/// The directory of the spools, inside `pg_wal` (one subdirectory per repository).
pub const PUSH_SPOOL_DIR: &str = "pitr-push";
/// The lock a worker holds (`flock`, released by the kernel when the worker dies).
const LOCK: &str = ".worker.lock";
/// A failure of the worker as a whole (the repository cannot be opened...).
const WORKER_ERROR: &str = "worker.error";
/// First line of a marker.
const MARKER_MAGIC: &str = "pitr-push-done 1";
/// How long an idle worker (nothing ready, or its queue full) waits for more before it exits.
const LINGER: Duration = Duration::from_millis(1500);
/// How often an idle worker looks at `archive_status` again.
const POLL: Duration = Duration::from_millis(10);

/// What identifies one file's content without reading it all: a file rewritten or replaced
/// has another inode, size, mtime or ctime (user space cannot set a ctime back), and the hash
/// of its first page (the long page header: system identifier, timeline, address) is checked
/// on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    head: [u8; 32],
}

impl FileStamp {
    /// The stamp of a file with metadata `meta` whose first bytes (up to 8 KB) are `head`.
    pub(crate) fn new(meta: &fs::Metadata, head: &[u8]) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            head: *blake3::hash(head).as_bytes(),
        }
    }

    /// The stamp of the file at `path` now.
    fn read(path: &Path) -> io::Result<FileStamp> {
        let mut f = fs::File::open(path)?;
        let meta = f.metadata()?;
        let mut head = Vec::with_capacity(HEAD_LEN as usize);
        (&mut f).take(HEAD_LEN).read_to_end(&mut head)?;
        Ok(FileStamp::new(&meta, &head))
    }

    /// Whether `meta` (taken later) is of the same, unmodified file.
    pub(crate) fn same_file(&self, meta: &fs::Metadata) -> bool {
        let now = FileStamp::new(meta, &[]);
        (now.dev, now.ino, now.len, now.mtime_ns, now.ctime_ns)
            == (self.dev, self.ino, self.len, self.mtime_ns, self.ctime_ns)
    }
}

/// A worker's failure, as the next `archive-push` call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The exit code the failure had in the worker (1-125).
    pub code: u8,
    /// Its message.
    pub message: String,
}

/// What the spool says about one WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spooled {
    /// Stored durably by the worker: acknowledge it (the marker is consumed).
    Done {
        /// BLAKE3 of the stored content.
        blake3: String,
    },
    /// The worker failed on it (or as a whole): fail with this.
    Failed(Relayed),
    /// Nothing usable.
    Nothing,
}

/// How the worker works.
#[derive(Debug, Clone, Copy)]
pub struct AheadOptions {
    /// Files pushed at the same time.
    pub jobs: usize,
    /// Most files pushed ahead and not yet asked for by PostgreSQL (markers waiting + in flight).
    pub queue: usize,
    /// Compression of the stored objects.
    pub compression: Compression,
}

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Files stored (or found already archived) and marked done.
    pub marked: usize,
    /// Another worker held the lock: this one did nothing.
    pub already_running: bool,
}

/// A worker's failure: on one file, or before any.
#[derive(Debug)]
pub struct WorkerFailure {
    /// The file it failed on, if any.
    pub name: Option<WalFileName>,
    /// Why.
    pub error: ArchiveError,
}

/// The push spool of one `pg_wal` directory for one repository.
#[derive(Debug, Clone)]
pub struct PushSpool {
    pg_wal: PathBuf,
    dir: PathBuf,
    /// The repository (location and cluster) the markers are written for.
    repo_key: String,
}

impl PushSpool {
    /// The spool for the repository `repo_key` of the `pg_wal` holding `wal_path`
    /// (PostgreSQL's `%p`, `pg_wal/NAME`).
    pub fn beside(wal_path: &Path, repo_key: &str) -> PushSpool {
        let pg_wal = wal_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        PushSpool::of_pg_wal(pg_wal, repo_key)
    }

    /// The spool for the repository `repo_key` (its location and cluster, as the markers record
    /// it) of the `pg_wal` directory `pg_wal`: `pg_wal/pitr-push/` and the first 16 hex digits
    /// of the key's BLAKE3.
    pub fn of_pg_wal(pg_wal: &Path, repo_key: &str) -> PushSpool {
        let id = blake3::hash(repo_key.as_bytes()).to_hex();
        PushSpool {
            pg_wal: pg_wal.to_path_buf(),
            dir: pg_wal.join(PUSH_SPOOL_DIR).join(&id[..16]),
            repo_key: repo_key.to_string(),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `pg_wal` directory.
    pub fn pg_wal(&self) -> &Path {
        &self.pg_wal
    }

    /// Whether PostgreSQL lists `name` as ready to archive (an `archive_command` call, as
    /// opposed to someone running `archive-push` by hand).
    pub fn is_ready(&self, name: &WalFileName) -> bool {
        self.status_dir().join(format!("{name}.ready")).exists()
    }

    /// Reads (and consumes) what the spool holds for `name`, whose file is at `path`, pushed
    /// to the spool's repository: its marker if it matches the file there now, the worker's
    /// failure on it or as a whole. A marker that does not match is removed and ignored.
    pub fn take(&self, name: &WalFileName, path: &Path) -> Spooled {
        let marker = self.marker_path(name);
        let failed_file = self.dir.join(format!("{name}.error"));
        if let Ok(text) = fs::read_to_string(&marker) {
            let found = Marker::parse(&text);
            let now = FileStamp::read(path).ok();
            let _ = fs::remove_file(&marker);
            match found {
                Some(m)
                    if m.name == name.to_string()
                        && m.repo == self.repo_key
                        && Some(m.stamp) == now =>
                {
                    // Stored after an earlier failure: that failure is history.
                    let _ = fs::remove_file(&failed_file);
                    return Spooled::Done { blake3: m.blake3 };
                }
                _ => tracing::info!("{}: the spooled marker is for another file; ignored", name),
            }
        }
        for err_file in [failed_file, self.dir.join(WORKER_ERROR)] {
            if let Some(relayed) = read_error(&err_file) {
                let _ = fs::remove_file(&err_file);
                return Spooled::Failed(relayed);
            }
        }
        Spooled::Nothing
    }

    /// Whether a worker holds the spool's lock.
    pub fn worker_busy(&self) -> bool {
        match fs::OpenOptions::new().write(true).open(self.dir.join(LOCK)) {
            Ok(f) => match f.try_lock() {
                Ok(()) => false,
                Err(fs::TryLockError::WouldBlock) => true,
                Err(fs::TryLockError::Error(_)) => false,
            },
            Err(_) => false,
        }
    }

    /// Whether a worker has something to do besides `name`: a ready file with no marker.
    pub fn wants_worker(&self, name: &WalFileName) -> bool {
        self.ready_files()
            .iter()
            .any(|n| n != name && !self.marker_path(n).exists())
    }

    /// Records a worker's failure for the next call to report (on `name`, or on any file).
    pub fn record_failure(&self, name: Option<&WalFileName>, relayed: &Relayed) {
        let file = name.map_or_else(
            || self.dir.join(WORKER_ERROR),
            |n| self.dir.join(format!("{n}.error")),
        );
        let text = format!("{}\n{}", relayed.code, relayed.message);
        if let Err(e) =
            fs::create_dir_all(&self.dir).and_then(|()| write_atomically(&file, &text, true))
        {
            tracing::warn!("cannot record the failure in {}: {e}", file.display());
        }
    }

    /// The worker: under the spool's lock, pushes the ready files that have no marker (oldest
    /// first, history files before segments, as PostgreSQL archives them), `jobs` at a time
    /// and at most `queue` ahead, writing a marker for each once it is durable in the
    /// repository. Stops at the first failure (after the pushes under way end) and returns it;
    /// exits when nothing has been left to do for a moment.
    pub async fn run_worker(
        &self,
        cluster: &ClusterRepo,
        opts: AheadOptions,
    ) -> Result<WorkerReport, WorkerFailure> {
        let fail = |e: io::Error| WorkerFailure {
            name: None,
            error: self.io_err(e),
        };
        fs::create_dir_all(&self.dir).map_err(fail)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK))
            .map_err(fail)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Ok(WorkerReport {
                    already_running: true,
                    ..WorkerReport::default()
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        let _ = fs::remove_file(self.dir.join(WORKER_ERROR));
        self.work(cluster, opts).await
    }

    async fn work(
        &self,
        cluster: &ClusterRepo,
        opts: AheadOptions,
    ) -> Result<WorkerReport, WorkerFailure> {
        let mut report = WorkerReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut in_flight: HashSet<WalFileName> = HashSet::new();
        let mut failure: Option<WorkerFailure> = None;
        let mut last_progress = Instant::now();
        let known = std::sync::Arc::new(KnownIdentity::new());
        loop {
            if failure.is_none() {
                let ready = self.ready_files();
                self.remove_stale(&ready);
                let mut outstanding = in_flight.len()
                    + ready
                        .iter()
                        .filter(|n| self.marker_path(n).exists())
                        .count();
                // The oldest file without a marker is the one PostgreSQL waits for: it is pushed
                // even when the queue is full (of files pushed ahead of it).
                let oldest = ready.iter().find(|n| !self.marker_path(n).exists());
                for name in &ready {
                    if in_flight.contains(name) || self.marker_path(name).exists() {
                        continue;
                    }
                    let full = outstanding >= opts.queue.max(1) && Some(name) != oldest;
                    if in_flight.len() >= opts.jobs.max(1) || full {
                        break;
                    }
                    let (cluster, path, name, known) = (
                        cluster.clone(),
                        self.pg_wal.join(name.to_string()),
                        *name,
                        known.clone(),
                    );
                    in_flight.insert(name);
                    outstanding += 1;
                    tasks.spawn(async move {
                        let r = push_stamped(&cluster, &path, opts.compression, &known).await;
                        (name, r)
                    });
                }
            }
            let Some(joined) = tasks.join_next().await else {
                if failure.is_some() || last_progress.elapsed() > LINGER {
                    break;
                }
                tokio::time::sleep(POLL).await;
                continue;
            };
            let Ok((name, result)) = joined else { continue };
            in_flight.remove(&name);
            last_progress = Instant::now();
            match result {
                Ok((pushed, Some(stamp))) => {
                    self.mark_done(&name, &pushed, stamp)
                        .map_err(|e| WorkerFailure {
                            name: Some(name),
                            error: self.io_err(e),
                        })?;
                    report.marked += 1;
                }
                Ok((_, None)) => {
                    tracing::info!("{name} changed while it was pushed: no marker written");
                }
                Err(error) => {
                    failure.get_or_insert(WorkerFailure {
                        name: Some(name),
                        error,
                    });
                }
            }
        }
        failure.map_or(Ok(report), Err)
    }

    /// Writes `name`'s marker atomically (temporary file, rename; not fsynced: see below).
    fn mark_done(
        &self,
        name: &WalFileName,
        pushed: &PushReport,
        stamp: FileStamp,
    ) -> io::Result<()> {
        let marker = Marker {
            name: name.to_string(),
            repo: self.repo_key.clone(),
            blake3: pushed.blake3.clone(),
            stamp,
        };
        // Atomic, not fsynced: the object is durable before this marker exists, and a marker
        // lost in a crash only makes the next call push its file again (a duplicate with the
        // same checksum, acknowledged after that check); a torn one does not parse and is
        // ignored. Two fsyncs per segment saved (see the module's documentation).
        write_atomically(&self.marker_path(name), &marker.render(), false)?;
        let _ = fs::remove_file(self.dir.join(format!("{name}.error")));
        Ok(())
    }

    /// Removes markers and failures of files PostgreSQL no longer lists as ready (archived, or
    /// removed), and leftover temporary files.
    fn remove_stale(&self, ready: &[WalFileName]) {
        let ready: HashSet<String> = ready.iter().map(|n| n.to_string()).collect();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let stale = match file.rsplit_once('.') {
                Some((n, "ok" | "error")) => n != "worker" && !ready.contains(n),
                Some((_, "tmp")) => true,
                _ => false,
            };
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The files PostgreSQL lists as ready, in the order it archives them.
    fn ready_files(&self) -> Vec<WalFileName> {
        let Ok(entries) = fs::read_dir(self.status_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<WalFileName> = entries
            .flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                WalFileName::parse(f.strip_suffix(".ready")?).ok()
            })
            .collect();
        names.sort_by_key(|n| (!matches!(n, WalFileName::History { .. }), n.to_string()));
        names
    }

    fn status_dir(&self) -> PathBuf {
        self.pg_wal.join("archive_status")
    }

    fn marker_path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(format!("{name}.ok"))
    }

    fn io_err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Dest {
            path: self.dir.clone(),
            user: pitr_storage::current_os_user(),
            source,
        }
    }
}

/// A worker's failure file: the exit code, then the message.
fn read_error(path: &Path) -> Option<Relayed> {
    let text = fs::read_to_string(path).ok()?;
    let (code, message) = text.split_once('\n')?;
    let code = code.trim().parse::<u8>().ok()?.clamp(1, 125);
    Some(Relayed {
        code,
        message: message.to_string(),
    })
}

/// Writes `text` to `path` atomically (temporary file, rename), and durably (fsync of the file
/// and of the directory) when `durable`.
fn write_atomically(path: &Path, text: &str, durable: bool) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if let (true, Some(dir)) = (durable, path.parent()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A "done" marker: what was stored, where, from which file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    name: String,
    repo: String,
    blake3: String,
    stamp: FileStamp,
}

impl Marker {
    fn render(&self) -> String {
        let s = &self.stamp;
        format!(
            "{MARKER_MAGIC}\nname {}\nrepo {}\nblake3 {}\nbytes {}\ndev {}\nino {}\nmtime_ns {}\nctime_ns {}\nhead {}\n",
            self.name,
            self.repo,
            self.blake3,
            s.len,
            s.dev,
            s.ino,
            s.mtime_ns,
            s.ctime_ns,
            blake3::Hash::from_bytes(s.head).to_hex()
        )
    }

    fn parse(text: &str) -> Option<Marker> {
        let mut lines = text.lines();
        if lines.next()? != MARKER_MAGIC {
            return None;
        }
        let mut get = |key: &str| -> Option<String> {
            let (k, v) = lines.next()?.split_once(' ')?;
            (k == key).then(|| v.to_string())
        };
        let (name, repo, blake3) = (get("name")?, get("repo")?, get("blake3")?);
        let len = get("bytes")?.parse().ok()?;
        let dev = get("dev")?.parse().ok()?;
        let ino = get("ino")?.parse().ok()?;
        let mtime_ns = get("mtime_ns")?.parse().ok()?;
        let ctime_ns = get("ctime_ns")?.parse().ok()?;
        let head = *blake3::Hash::from_hex(get("head")?).ok()?.as_bytes();
        Some(Marker {
            name,
            repo,
            blake3,
            stamp: FileStamp {
                dev,
                ino,
                len,
                mtime_ns,
                ctime_ns,
                head,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn setup() -> (tempfile::TempDir, PushSpool, WalFileName, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let pg_wal = tmp.path().join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let name = WalFileName::parse("000000010000000000000007").unwrap();
        let path = pg_wal.join(name.to_string());
        fs::write(&path, vec![7u8; 20_000]).unwrap();
        fs::write(
            pg_wal.join("archive_status/000000010000000000000007.ready"),
            b"",
        )
        .unwrap();
        (tmp, PushSpool::beside(&path, "repo#main"), name, path)
    }

    fn report(name: &WalFileName) -> PushReport {
        PushReport {
            name: name.to_string(),
            outcome: super::super::PushOutcome::Stored,
            original_bytes: 20_000,
            stored_bytes: Some(10),
            blake3: "ab".repeat(32),
        }
    }

    #[test]
    fn a_marker_acknowledges_only_the_file_it_was_written_for() {
        let (_tmp, spool, name, path) = setup();
        assert!(spool
            .dir()
            .starts_with(path.parent().unwrap().join(PUSH_SPOOL_DIR)));
        assert_ne!(
            spool.dir(),
            PushSpool::beside(&path, "other#main").dir(),
            "another repository has a spool of its own"
        );
        fs::create_dir_all(spool.dir()).unwrap();
        let stamp = FileStamp::read(&path).unwrap();
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        // Another repository: not acknowledged, and the marker is gone.
        let other = PushSpool {
            repo_key: "other#main".into(),
            ..spool.clone()
        };
        assert_eq!(other.take(&name, &path), Spooled::Nothing);
        assert!(!spool.marker_path(&name).exists());
        // The same file: acknowledged once.
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        assert!(matches!(spool.take(&name, &path), Spooled::Done { .. }));
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);
        // Rewritten with the same size under the same name: never acknowledged.
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, vec![8u8; 20_000]).unwrap();
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);
        // Replaced by another file (a new inode) with the same content: not acknowledged either.
        let stamp = FileStamp::read(&path).unwrap();
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        let other = path.with_extension("new");
        fs::write(&other, vec![8u8; 20_000]).unwrap();
        fs::rename(&other, &path).unwrap();
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);
        // A torn marker is ignored.
        fs::write(spool.marker_path(&name), "pitr-push-done 1\nname 0000").unwrap();
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);
    }

    #[test]
    fn failures_are_reported_once_and_stale_markers_removed() {
        let (_tmp, spool, name, path) = setup();
        let relayed = Relayed {
            code: 3,
            message: "the bucket is gone".into(),
        };
        spool.record_failure(Some(&name), &relayed);
        assert_eq!(spool.take(&name, &path), Spooled::Failed(relayed.clone()));
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);
        spool.record_failure(None, &relayed);
        assert_eq!(spool.take(&name, &path), Spooled::Failed(relayed.clone()));
        // Stored on a later try: the marker clears the earlier failure.
        spool.record_failure(Some(&name), &relayed);
        let stamp = FileStamp::read(&path).unwrap();
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        assert!(matches!(spool.take(&name, &path), Spooled::Done { .. }));
        assert_eq!(spool.take(&name, &path), Spooled::Nothing);

        let stamp = FileStamp::read(&path).unwrap();
        spool.mark_done(&name, &report(&name), stamp).unwrap();
        let gone = WalFileName::parse("000000010000000000000006").unwrap();
        spool.mark_done(&gone, &report(&gone), stamp).unwrap();
        fs::write(spool.dir().join("x.ok.tmp"), b"").unwrap();
        assert!(spool.ready_files() == vec![name]);
        assert!(!spool.wants_worker(&name));
        spool.remove_stale(&spool.ready_files());
        assert!(spool.marker_path(&name).exists());
        assert!(!spool.marker_path(&gone).exists());
        assert!(!spool.dir().join("x.ok.tmp").exists());
    }

    #[test]
    fn ready_files_come_history_first_then_by_name() {
        let (_tmp, spool, name, _path) = setup();
        for f in [
            "00000002.history.ready",
            "000000010000000000000005.ready",
            "junk.ready",
        ] {
            fs::write(spool.status_dir().join(f), b"").unwrap();
        }
        let names: Vec<String> = spool.ready_files().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000005",
                &name.to_string()
            ]
        );
        assert!(spool.wants_worker(&name));
        assert!(!spool.worker_busy());
    }
}
