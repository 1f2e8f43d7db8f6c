//! Directory checks: where the data directory and each tablespace will be restored, what is
//! there now and what will happen to it; refused when a server runs there, when it overlaps the
//! repository or another restored directory, or when it is not empty without `--delta` or
//! `--force`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pitr_repo::BackupManifest;

use super::{DirAction, TablespacePlan};
use crate::restore::{RestoreError, RestoreOptions};

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

/// What the directory checks found.
#[derive(Debug)]
pub struct Dirs {
    /// What is in the data directory now.
    pub pgdata_state: DirState,
    /// Where each tablespace goes, and what is there.
    pub tablespaces: Vec<TablespacePlan>,
    /// The data directory holds an interrupted restore: it is resumed as `--delta`.
    pub resume: bool,
}

/// Checks the data directory `pgdata` and the tablespace directories of `manifest` (original
/// locations unless `--tablespace-map` moves them).
pub fn check(
    pgdata: &Path,
    repository: &str,
    manifest: &BackupManifest,
    opts: &RestoreOptions,
) -> Result<Dirs, RestoreError> {
    let remap = tablespace_map(manifest, opts)?;
    if let Some(pid) = pitr_os::running_postmaster(pgdata) {
        return Err(RestoreError::ServerRunning {
            path: pgdata.to_path_buf(),
            pid,
        });
    }
    let repo_path = Path::new(repository);
    if repo_path.is_absolute() || repo_path.exists() {
        let repo_abs = absolute(repo_path);
        if overlaps(pgdata, &repo_abs) {
            return Err(RestoreError::OverlapsRepo {
                path: pgdata.to_path_buf(),
                repo: repository.to_string(),
            });
        }
    }
    // An interrupted restore (its marker, no control file) is resumed, as with --delta.
    let resume = !opts.force && crate::restore::execute::seal::interrupted(pgdata);
    let delta = opts.delta || resume;
    let pgdata_state = check_dir(pgdata, delta, opts.force)?;
    let mut tablespaces = Vec::new();
    let mut claimed: Vec<PathBuf> = vec![pgdata.to_path_buf()];
    for t in &manifest.tablespaces {
        let restore_to = remap
            .get(&t.oid)
            .cloned()
            .unwrap_or_else(|| absolute(Path::new(&t.location)));
        if let Some(other) = claimed.iter().find(|c| overlaps(c, &restore_to)) {
            return Err(RestoreError::Tablespace(format!(
                "tablespace {} ({}) would be restored to {}, which overlaps {}\nhint: give each tablespace its own directory outside the data directory with --tablespace-map {}=DIR",
                t.oid,
                t.name,
                restore_to.display(),
                other.display(),
                t.oid
            )));
        }
        if overlaps(&restore_to, &absolute(repo_path)) {
            return Err(RestoreError::OverlapsRepo {
                path: restore_to,
                repo: repository.to_string(),
            });
        }
        claimed.push(restore_to.clone());
        check_tablespace_free(t.oid, &restore_to)?;
        let state = check_dir(&restore_to, delta, opts.force)?;
        tablespaces.push(TablespacePlan {
            oid: t.oid,
            name: t.name.clone(),
            original: t.location.clone(),
            action: dir_action(&state, delta),
            restore_to,
            state,
        });
    }
    Ok(Dirs {
        pgdata_state,
        tablespaces,
        resume,
    })
}

/// `--tablespace-map`, checked against the backup's tablespaces, as OID → absolute directory.
fn tablespace_map(
    manifest: &BackupManifest,
    opts: &RestoreOptions,
) -> Result<BTreeMap<u32, PathBuf>, RestoreError> {
    let mut remap: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for (oid, dir) in &opts.tablespace_map {
        if !manifest.tablespaces.iter().any(|t| t.oid == *oid) {
            let known = manifest
                .tablespaces
                .iter()
                .map(|t| format!("{} ({})", t.oid, t.name))
                .collect::<Vec<_>>();
            return Err(RestoreError::Tablespace(format!(
                "--tablespace-map {oid}={}: backup {} has no tablespace with OID {oid}\nhint: its tablespaces are: {}",
                dir.display(),
                manifest.label,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        remap.insert(*oid, absolute(dir));
    }
    Ok(remap)
}

/// What will happen to a directory in this state.
pub fn dir_action(state: &DirState, delta: bool) -> DirAction {
    match state {
        DirState::Missing => DirAction::Create,
        DirState::Empty => DirAction::Fill,
        DirState::NotEmpty { .. } if delta => DirAction::Delta,
        DirState::NotEmpty { .. } => DirAction::Wipe,
    }
}

/// What is at `path`; refused when it is not empty and neither `delta` nor `force` allows it.
pub fn check_dir(path: &Path, delta: bool, force: bool) -> Result<DirState, RestoreError> {
    let state = inspect_dir(path).map_err(RestoreError::io("inspect", path))?;
    if let DirState::NotEmpty { entries, sample } = &state {
        if !delta && !force {
            return Err(RestoreError::NotEmpty {
                path: path.to_path_buf(),
                entries: *entries,
                sample: sample.join(", "),
            });
        }
    }
    Ok(state)
}

/// Refuses a tablespace directory that a running server uses (`--force` would empty it,
/// `--delta` rewrite it under the server).
pub fn check_tablespace_free(oid: u32, dir: &Path) -> Result<(), RestoreError> {
    match pitr_os::server_using_tablespace(dir) {
        Some((pid, pgdata)) => Err(RestoreError::TablespaceInUse {
            oid,
            path: dir.to_path_buf(),
            pid,
            pgdata,
        }),
        None => Ok(()),
    }
}

/// An absolute, lexically clean path (symlinks of existing ancestors resolved).
pub fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // Resolve the longest existing prefix so that /tmp/x and /private/tmp/x compare equal.
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for n in rest.iter().rev() {
        out.push(n);
    }
    out
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            crate::restore::execute::prepare::wipe_contents(d.path()).unwrap(),
            1
        );
        assert_eq!(inspect_dir(d.path()).unwrap(), DirState::Empty);
    }
}
