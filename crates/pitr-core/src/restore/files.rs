//! The file-system side of a restore: where each manifest path goes, the state of the target
//! directories, delta decisions, verified atomic file writes, and removal of what does not
//! belong.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use pitr_repo::frame::{self, FrameError};
use pitr_repo::ManifestFile;

/// Suffix of files being written; renamed into place once verified.
pub const TMP_SUFFIX: &str = ".pitr-tmp";

/// True when `rel` is a safe relative path: no root, no `.`/`..`, no empty components.
pub fn is_safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Where manifest paths land: PGDATA, except `pg_tblspc/<oid>/…` of tablespaces, which go to
/// the tablespace's (possibly remapped) location.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Tablespace OID → directory its files go to.
    pub tablespaces: BTreeMap<u32, PathBuf>,
}

impl Layout {
    /// The OID when `rel` is a tablespace link (`pg_tblspc/<oid>`) of a mapped tablespace.
    pub fn tablespace_link(&self, rel: &str) -> Option<u32> {
        let oid: u32 = rel.strip_prefix("pg_tblspc/")?.parse().ok()?;
        self.tablespaces.contains_key(&oid).then_some(oid)
    }

    /// The destination of manifest path `rel` (already checked with [`is_safe_rel`]).
    pub fn dest(&self, rel: &str) -> PathBuf {
        if let Some(rest) = rel.strip_prefix("pg_tblspc/") {
            if let Some((oid, inner)) = rest.split_once('/') {
                if let Some(dir) = oid
                    .parse::<u32>()
                    .ok()
                    .and_then(|o| self.tablespaces.get(&o))
                {
                    return dir.join(inner);
                }
            }
        }
        self.pgdata.join(rel)
    }

    /// Every root a restore writes below: PGDATA and the tablespace directories.
    pub fn roots(&self) -> Vec<PathBuf> {
        std::iter::once(self.pgdata.clone())
            .chain(self.tablespaces.values().cloned())
            .collect()
    }
}

/// What is at a directory a restore writes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DirState {
    /// Does not exist: it will be created.
    Missing,
    /// Exists and is empty.
    Empty,
    /// Exists with content.
    NotEmpty {
        /// Number of entries directly in it.
        entries: usize,
        /// A few of their names.
        sample: Vec<String>,
    },
}

/// Inspects `dir` without changing anything.
pub fn inspect_dir(dir: &Path) -> io::Result<DirState> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(e) => return Err(e),
        Ok(m) if !(m.is_dir() || m.file_type().is_symlink() && dir.is_dir()) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "exists and is not a directory",
            ))
        }
        Ok(_) => {}
    }
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Ok(DirState::Empty);
    }
    names.sort();
    let entries = names.len();
    names.truncate(5);
    Ok(DirState::NotEmpty {
        entries,
        sample: names,
    })
}

/// The pid in `postmaster.pid` when that process is alive.
pub fn running_postmaster(pgdata: &Path) -> Option<u32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new("/proc")
        .join(pid.to_string())
        .exists()
        .then_some(pid)
}

/// The running server whose data directory links `dir` as a tablespace (`pg_tblspc/<oid>`),
/// as (postmaster pid, data directory).
///
/// Servers are found through `/proc`: a postmaster works in its data directory, whose
/// `postmaster.pid` names it. Only processes this user may inspect are seen (all of them as
/// root, the user's own otherwise, which covers the usual `postgres` user).
pub fn server_using_tablespace(dir: &Path) -> Option<(u32, PathBuf)> {
    let dir = dir.canonicalize().ok()?;
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        if running_postmaster(&cwd) != Some(pid) {
            continue;
        }
        let Ok(links) = fs::read_dir(cwd.join("pg_tblspc")) else {
            continue;
        };
        for l in links.flatten() {
            if l.path().canonicalize().is_ok_and(|t| t == dir) {
                return Some((pid, cwd));
            }
        }
    }
    None
}

/// What to do with one file of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// A file with the right size and checksum is already there.
    Keep,
    /// Fetch and write it.
    Fetch,
    /// Create it empty (empty files have no object).
    CreateEmpty,
}

