//! Which files of a data directory a base backup copies: everything except what
//! `pg_basebackup` leaves out (`excludeDirContents` / `excludeFiles` in basebackup.c).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pitr_repo::ManifestDir;

/// Directories whose contents are not copied (the directories themselves are).
const EXCLUDE_DIR_CONTENTS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files never copied (at any depth for `pg_internal.init`, top level for the rest).
const EXCLUDE_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.signal",
    "standby.signal",
];

/// Prefix of temporary files and directories.
const TEMP_PREFIX: &str = "pgsql_tmp";

/// A file to copy.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to PGDATA, `/`-separated (`pg_tblspc/<oid>/…` for tablespaces).
    pub rel: String,
    /// Where to read it.
    pub abs: PathBuf,
    /// Size when listed.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds).
    pub mtime: i64,
}

/// A tablespace found under `pg_tblspc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTablespace {
    /// OID (link name).
    pub oid: u32,
    /// Link target.
    pub location: PathBuf,
}

/// The listing of a data directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Directories to recreate.
    pub dirs: Vec<ManifestDir>,
    /// Files to copy.
    pub files: Vec<SourceFile>,
    /// Tablespaces (symlinks under `pg_tblspc`).
    pub tablespaces: Vec<FoundTablespace>,
}

/// Lists what a base backup of `pgdata` copies.
pub fn list(pgdata: &Path) -> io::Result<Listing> {
    let mut out = Listing::default();
    walk_dir(pgdata, "", true, &mut out)?;
    out.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// True for names of relation files (`12345`, `12345_fsm`, `12345.3`, `12345_init`).
pub fn is_relation_file(name: &str) -> bool {
    let base = name.split_once('.').map_or(name, |(b, seg)| {
        if !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_digit()) {
            b
        } else {
            ""
        }
    });
    let node = base
        .strip_suffix("_fsm")
        .or_else(|| base.strip_suffix("_vm"))
        .or_else(|| base.strip_suffix("_init"))
        .unwrap_or(base);
    !node.is_empty() && node.bytes().all(|c| c.is_ascii_digit())
}

/// Temporary relations (`t<backend>_<relnode>…`) are not backed up.
fn is_temp_relation(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|r| r.split_once('_'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && is_relation_file(b)
        })
}

fn rel_join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Relation file nodes with an init fork in `dir` (unlogged relations): only their init fork is
/// copied.
fn unlogged_nodes(dir: &Path) -> io::Result<HashSet<String>> {
    let mut set = HashSet::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(node) = name.strip_suffix("_init") {
            set.insert(node.to_string());
        }
    }
    Ok(set)
}

