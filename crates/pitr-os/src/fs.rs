//! Durability and ownership of restored files: `syncfs`, writeback hints, `lchown` of a tree.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// Flushes every dirty page of the filesystem holding `path` (Linux `syncfs(2)`) and returns
/// the writeback errors it reports: one call makes a whole restored tree durable, as
/// PostgreSQL's `recovery_init_sync_method = syncfs` does.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    nix::unistd::syncfs(&f)?;
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk, without waiting
/// for them: the disk works while the caller produces more, instead of all at once in the
/// final [`syncfs`]. Only a hint: it never makes anything durable and its failure is ignored.
///
/// PostgreSQL's `pg_flush_data` uses `sync_file_range(SYNC_FILE_RANGE_WRITE)` for this; neither
/// `nix` nor `rustix` wraps that call, so this uses PostgreSQL's other way,
/// `posix_fadvise(POSIX_FADV_DONTNEED)`, which on Linux starts writeback of the range's dirty
/// pages without waiting (and drops the range's pages that are already clean: those just
/// written are not, so they stay cached).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// Why [`chown_tree`] stopped: what it was doing, on which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path:?}: {source}")]
pub struct TreeError {
    /// What was attempted (`chown`, `inspect`, `list`).
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// Gives `path`, and everything below it when it is a directory, to `uid`:`gid`. Symbolic links
/// are changed themselves (`lchown`), never followed, so a tablespace link does not hand over
/// what it points to.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), TreeError> {
    let err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TreeError { op, path, source }
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(err("chown", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(err("inspect", path))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(err("list", path))? {
            let e = e.map_err(err("list", path))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Free space for an unprivileged user on the filesystem holding `path`, in bytes.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(path)?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// Disk space the tree at `path` takes (allocated blocks, symbolic links not followed): a
/// sparse file counts for what it holds, not for its length.
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks().saturating_mul(512);
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total = total.saturating_add(allocated_bytes(&e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn syncfs_flushes_a_directory_s_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let mut f = File::create(d.path().join("f")).unwrap();
        f.write_all(&[7u8; 1 << 20]).unwrap();
        start_writeback(&f, 0, 1 << 20);
        syncfs(d.path()).unwrap();
        syncfs(&d.path().join("f")).unwrap();
        assert_eq!(std::fs::read(d.path().join("f")).unwrap().len(), 1 << 20);
        let missing = syncfs(&d.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn chown_tree_changes_links_not_their_targets() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(tree.join("sub/file"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        let before = std::fs::metadata(&outside).unwrap();
        // To ourselves (always allowed); as root also to another owner, which must show.
        let (uid, gid) = if crate::is_root() {
            (4321, 4321)
        } else {
            let m = std::fs::metadata(d.path()).unwrap();
            (m.uid(), m.gid())
        };
        chown_tree(&tree, uid, gid).unwrap();
        for p in ["", "sub", "sub/file", "link"] {
            let m = std::fs::symlink_metadata(tree.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p:?}");
        }
        let after = std::fs::metadata(&outside).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        let e = chown_tree(&d.path().join("missing"), uid, gid).unwrap_err();
        assert_eq!(e.op, "chown");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
