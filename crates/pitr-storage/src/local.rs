//! The local filesystem driver: durable, atomic publication with temp file + fsync + link or
//! rename + directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    validate_key, validate_prefix, ObjectMeta, PutMode, PutOutcome, Storage, StorageError,
    StorageResult, Upload,
};

/// Marker in temporary file names; such files are never listed and never read as objects.
const TMP_MARK: &str = ".pitr-tmp.";

/// A repository on a local (or NFS-like POSIX) filesystem.
#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// A driver rooted at `root`, which must already exist.
    pub fn open(root: impl Into<PathBuf>) -> StorageResult<LocalFs> {
        let root = absolute(root.into())?;
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalFs { root }),
            Ok(_) => Err(StorageError::io(
                "open repository",
                &root,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::MissingRoot { path: root })
            }
            Err(e) => Err(StorageError::io("open repository", &root, e)),
        }
    }

    /// Creates `root` (and parents) if needed, durably, and opens it.
    pub fn create(root: impl Into<PathBuf>) -> StorageResult<LocalFs> {
        let root = absolute(root.into())?;
        ensure_dir(&root)?;
        LocalFs::open(root)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StorageResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// `root` made absolute against the working directory (a relative `--repo relrepo` has an
/// empty parent, and the location is shown and recorded as a full path).
fn absolute(root: PathBuf) -> StorageResult<PathBuf> {
    std::path::absolute(&root).map_err(|e| StorageError::io("resolve", &root, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StorageError::Io {
            op: "run blocking task",
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// Creates `dir` and missing parents, fsyncing each parent that gained an entry.
fn ensure_dir(dir: &Path) -> StorageResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            ensure_dir(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(StorageError::io("create directory", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        adopt_owner(dir, parent);
        fsync_dir(parent)?;
    }
    Ok(())
}

/// A directory root creates inside a repository another user owns (e.g. `<cluster>/lease/`, first
/// made by a restore run as root) is given to that owner, so that the owner's own commands
/// (the archiver, backups) can still write there. Best effort.
fn adopt_owner(dir: &Path, parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Ok(p)) = (fs::metadata(dir), fs::metadata(parent)) else {
        return;
    };
    // Only inside a repository (an ancestor holds its marker): the root of a repository that
    // root creates stays root's.
    let inside = dir
        .ancestors()
        .skip(1)
        .any(|a| a.join("pitr.repository").is_file());
    if d.uid() == 0 && p.uid() != 0 && inside {
        let _ = std::os::unix::fs::chown(dir, Some(p.uid()), Some(p.gid()));
    }
}

fn fsync_dir(dir: &Path) -> StorageResult<()> {
    let d = File::open(dir).map_err(|e| StorageError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// After a deletion: fsyncs the directory that lost an entry, unless it is gone already (a
/// concurrent deleter, e.g. a second `expire`, removed it once empty: nothing left to sync).
fn fsync_dir_after_delete(dir: &Path) -> StorageResult<()> {
    match File::open(dir) {
        Ok(d) => d
            .sync_all()
            .map_err(|e| StorageError::io("fsync directory", dir, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("open directory", dir, e)),
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn tmp_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    final_path.with_file_name(format!(
        ".{name}{TMP_MARK}{}.{nanos}.{seq}",
        std::process::id()
    ))
}

/// A temporary file being written next to its final path.
struct TmpFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl TmpFile {
    fn create(dest: PathBuf) -> StorageResult<TmpFile> {
        if let Some(parent) = dest.parent() {
            ensure_dir(parent)?;
        }
        let tmp = tmp_path(&dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StorageError::io("create", &tmp, e))?;
        Ok(TmpFile { file, tmp, dest })
    }

    fn write(&mut self, data: &[u8]) -> StorageResult<()> {
        self.file
            .write_all(data)
            .map_err(|e| StorageError::io("write", &self.tmp, e))
    }

    /// fsync, then publish atomically; the temporary file is always gone afterwards.
    fn publish(self, mode: PutMode) -> StorageResult<PutOutcome> {
        let result = self.publish_inner(mode);
        let _ = fs::remove_file(&self.tmp);
        result
    }

    fn publish_inner(&self, mode: PutMode) -> StorageResult<PutOutcome> {
        self.file
            .sync_all()
            .map_err(|e| StorageError::io("fsync", &self.tmp, e))?;
        match mode {
            PutMode::Create => match fs::hard_link(&self.tmp, &self.dest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Ok(PutOutcome::AlreadyExists)
                }
                Err(e) => return Err(StorageError::io("publish", &self.dest, e)),
            },
            PutMode::Overwrite => fs::rename(&self.tmp, &self.dest)
                .map_err(|e| StorageError::io("publish", &self.dest, e))?,
        }
        if let Some(parent) = self.dest.parent() {
            fsync_dir(parent)?;
        }
        Ok(PutOutcome::Written)
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        // An abandoned upload leaves nothing behind (a kill -9 may; such files are never listed).
        let _ = fs::remove_file(&self.tmp);
    }
}

struct LocalUpload {
    tmp: Option<TmpFile>,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        let mut tmp = self
            .tmp
            .take()
            .ok_or_else(|| StorageError::InvalidKey("upload already finished".into()))?;
        let tmp = blocking(move || tmp.write(&data).map(|()| tmp)).await?;
        self.tmp = Some(tmp);
        Ok(())
    }

    async fn finish(mut self: Box<Self>, mode: PutMode) -> StorageResult<PutOutcome> {
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| StorageError::InvalidKey("upload already finished".into()))?;
        blocking(move || tmp.publish(mode)).await
    }
}

fn read_opt(path: &Path, range: Option<Range<u64>>) -> StorageResult<Option<Bytes>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("open", path, e)),
    };
    let mut buf = Vec::new();
    match range {
        None => {
            f.read_to_end(&mut buf)
                .map_err(|e| StorageError::io("read", path, e))?;
        }
        Some(r) => {
            f.seek(SeekFrom::Start(r.start))
                .map_err(|e| StorageError::io("seek", path, e))?;
            f.take(r.end.saturating_sub(r.start))
                .read_to_end(&mut buf)
                .map_err(|e| StorageError::io("read", path, e))?;
        }
    }
    Ok(Some(Bytes::from(buf)))
}

/// A temporary file older than this was left by a writer that died: no upload takes an hour.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes `dir` and the directories below it that are empty (after their own empty
/// subdirectories and stale temporary files went); a directory that still holds a file stays.
/// Best effort.
fn prune_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            prune_dir(&entry.path());
        } else if ft.is_file() && entry.file_name().to_string_lossy().contains(TMP_MARK) {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    if fs::remove_dir(dir).is_ok() {
        if let Some(parent) = dir.parent() {
            let _ = fsync_dir(parent);
        }
    }
}

/// Whether `dir` holds an object somewhere below it (stops at the first one found).
fn holds_object(dir: &Path) -> StorageResult<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        if entry.file_name().to_string_lossy().contains(TMP_MARK) {
            continue;
        }
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", &entry.path(), e))?;
        if ft.is_file() {
            return Ok(true);
        }
        if ft.is_dir() {
            subdirs.push(entry.path());
        }
    }
    for sub in subdirs {
        if holds_object(&sub)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The subdirectories of `dir` that hold an object, by name, sorted.
fn dirs_with_objects(dir: &Path) -> StorageResult<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", &entry.path(), e))?;
        if ft.is_dir() && holds_object(&entry.path())? {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> StorageResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(TMP_MARK) {
            continue;
        }
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", &path, e))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let size = match entry.metadata() {
                Ok(md) => md.len(),
                // Deleted since the directory was read (a concurrent expire): not listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("stat", &path, e)),
            };
            let key = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(ObjectMeta { key, size });
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalFs {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome> {
        let dest = self.path(key)?;
        blocking(move || {
            if mode == PutMode::Create && dest.exists() {
                return Ok(PutOutcome::AlreadyExists);
            }
            let mut tmp = TmpFile::create(dest)?;
            tmp.write(&data)?;
            tmp.publish(mode)
        })
        .await
    }

    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        let dest = self.path(key)?;
        let tmp = blocking(move || TmpFile::create(dest)).await?;
        Ok(Box::new(LocalUpload { tmp: Some(tmp) }))
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        let path = self.path(key)?;
        blocking(move || read_opt(&path, None)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        let path = self.path(key)?;
        blocking(move || read_opt(&path, Some(range))).await
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key, size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("stat", &path, e)),
        })
        .await
    }

    async fn modified(&self, key: &str) -> StorageResult<Option<std::time::SystemTime>> {
        let path = self.path(key)?;
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => m
                .modified()
                .map(Some)
                .map_err(|e| StorageError::io("stat", &path, e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("stat", &path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk the deepest directory the prefix names completely, then filter.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let start = if dir_part.is_empty() {
                root.clone()
            } else {
                root.join(dir_part)
            };
            let mut out = Vec::new();
            walk(&root, &start, &mut out)?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>> {
        let root = self.root.clone();
        blocking(move || {
            let entries = fs::read_dir(&root).map_err(|e| StorageError::io("list", &root, e))?;
            let mut names = Vec::new();
            for entry in entries.take(limit) {
                let entry = entry.map_err(|e| StorageError::io("list", &root, e))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            Ok(names)
        })
        .await
    }

    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        validate_prefix(prefix)?;
        let dir = self.root.join(prefix.trim_end_matches('/'));
        blocking(move || dirs_with_objects(&dir)).await
    }

    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<StorageResult<Vec<PathBuf>>>()?;
        blocking(move || {
            // One fsync per directory that lost an entry, not one per file.
            let mut touched: Vec<PathBuf> = Vec::new();
            for path in &paths {
                match fs::remove_file(path) {
                    Ok(()) => touched.extend(path.parent().map(Path::to_path_buf)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("delete", path, e)),
                }
            }
            touched.sort();
            touched.dedup();
            for dir in &touched {
                fsync_dir_after_delete(dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn prune(&self, prefix: &str) -> StorageResult<()> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        blocking(move || {
            prune_dir(&dir);
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    fsync_dir_after_delete(parent)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("delete", &path, e)),
        })
        .await
    }
}