/// What is at a destination path, as far as delta cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// A regular file (not a directory, symlink, …).
    pub regular: bool,
    /// Its size.
    pub len: u64,
}

/// Decides what to do with `m` given what exists there; `hash` (BLAKE3 hex of the existing
/// file) is only called when size and type already match.
pub fn decide(
    m: &ManifestFile,
    existing: Option<Existing>,
    delta: bool,
    hash: impl FnOnce() -> io::Result<String>,
) -> io::Result<FileAction> {
    let write = if m.size == 0 {
        FileAction::CreateEmpty
    } else {
        FileAction::Fetch
    };
    if !delta {
        return Ok(write);
    }
    match existing {
        Some(e) if e.regular && e.len == m.size => {
            if m.size == 0 || hash()?.eq_ignore_ascii_case(&m.blake3) {
                Ok(FileAction::Keep)
            } else {
                Ok(write)
            }
        }
        _ => Ok(write),
    }
}

/// What is at `path` (without following a final symlink).
pub fn existing(path: &Path) -> io::Result<Option<Existing>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(Existing {
            regular: m.is_file(),
            len: m.len(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// BLAKE3 of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Why writing a file failed.
#[derive(Debug)]
pub enum WriteError {
    /// The object is damaged.
    Frame(FrameError),
    /// The object is intact but is not the file the manifest describes.
    Mismatch {
        /// What the manifest says (size, blake3).
        expected: (u64, String),
        /// What the object holds.
        found: (u64, String),
    },
    /// The local file system failed.
    Io(&'static str, io::Error),
}

/// How many bytes [`FileSink`] lets accumulate before it starts their writeback.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// The file being restored, written at offsets by [`frame::decode_to`]'s threads. It starts the
/// kernel's writeback of what it wrote every [`WRITEBACK_CHUNK`] bytes
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, as PostgreSQL's `*_flush_after` settings do), so
/// the disk works while the next pieces are decompressed and verified instead of all at once in
/// the final [`sync_filesystem`]. It does not wait for those writes: durability comes from that
/// final sync. It remembers its first failure, so that a failed write is reported as such and
/// not as a damaged object.
struct FileSink {
    file: File,
    /// Written bytes whose writeback has not been started: (start, end) of a contiguous run.
    unflushed: Mutex<(u64, u64)>,
    error: Mutex<Option<io::Error>>,
}

impl frame::WriteAt for FileSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all_at(data, offset) {
            let copy = io::Error::new(e.kind(), e.to_string());
            lock(&self.error).get_or_insert(e);
            return Err(copy);
        }
        let end = offset + data.len() as u64;
        let flush = {
            let mut run = lock(&self.unflushed);
            if run.1 != offset {
                // Not contiguous (pieces written by several threads): start from this write.
                *run = (offset, offset);
            }
            run.1 = end;
            let (start, end) = *run;
            (end - start >= WRITEBACK_CHUNK).then(|| {
                *run = (end, end);
                (start, end - start)
            })
        };
        if let Some((start, len)) = flush {
            start_writeback(&self.file, start, len);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk, without waiting.
/// Only a hint: its failure is ignored (the final sync reports real write errors).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads the file descriptor, which `file` keeps open.
    #[allow(unsafe_code)]
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Sets permission bits and modification time as the manifest says.
pub fn apply_attrs(file: &File, m: &ManifestFile) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(m.mode & 0o7777))?;
    let mtime = if m.mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(m.mtime.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(m.mtime.unsigned_abs())
    };
    file.set_times(fs::FileTimes::new().set_modified(mtime))
}

/// Decodes `obj` (or nothing, for an empty file) to `dest` through `dest.pitr-tmp` (a large
/// object on up to `threads` threads), verifies it against the manifest entry, sets mode and mtime and renames it into place. Not fsynced: the
/// restore makes everything durable at once with [`sync_filesystem`] before it reports success.
pub fn write_file(
    dest: &Path,
    obj: Option<&[u8]>,
    m: &ManifestFile,
    threads: usize,
) -> Result<u64, WriteError> {
    let tmp = tmp_path(dest);
    let result = write_tmp(&tmp, obj, m, threads).and_then(|n| {
        fs::rename(&tmp, dest)
            .map_err(|e| WriteError::Io("rename", e))
            .map(|()| n)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(
    tmp: &Path,
    obj: Option<&[u8]>,
    m: &ManifestFile,
    threads: usize,
) -> Result<u64, WriteError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| WriteError::Io("create", e))?;
    let sink = FileSink {
        file,
        unflushed: Mutex::new((0, 0)),
        error: Mutex::new(None),
    };
    let written = match obj {
        Some(obj) => match frame::decode_to(obj, threads, &sink) {
            Ok(summary) => {
                let found = (summary.len, summary.checksum.to_string());
                if found.0 != m.size || !found.1.eq_ignore_ascii_case(&m.blake3) {
                    return Err(WriteError::Mismatch {
                        expected: (m.size, m.blake3.clone()),
                        found,
                    });
                }
                summary.len
            }
            Err(e) => {
                return Err(match lock(&sink.error).take() {
                    Some(io) => WriteError::Io("write", io),
                    None => WriteError::Frame(e),
                })
            }
        },
        None => {
            if m.size != 0 {
                return Err(WriteError::Mismatch {
                    expected: (m.size, m.blake3.clone()),
                    found: (0, String::new()),
                });
            }
            0
        }
    };
    apply_attrs(&sink.file, m).map_err(|e| WriteError::Io("set mode and mtime of", e))?;
    Ok(written)
}

/// What the restore expects under one root, to find what does not belong.
#[derive(Debug, Default)]
pub struct Expected {
    /// Regular files.
    pub files: BTreeSet<PathBuf>,
    /// Directories.
    pub dirs: BTreeSet<PathBuf>,
    /// Symbolic links (tablespace links).
    pub links: BTreeSet<PathBuf>,
}

/// Paths under `root` that are not expected (a directory counts once, with its contents).
/// Symbolic links are never followed.
pub fn extraneous(root: &Path, expected: &Expected) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk_extraneous(root, expected, &mut out)?;
    Ok(out)
}

fn walk_extraneous(dir: &Path, expected: &Expected, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ft = e.file_type()?;
        if ft.is_symlink() {
            if !expected.links.contains(&path) {
                out.push(path);
            }
        } else if ft.is_dir() {
            if expected.dirs.contains(&path) {
                walk_extraneous(&path, expected, out)?;
            } else {
                out.push(path);
            }
        } else if !(ft.is_file() && expected.files.contains(&path)) {
            out.push(path);
        }
    }
    Ok(())
}

/// Removes a path: a directory with its contents, a file or a link itself (never its target).
pub fn remove_path(path: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    if m.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Removes everything inside `dir` (not `dir` itself); returns how many entries it held.
pub fn wipe_contents(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        remove_path(&e?.path())?;
        n += 1;
    }
    Ok(n)
}

/// Writes a small file atomically (temp, fsync, rename) with `mode`.
pub fn write_small(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Flushes every dirty page of the filesystem holding `path` (Linux `syncfs(2)`), and returns
/// the writeback errors it reports.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path)?;
    // SAFETY: syncfs only reads the file descriptor, which `dir` keeps open for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fsyncs a directory (its entries).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (not its parents) with `mode`, or fixes the mode of an existing directory.
pub fn make_dir(dir: &Path, mode: u32) -> io::Result<bool> {
    let created = match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) => return Err(e),
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(created)
}

/// Escapes a path for `tablespace_map` as PostgreSQL does (`\` before `\n`, `\r` and `\`).
pub fn escape_map_path(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\n' | '\r' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Rewrites `tablespace_map` (lines `<oid> <escaped path>`) with the restored locations, keeping
/// lines of unmapped OIDs and adding missing ones.
pub fn rewrite_tablespace_map(original: &str, locations: &BTreeMap<u32, PathBuf>) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    // Escaped newlines are part of a path: join physical lines that end with a backslash-escape.
    let mut logical: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = original.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\n' => logical.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        logical.push(cur);
    }
    for line in logical {
        let oid = line
            .split_once(' ')
            .and_then(|(o, _)| o.parse::<u32>().ok());
        match oid.and_then(|o| locations.get(&o).map(|p| (o, p))) {
            Some((o, p)) => {
                seen.insert(o);
                out.push_str(&format!("{o} {}\n", escape_map_path(&p.to_string_lossy())));
            }
            None if line.trim().is_empty() => {}
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    for (o, p) in locations {
        if !seen.contains(o) {
            out.push_str(&format!("{o} {}\n", escape_map_path(&p.to_string_lossy())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mf(path: &str, content: &[u8]) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size: content.len() as u64,
            mode: 0o640,
            mtime: 1_700_000_000,
            blake3: if content.is_empty() {
                String::new()
            } else {
                blake3::hash(content).to_hex().to_string()
            },
            stored_size: 0,
            stored_in: None,
            checksum_failures: vec![],
        }
    }

    #[test]
    fn only_safe_relative_paths_are_accepted() {
        for ok in [
            "PG_VERSION",
            "base/1/1259",
            "pg_tblspc/16390/PG_17_1/5/16391",
        ] {
            assert!(is_safe_rel(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "base/../../x",
            "base//1",
            "./x",
            "a/.",
            "a\0b",
        ] {
            assert!(!is_safe_rel(bad), "{bad:?}");
        }
    }

    #[test]
    fn tablespace_files_go_to_the_mapped_location() {
        let l = Layout {
            pgdata: "/data".into(),
            tablespaces: BTreeMap::from([(16390, PathBuf::from("/ts/fast"))]),
        };
        assert_eq!(l.dest("base/1/1259"), PathBuf::from("/data/base/1/1259"));
        assert_eq!(
            l.dest("pg_tblspc/16390/PG_17_1/5/16391"),
            PathBuf::from("/ts/fast/PG_17_1/5/16391")
        );
        // An in-place tablespace (no mapping) stays inside PGDATA.
        assert_eq!(
            l.dest("pg_tblspc/16400/PG_17_1"),
            PathBuf::from("/data/pg_tblspc/16400/PG_17_1")
        );
        assert_eq!(l.tablespace_link("pg_tblspc/16390"), Some(16390));
        assert_eq!(l.tablespace_link("pg_tblspc/16400"), None);
        assert_eq!(l.tablespace_link("pg_tblspc/16390/PG_17_1"), None);
    }

    #[test]
    fn delta_keeps_only_files_with_the_same_size_and_checksum() {
        let m = mf("base/1/1259", b"hello");
        let same = Some(Existing {
            regular: true,
            len: 5,
        });
        let good = || Ok(blake3::hash(b"hello").to_hex().to_string());
        let bad = || Ok(blake3::hash(b"hellO").to_hex().to_string());
        assert_eq!(decide(&m, same, true, good).unwrap(), FileAction::Keep);
        assert_eq!(decide(&m, same, true, bad).unwrap(), FileAction::Fetch);
        // Without --delta nothing is trusted.
        assert_eq!(decide(&m, same, false, good).unwrap(), FileAction::Fetch);
        // Another size: not even hashed.
        let other = Some(Existing {
            regular: true,
            len: 6,
        });
        let never = || -> io::Result<String> { panic!("hashed a file of another size") };
        assert_eq!(decide(&m, other, true, never).unwrap(), FileAction::Fetch);
        // A directory or link with the file's name.
        let dir = Some(Existing {
            regular: false,
            len: 5,
        });
        assert_eq!(decide(&m, dir, true, never).unwrap(), FileAction::Fetch);
        assert_eq!(decide(&m, None, true, never).unwrap(), FileAction::Fetch);
        let empty = mf("pg_logical/replorigin_checkpoint", b"");
        let there = Some(Existing {
            regular: true,
            len: 0,
        });
        assert_eq!(
            decide(&empty, there, true, never).unwrap(),
            FileAction::Keep
        );
        assert_eq!(
            decide(&empty, None, true, never).unwrap(),
            FileAction::CreateEmpty
        );
    }

    #[test]
    fn writes_verified_files_with_mode_and_mtime() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let content = b"some relation bytes".repeat(1000);
        let m = mf("base/1/1259", &content);
        let (obj, _) = frame::encode(&content, pitr_repo::Compression::Zstd(1)).unwrap();
        let dest = d.path().join("1259");
        assert_eq!(
            write_file(&dest, Some(&obj), &m, 2).unwrap(),
            content.len() as u64
        );
        assert_eq!(fs::read(&dest).unwrap(), content);
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert!(!tmp_path(&dest).exists());

        // An intact object that is another file is refused, and nothing is left behind.
        let other = mf("base/1/1259", b"other");
        let dest2 = d.path().join("x");
        assert!(matches!(
            write_file(&dest2, Some(&obj), &other, 2),
            Err(WriteError::Mismatch { .. })
        ));
        assert!(!dest2.exists() && !tmp_path(&dest2).exists());

        // A damaged object is refused.
        let mut broken = obj.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xFF;
        assert!(matches!(
            write_file(&dest2, Some(&broken), &m, 2),
            Err(WriteError::Frame(_))
        ));
        assert!(!dest2.exists());

        // Empty files have no object.
        let e = mf("empty", b"");
        write_file(&dest2, None, &e, 2).unwrap();
        assert_eq!(fs::metadata(&dest2).unwrap().len(), 0);
    }

    #[test]
    fn finds_what_does_not_belong_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        let outside = d.path().join("outside");
        fs::create_dir_all(root.join("base/1")).unwrap();
        fs::create_dir_all(root.join("pg_tblspc")).unwrap();
        fs::create_dir_all(root.join("junkdir/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), b"x").unwrap();
        for f in ["PG_VERSION", "base/1/1259", "base/1/9999", "postmaster.pid"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("pg_tblspc/16390")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("pg_tblspc/16391")).unwrap();
        let mut exp = Expected::default();
        for dir in ["base", "base/1", "pg_tblspc"] {
            exp.dirs.insert(root.join(dir));
        }
        for f in ["PG_VERSION", "base/1/1259"] {
            exp.files.insert(root.join(f));
        }
        exp.links.insert(root.join("pg_tblspc/16390"));
        let extra = extraneous(&root, &exp).unwrap();
        let names: Vec<String> = extra
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "base/1/9999",
                "junkdir",
                "pg_tblspc/16391",
                "postmaster.pid"
            ]
        );
        for p in &extra {
            remove_path(p).unwrap();
        }
        // The link was removed, never what it points to.
        assert!(outside.join("precious").exists());
        assert!(root.join("pg_tblspc/16390").exists());
        assert!(extraneous(&root, &exp).unwrap().is_empty());
    }

    #[test]
    fn inspects_directories() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            inspect_dir(&d.path().join("nope")).unwrap(),
            DirState::Missing
        );
        assert_eq!(inspect_dir(d.path()).unwrap(), DirState::Empty);
        fs::write(d.path().join("f"), b"").unwrap();
        assert_eq!(
            inspect_dir(d.path()).unwrap(),
            DirState::NotEmpty {
                entries: 1,
                sample: vec!["f".into()]
            }
        );
        assert!(inspect_dir(&d.path().join("f")).is_err());
        assert_eq!(wipe_contents(d.path()).unwrap(), 1);
        assert_eq!(inspect_dir(d.path()).unwrap(), DirState::Empty);
    }

    #[test]
    fn rewrites_tablespace_map_paths() {
        let orig = "16390 /srv/ts/fast\n16391 /srv/ts/we\\\\ird\\\nname\n";
        let map = BTreeMap::from([(16390, PathBuf::from("/restore/fast"))]);
        assert_eq!(
            rewrite_tablespace_map(orig, &map),
            "16390 /restore/fast\n16391 /srv/ts/we\\\\ird\\\nname\n"
        );
        let map = BTreeMap::from([
            (16390, PathBuf::from("/r/a")),
            (16391, PathBuf::from("/r/new\nline")),
            (16392, PathBuf::from("/r/c")),
        ]);
        assert_eq!(
            rewrite_tablespace_map(orig, &map),
            "16390 /r/a\n16391 /r/new\\\nline\n16392 /r/c\n"
        );
    }
}
