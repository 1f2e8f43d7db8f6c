//! Read-ahead for `archive-get`: while PostgreSQL replays segment N, the next segments are
//! fetched, verified and decompressed into a spool directory, so that the following
//! `restore_command` calls only rename a local file.
//!
//! Only complete segments are spooled. Spool files are written atomically (temporary name, then
//! rename) and were verified against their checksum when fetched, so serving one is as safe as
//! fetching from the repository. Files for segments PostgreSQL has moved past are removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pitr_pg::page::LongPageHeader;
use pitr_pg::WalFileName;
use pitr_repo::ClusterRepo;

use super::fetch::fetch_to;
use super::ArchiveError;

/// Name of the lock file a filler holds while it works.
const LOCK: &str = ".filling";
/// A lock older than this is considered abandoned (its filler was killed).
const STALE_LOCK: Duration = Duration::from_secs(120);
/// How long [`Spool::clear`] waits for a filler to finish.
const CLEAR_WAIT: Duration = Duration::from_secs(3);

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool at `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    /// The default spool for files restored to `dest`: `pitr-spool` beside it (in `pg_wal`,
    /// where PostgreSQL asks for them), so that it is on the same file system.
    pub fn beside(dest: &Path) -> Spool {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Spool::new(dir.join("pitr-spool"))
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The read-ahead policy: after serving `name` (whose copy is at `served`), the segments
    /// worth fetching into the spool, the `window` that follow it on its timeline; none when at
    /// least half of them are spooled already (a filler is at work, or just was), when `name`
    /// is not a segment, or when `served` does not tell the segment size.
    pub fn read_ahead(&self, name: &WalFileName, served: &Path, window: u32) -> Vec<WalFileName> {
        let ahead = Spool::ahead(name, served, window);
        let missing = ahead
            .iter()
            .filter(|n| !self.dir.join(n.to_string()).exists())
            .count();
        if missing == 0 || (missing as u32) < window / 2 {
            return Vec::new();
        }
        ahead
    }

    /// Moves a spooled copy of `name` to `dest` if there is one. Also drops spooled segments of
    /// the same timeline that sort before `name` (recovery has moved past them).
    pub fn take(&self, name: &WalFileName, dest: &Path) -> io::Result<bool> {
        if !name.holds_wal() {
            return Ok(false);
        }
        let wanted = name.to_string();
        let tli = &wanted[..8];
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.len() == 24 && n.starts_with(tli) && n < wanted {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        match fs::rename(self.dir.join(&wanted), dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            // Spool on another filesystem than dest: copy instead.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                fs::copy(self.dir.join(&wanted), dest)?;
                let _ = fs::remove_file(self.dir.join(&wanted));
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Empties and removes the spool once recovery is over, so that a promoted cluster does not
    /// keep read-ahead copies in `pg_wal`. Called when PostgreSQL asks for a timeline history
    /// file the repository does not have: it does so when recovery ends, to choose the new
    /// timeline (and when it starts or a standby rescans, when the spool holds nothing it still
    /// needs). Waits a little for a filler at work to finish; only logs what it cannot remove.
    pub fn clear(&self) {
        self.clear_within(CLEAR_WAIT);
    }

    fn clear_within(&self, wait: Duration) {
        let lock = self.dir.join(LOCK);
        let deadline = std::time::Instant::now() + wait;
        while lock.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(_lock) = Lock::acquire(&lock) else {
            if self.dir.exists() {
                tracing::info!(
                    "read-ahead spool {} is busy; left as is",
                    self.dir.display()
                );
            }
            return;
        };
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name() != LOCK {
                if let Err(err) = fs::remove_file(e.path()) {
                    tracing::warn!("cannot remove {}: {err}", e.path().display());
                }
            }
        }
        drop(_lock);
        let _ = fs::remove_dir(&self.dir);
    }

    /// The `count` segments after `name` on its timeline, given the segment just served (to
    /// learn the segment size from its header).
    fn ahead(name: &WalFileName, served: &Path, count: u32) -> Vec<WalFileName> {
        if count == 0 || !matches!(name, WalFileName::Segment { .. }) {
            return Vec::new();
        }
        let mut head = [0u8; pitr_pg::page::LONG_HEADER_LEN];
        let ok = fs::File::open(served)
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut head))
            .is_ok();
        let Some(seg_size) = ok
            .then(|| LongPageHeader::parse(&head).ok())
            .flatten()
            .map(|h| h.seg_size)
        else {
            return Vec::new();
        };
        let Some(mut segno) = name.segno(seg_size) else {
            return Vec::new();
        };
        (0..count)
            .map(|_| {
                segno = segno.next();
                WalFileName::segment(name.timeline(), segno, seg_size)
            })
            .collect()
    }

    /// Fetches `names` (in order, `parallel` at a time) into the spool, skipping those already
    /// there, and stopping at the first one the repository does not have. Only one filler works
    /// on a spool at a time; returns how many files were added.
    pub async fn fill(
        &self,
        cluster: &ClusterRepo,
        names: &[WalFileName],
        parallel: usize,
    ) -> Result<usize, ArchiveError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let Some(lock) = Lock::acquire(&self.dir.join(LOCK)) else {
            return Ok(0);
        };
        let added = self.fill_locked(cluster, names, parallel).await;
        drop(lock);
        // Nothing to read ahead (the end of the archived WAL): leave no empty directory behind.
        let _ = fs::remove_dir(&self.dir);
        added
    }

    async fn fill_locked(
        &self,
        cluster: &ClusterRepo,
        names: &[WalFileName],
        parallel: usize,
    ) -> Result<usize, ArchiveError> {
        let mut added = 0;
        for batch in names.chunks(parallel.max(1)) {
            let mut tasks = tokio::task::JoinSet::new();
            for name in batch {
                let path = self.dir.join(name.to_string());
                if path.exists() {
                    continue;
                }
                let cluster = cluster.clone();
                let name = *name;
                tasks.spawn(async move { fetch_to(&cluster, &name, &path).await });
            }
            let mut missing = false;
            while let Some(r) = tasks.join_next().await {
                let Ok(fetched) = r else { continue };
                match fetched? {
                    Some(_) => added += 1,
                    None => missing = true,
                }
            }
            if missing {
                break;
            }
        }
        Ok(added)
    }

    fn err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Dest {
            path: self.dir.clone(),
            user: pitr_storage::current_os_user(),
            source,
        }
    }
}

/// A lock file removed on drop.
struct Lock(PathBuf);

impl Lock {
    fn acquire(path: &Path) -> Option<Lock> {
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => return Some(Lock(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if !stale {
                        return None;
                    }
                    let _ = fs::remove_file(path);
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn clear_removes_an_idle_spool_and_spares_a_busy_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pitr-spool");
        fs::create_dir(&dir).unwrap();
        for name in ["000000010000000000000005", "000000010000000000000006.tmp"] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let spool = Spool::new(&dir);

        // A filler at work: its files are left alone.
        fs::write(dir.join(LOCK), b"").unwrap();
        spool.clear_within(Duration::from_millis(100));
        assert!(dir.join("000000010000000000000005").exists());

        // Idle: everything goes, the directory too.
        fs::remove_file(dir.join(LOCK)).unwrap();
        spool.clear_within(Duration::from_millis(100));
        assert!(!dir.exists());
        // Clearing a spool that does not exist is a no-op.
        spool.clear_within(Duration::from_millis(100));
        assert!(!dir.exists());
    }

    /// A served segment's start: a long page header (PostgreSQL 17's magic) saying 1 MB
    /// segments, for the segment `name` of timeline 1.
    fn served_segment(dir: &Path, name: &str, segno: u64) -> PathBuf {
        let mut head = vec![0u8; pitr_pg::page::LONG_HEADER_LEN];
        head[0..2].copy_from_slice(&0xD116u16.to_le_bytes());
        head[2..4].copy_from_slice(&pitr_pg::page::XLP_LONG_HEADER.to_le_bytes());
        head[4..8].copy_from_slice(&1u32.to_le_bytes());
        head[8..16].copy_from_slice(&(segno << 20).to_le_bytes());
        head[24..32].copy_from_slice(&42u64.to_le_bytes());
        head[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
        head[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let path = dir.join(name);
        fs::write(&path, head).unwrap();
        path
    }

    #[test]
    fn read_ahead_names_the_next_segments_until_half_of_them_are_spooled() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::beside(&tmp.path().join("pg_wal/RECOVERYXLOG"));
        assert_eq!(spool.dir(), tmp.path().join("pg_wal/pitr-spool"));
        fs::create_dir_all(spool.dir()).unwrap();
        // 1 MB segments: 000000010000000000000FFF is followed by 000000010000000100000000.
        let served = served_segment(tmp.path(), "served", 0xFFF);
        let name = WalFileName::parse("000000010000000000000FFF").unwrap();
        let names = |v: Vec<WalFileName>| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let all = names(spool.read_ahead(&name, &served, 4));
        assert_eq!(
            all,
            [
                "000000010000000100000000",
                "000000010000000100000001",
                "000000010000000100000002",
                "000000010000000100000003",
            ]
        );
        // Two of four spooled: half are still missing, so the whole window is asked for.
        for n in &all[..2] {
            fs::write(spool.dir().join(n), b"x").unwrap();
        }
        assert_eq!(names(spool.read_ahead(&name, &served, 4)), all);
        // Three of four spooled: not worth a filler.
        fs::write(spool.dir().join(&all[2]), b"x").unwrap();
        assert!(spool.read_ahead(&name, &served, 4).is_empty());
        // No window, not a segment, or a served file without a header: nothing.
        assert!(spool.read_ahead(&name, &served, 0).is_empty());
        let history = WalFileName::parse("00000002.history").unwrap();
        assert!(spool.read_ahead(&history, &served, 4).is_empty());
        fs::write(&served, b"not WAL").unwrap();
        assert!(spool.read_ahead(&name, &served, 4).is_empty());
    }

    #[test]
    fn the_default_spool_of_a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(
            Spool::beside(Path::new("RECOVERYXLOG")).dir(),
            Path::new("./pitr-spool")
        );
    }
}