fn walk_dir(abs: &Path, rel: &str, top: bool, out: &mut Listing) -> io::Result<()> {
    let in_db_dir = rel.starts_with("base/") || rel.contains("/PG_") || rel == "global";
    let unlogged = if in_db_dir {
        unlogged_nodes(abs)?
    } else {
        HashSet::new()
    };
    let mut entries: Vec<_> = fs::read_dir(abs)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let child_rel = rel_join(rel, &name);
        if name.starts_with(TEMP_PREFIX) || name == "pg_internal.init" {
            continue;
        }
        if top && EXCLUDE_FILES.contains(&name.as_str()) {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue, // dropped meanwhile
            Err(err) => return Err(err),
        };
        if meta.file_type().is_symlink() {
            if rel == "pg_tblspc" {
                if let Ok(oid) = name.parse::<u32>() {
                    let location = fs::read_link(&path)?;
                    out.tablespaces.push(FoundTablespace {
                        oid,
                        location: location.clone(),
                    });
                    out.dirs.push(ManifestDir {
                        path: child_rel.clone(),
                        mode: 0o700,
                    });
                    walk_dir(&location, &child_rel, false, out)?;
                    continue;
                }
            }
            // A symlinked pg_wal (or another directory) is recreated as a plain directory.
            match fs::metadata(&path) {
                Ok(target) if target.is_dir() => {
                    out.dirs.push(ManifestDir {
                        path: child_rel.clone(),
                        mode: target.permissions().mode() & 0o7777,
                    });
                    if child_rel == "pg_wal" {
                        out.dirs.push(ManifestDir {
                            path: "pg_wal/archive_status".into(),
                            mode: 0o700,
                        });
                    } else {
                        walk_dir(&path, &child_rel, false, out)?;
                    }
                }
                _ => tracing::warn!("skipping symbolic link {}", path.display()),
            }
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.dirs.push(ManifestDir {
                path: child_rel.clone(),
                mode,
            });
            if child_rel == "pg_wal" {
                // WAL comes from the archive; keep the directory layout PostgreSQL expects.
                for sub in ["archive_status", "summaries"] {
                    if path.join(sub).is_dir() {
                        out.dirs.push(ManifestDir {
                            path: format!("pg_wal/{sub}"),
                            mode,
                        });
                    }
                }
                continue;
            }
            if top && EXCLUDE_DIR_CONTENTS.contains(&name.as_str()) {
                continue;
            }
            walk_dir(&path, &child_rel, false, out)?;
        } else if meta.is_file() {
            if in_db_dir && (is_temp_relation(&name) || skip_unlogged(&name, &unlogged)) {
                continue;
            }
            out.files.push(SourceFile {
                rel: child_rel,
                abs: path,
                size: meta.len(),
                mode,
                mtime: meta.mtime(),
            });
        }
    }
    Ok(())
}

fn skip_unlogged(name: &str, unlogged: &HashSet<String>) -> bool {
    if unlogged.is_empty() || name.ends_with("_init") {
        return false;
    }
    let node = name.split(['_', '.']).next().unwrap_or(name);
    unlogged.contains(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_relation_file_names() {
        for ok in [
            "1259",
            "16384_fsm",
            "16384_vm",
            "16384.12",
            "16384_init",
            "16384_fsm.1",
        ] {
            assert!(is_relation_file(ok), "{ok}");
        }
        for bad in [
            "PG_VERSION",
            "pg_filenode.map",
            "16384_",
            "16384.",
            "abc",
            "_fsm",
            "1.2.3",
        ] {
            assert!(!is_relation_file(bad), "{bad}");
        }
        assert!(is_temp_relation("t3_16384"));
        assert!(is_temp_relation("t3_16384_fsm"));
        assert!(!is_temp_relation("t_16384"));
    }

    #[test]
    fn leaves_out_what_pg_basebackup_leaves_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_replslot/slot",
            "pg_stat_tmp",
            "pg_subtrans",
            "base/5/pgsql_tmp",
        ] {
            fs::create_dir_all(p.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postgresql.conf",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "pg_wal/000000010000000000000001",
            "pg_replslot/slot/state",
            "pg_stat_tmp/global.stat",
            "pg_subtrans/0000",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/t3_99",
            "base/5/pg_internal.init",
            "base/5/pgsql_tmp/pgsql_tmp1.0",
            "global/pg_control",
        ] {
            fs::write(p.join(f), b"x").unwrap();
        }
        let l = list(p).unwrap();
        let files: Vec<&str> = l.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            files,
            vec![
                "PG_VERSION",
                "base/5/1259",
                "base/5/16384_init",
                "global/pg_control",
                "postgresql.conf"
            ]
        );
        let dirs: Vec<&str> = l.dirs.iter().map(|d| d.path.as_str()).collect();
        for d in [
            "pg_wal",
            "pg_wal/archive_status",
            "pg_replslot",
            "pg_stat_tmp",
            "pg_subtrans",
            "base/5",
        ] {
            assert!(dirs.contains(&d), "{d} missing from {dirs:?}");
        }
        assert!(!dirs.contains(&"pg_replslot/slot"));
    }
}
