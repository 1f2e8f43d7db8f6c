//! Directory preparation: create the data directory and tablespace directories (or empty them
//! with `--force`), remove what does not belong (`--delta`), then create the backup's
//! directories and tablespace links, so that files can be written in any order.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pitr_repo::{BackupManifest, ManifestDir};

use super::{blocking, seal};
use crate::restore::layout::{Layout, RESTORE_MARKER};
use crate::restore::plan::dirs::check_dir;
use crate::restore::{RestoreError, RestorePlan};

/// What preparation did and made.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Entries removed (`--force` contents, `--delta` extras).
    pub removed: u64,
    /// Roots that did not exist (their parents are fsynced at the end).
    pub created_roots: Vec<PathBuf>,
    /// Every directory of the backup, created or fixed.
    pub dirs: Vec<PathBuf>,
}

/// Prepares every directory the plan writes to. The data directory is made unstartable and
/// marked as a restore in progress ([`seal::open`]) before anything else in it changes.
pub async fn directories(plan: &RestorePlan, layout: &Layout) -> Result<Prepared, RestoreError> {
    let mut prepared = Prepared::default();
    let roots = layout.roots();
    // The directories may have changed since the plan: check them all again, before any change.
    for root in &roots {
        check_dir(root, plan.delta, plan.force)?;
    }
    let label = plan.manifest().label.clone();
    for (i, root) in roots.into_iter().enumerate() {
        let root2 = root.clone();
        let force = plan.force;
        let label = (i == 0).then(|| label.clone());
        let (n, created) = blocking(move || prepare_root(&root2, force, label.as_deref())).await?;
        prepared.removed += n;
        if created {
            prepared.created_roots.push(root);
        }
    }
    let m = plan.manifest().clone();
    if plan.delta {
        let (layout2, m2) = (layout.clone(), m.clone());
        prepared.removed += blocking(move || remove_extraneous(&layout2, &m2)).await?;
    }
    let mut dirs = m.dirs;
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    let layout2 = layout.clone();
    prepared.dirs = blocking(move || create_dirs(&layout2, &dirs)).await?;
    Ok(prepared)
}

/// Creates `root` (mode 0700); for the data directory (`label` given) removes the control file
/// and writes the restore marker first; then empties it with `force` (sparing the marker);
/// returns (entries removed, created).
fn prepare_root(
    root: &Path,
    force: bool,
    label: Option<&str>,
) -> Result<(u64, bool), RestoreError> {
    let created = !root.exists();
    fs::create_dir_all(root).map_err(RestoreError::io("create", root))?;
    make_dir(root, 0o700).map_err(RestoreError::io("set the mode of", root))?;
    if let Some(label) = label {
        seal::open(root, label)?;
    }
    let n = if force {
        wipe_contents(root).map_err(RestoreError::io("empty", root))?
    } else {
        0
    };
    Ok((n, created))
}

/// `--delta`: removes what is under the roots but not in the manifest; returns how many entries.
fn remove_extraneous(layout: &Layout, m: &BackupManifest) -> Result<u64, RestoreError> {
    let roots = layout.roots();
    let mut expected: Vec<Expected> = roots.iter().map(|_| Default::default()).collect();
    let root_of = |p: &Path| roots.iter().position(|r| p.starts_with(r) && p != r);
    let add_dir_chain = |expected: &mut Vec<Expected>, p: &Path| {
        let mut cur = p.to_path_buf();
        while let Some(i) = root_of(&cur) {
            expected[i].dirs.insert(cur.clone());
            match cur.parent() {
                Some(parent) => cur = parent.to_path_buf(),
                None => break,
            }
        }
    };
    for d in &m.dirs {
        if layout.tablespace_link(&d.path).is_some() {
            let link = layout.pgdata.join(&d.path);
            if let Some(parent) = link.parent() {
                add_dir_chain(&mut expected, parent);
            }
            expected[0].links.insert(link);
        } else {
            add_dir_chain(&mut expected, &layout.dest(&d.path));
        }
    }
    for f in &m.files {
        let dest = layout.dest(&f.path);
        if let Some(parent) = dest.parent() {
            add_dir_chain(&mut expected, parent);
        }
        if let Some(i) = root_of(&dest) {
            expected[i].files.insert(dest);
        }
    }
    expected[0].files.insert(layout.pgdata.join(RESTORE_MARKER));
    let mut n = 0;
    for (root, exp) in roots.iter().zip(&expected) {
        for p in extraneous(root, exp).map_err(RestoreError::io("list", root))? {
            tracing::debug!("delta: removing {}", p.display());
            remove_path(&p).map_err(RestoreError::io("remove", &p))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Creates the manifest's directories (parents first) and tablespace links; returns the
/// directories, to be fsynced at the end.
fn create_dirs(layout: &Layout, dirs: &[ManifestDir]) -> Result<Vec<PathBuf>, RestoreError> {
    let mut out = Vec::new();
    for d in dirs {
        if let Some(oid) = layout.tablespace_link(&d.path) {
            let link = layout.pgdata.join(&d.path);
            let Some(target) = layout.tablespaces.get(&oid) else {
                continue;
            };
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(RestoreError::io("create", parent))?;
            }
            match std::fs::read_link(&link) {
                Ok(t) if &t == target => {}
                Ok(_) => {
                    std::fs::remove_file(&link).map_err(RestoreError::io("remove", &link))?;
                    std::os::unix::fs::symlink(target, &link)
                        .map_err(RestoreError::io("create symbolic link", &link))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::os::unix::fs::symlink(target, &link)
                        .map_err(RestoreError::io("create symbolic link", &link))?;
                }
                Err(e) => return Err(RestoreError::io("read symbolic link", &link)(e)),
            }
            continue;
        }
        let dest = layout.dest(&d.path);
        if let Some(parent) = dest.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent).map_err(RestoreError::io("create", parent))?;
            }
        }
        make_dir(&dest, d.mode).map_err(RestoreError::io("create", &dest))?;
        out.push(dest);
    }
    Ok(out)
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

/// Removes everything inside `dir` (not `dir` itself, nor a restore marker); returns how many
/// entries it held.
pub fn wipe_contents(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_name() == RESTORE_MARKER {
            continue;
        }
        remove_path(&e.path())?;
        n += 1;
    }
    Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
