//! Where a restore writes: the data directory and the tablespace directories, and which
//! manifest paths may be written at all.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

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

/// PostgreSQL's control file: it is written last (see [`PG_CONTROL_PENDING`]).
pub const PG_CONTROL: &str = "global/pg_control";
/// Where `global/pg_control` is restored until every other file is durable; only then is it
/// renamed into place. Without a control file PostgreSQL refuses to start, so a restore
/// interrupted at any instant never leaves a directory that starts a crash recovery over
/// half-restored files.
pub const PG_CONTROL_PENDING: &str = "global/pg_control.pitr-pending";
/// Left in the data directory from the first change a restore makes until the control file is
/// in place: running the same restore again resumes it (as `--delta`) instead of refusing a
/// non-empty directory.
pub const RESTORE_MARKER: &str = "pitr-restore-in-progress";

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

    /// The destination of manifest path `rel` (already checked with [`is_safe_rel`]) during the
    /// restore: `global/pg_control` goes to [`PG_CONTROL_PENDING`].
    pub fn dest(&self, rel: &str) -> PathBuf {
        if rel == PG_CONTROL {
            return self.pgdata.join(PG_CONTROL_PENDING);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            l.dest("global/pg_control"),
            PathBuf::from("/data/global/pg_control.pitr-pending")
        );
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
}
