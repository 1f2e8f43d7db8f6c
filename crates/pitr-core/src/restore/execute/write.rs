//! Writing one restored file: decide whether an existing file can be kept (`--delta`), else
//! decode its object into a temporary file, verify it against the manifest, set mode and mtime
//! and rename it into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use pitr_repo::frame::{self, FrameError};
use pitr_repo::ManifestFile;

use crate::restore::Progress;

/// Suffix of files being written; renamed into place once verified.
pub const TMP_SUFFIX: &str = ".pitr-tmp";

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
    /// Reading the object from the repository failed midway.
    Storage(pitr_storage::StorageError),
}

/// How many bytes [`FileSink`] lets accumulate before it starts their writeback.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// The file being restored, written at offsets by [`frame::decode_to`]'s threads. It starts the
/// kernel's writeback of what it wrote every [`WRITEBACK_CHUNK`] bytes
/// ([`pitr_os::start_writeback`], as PostgreSQL's `*_flush_after` settings do), so
/// the disk works while the next pieces are decompressed and verified instead of all at once in
/// the final `syncfs`. It does not wait for those writes: durability comes from that
/// final sync. It remembers its first failure, so that a failed write is reported as such and
/// not as a damaged object.
struct FileSink<'a> {
    file: File,
    /// Told of every piece written.
    progress: Option<&'a dyn Progress>,
    /// Written bytes whose writeback has not been started: (start, end) of a contiguous run.
    unflushed: Mutex<(u64, u64)>,
    error: Mutex<Option<io::Error>>,
}

impl frame::WriteAt for FileSink<'_> {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Err(e) = self.file.write_all_at(data, offset) {
            let copy = io::Error::new(e.kind(), e.to_string());
            lock(&self.error).get_or_insert(e);
            return Err(copy);
        }
        if let Some(p) = self.progress {
            p.advance(data.len() as u64);
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
            pitr_os::start_writeback(&self.file, start, len);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where `dest` is written before it is complete.
pub(crate) fn tmp_path(dest: &Path) -> PathBuf {
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

/// What a restored file is decoded from.
#[derive(Debug)]
pub enum Source<'a> {
    /// Nothing: an empty file.
    Empty,
    /// A whole object in memory.
    Whole(&'a [u8]),
    /// A large object read in pieces ([`pitr_repo::stored::open_stored`]).
    Streamed(pitr_repo::stored::StreamedFrame),
}

/// Decodes `src` to `dest` through `dest.pitr-tmp` (a large object on up to `threads`
/// threads), verifies it against the manifest entry, sets mode and mtime and renames it into
/// place; `progress` is told of every piece written. Not fsynced: the restore makes everything
/// durable at once with a `syncfs` before it reports success.
pub fn write_file(
    dest: &Path,
    src: Source<'_>,
    m: &ManifestFile,
    threads: usize,
    progress: Option<&dyn Progress>,
) -> Result<u64, WriteError> {
    let tmp = tmp_path(dest);
    let result = write_tmp(&tmp, src, m, threads, progress).and_then(|n| {
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
    src: Source<'_>,
    m: &ManifestFile,
    threads: usize,
    progress: Option<&dyn Progress>,
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
        progress,
        unflushed: Mutex::new((0, 0)),
        error: Mutex::new(None),
    };
    let decoded = match src {
        Source::Whole(obj) => Some(frame::decode_to(obj, threads, &sink)),
        Source::Streamed(mut s) => {
            let r = frame::decode_stream_to(s.code, &mut s.payload, s.summary, threads, &sink);
            // A read that failed is the storage's fault, not a damaged object.
            if let Some(e) = s.storage_error() {
                return Err(WriteError::Storage(e));
            }
            Some(r)
        }
        Source::Empty => None,
    };
    let written = match decoded {
        Some(Ok(summary)) => {
            let found = (summary.len, summary.checksum.to_string());
            if found.0 != m.size || !found.1.eq_ignore_ascii_case(&m.blake3) {
                return Err(WriteError::Mismatch {
                    expected: (m.size, m.blake3.clone()),
                    found,
                });
            }
            summary.len
        }
        Some(Err(e)) => {
            return Err(match lock(&sink.error).take() {
                Some(io) => WriteError::Io("write", io),
                None => WriteError::Frame(e),
            })
        }
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
            blocks: None,
            bundle: None,
        }
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
            write_file(&dest, Source::Whole(&obj), &m, 2, None).unwrap(),
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
            write_file(&dest2, Source::Whole(&obj), &other, 2, None),
            Err(WriteError::Mismatch { .. })
        ));
        assert!(!dest2.exists() && !tmp_path(&dest2).exists());

        // A damaged object is refused.
        let mut broken = obj.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xFF;
        assert!(matches!(
            write_file(&dest2, Source::Whole(&broken), &m, 2, None),
            Err(WriteError::Frame(_))
        ));
        assert!(!dest2.exists());

        // Empty files have no object.
        let e = mf("empty", b"");
        write_file(&dest2, Source::Empty, &e, 2, None).unwrap();
        assert_eq!(fs::metadata(&dest2).unwrap().len(), 0);
    }
}
