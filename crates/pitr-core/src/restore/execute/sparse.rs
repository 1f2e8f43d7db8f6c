//! Databases left out of a partial restore (`pitr undo`; the system databases are never left
//! out): their relation files are created as
//! sparse files of the size the backup recorded, holding only zeros and taking no disk space,
//! the way pgBackRest's `restore --db-include` zeroes the databases it leaves out. Recovery
//! replays over them as over any file (every page it writes after the backup's checkpoint comes
//! with a full-page image), but the databases are unusable: nothing may connect to them (the
//! restored server's catalog still lists them), and the cluster is thrown away afterwards.

use std::fs::{self, File};

use pitr_repo::ManifestFile;
use serde::Serialize;

use super::write;
use crate::restore::layout::Layout;
use crate::restore::RestoreError;

/// What a partial restore leaves out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeftOut {
    /// OIDs of the databases whose relation files are sparse, zeroed files.
    pub databases: Vec<u32>,
    /// Relation files created sparse.
    pub files: usize,
    /// Their size (not written).
    pub bytes: u64,
    /// The files themselves.
    #[serde(skip)]
    pub list: Vec<ManifestFile>,
}

/// The database OID of a relation file, `base/<db>/<relfile>` or
/// `pg_tblspc/<spc>/<version dir>/<db>/<relfile>`; `None` for anything else (`PG_VERSION` and
/// `pg_filenode.map` included: they are restored, being small and read at connection).
pub fn relation_file_db(path: &str) -> Option<u32> {
    let parts: Vec<&str> = path.split('/').collect();
    let (db, file) = match parts.as_slice() {
        ["base", db, file] => (*db, *file),
        ["pg_tblspc", _, _, db, file] => (*db, *file),
        _ => return None,
    };
    if !file.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    db.parse().ok()
}

/// Databases made by `initdb` (`template1`, `template0`, `postgres`) have OIDs below this
/// (PostgreSQL's `FirstNormalObjectId`): they are always restored, as pgBackRest does, since
/// tools (and pitr's own wait for recovery) connect to `postgres`.
pub const FIRST_NORMAL_OID: u32 = 16384;

/// Moves the relation files of every database but `keep` and the system databases out of
/// `files` into a [`LeftOut`].
pub fn split_off(files: &mut Vec<ManifestFile>, keep: u32) -> LeftOut {
    let mut out = LeftOut::default();
    files.retain(|f| match relation_file_db(&f.path) {
        Some(db) if db != keep && db >= FIRST_NORMAL_OID => {
            if !out.databases.contains(&db) {
                out.databases.push(db);
            }
            out.files += 1;
            out.bytes += f.size;
            out.list.push(f.clone());
            false
        }
        _ => true,
    });
    out.databases.sort_unstable();
    out
}

/// Creates the left-out files: sparse, of their recorded size, mode and mtime.
pub fn create(left_out: &LeftOut, layout: &Layout) -> Result<(), RestoreError> {
    for f in &left_out.list {
        let dest = layout.dest(&f.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(RestoreError::io("create", parent))?;
        }
        let file = File::create(&dest).map_err(RestoreError::io("create", &dest))?;
        file.set_len(f.size)
            .map_err(RestoreError::io("extend", &dest))?;
        write::apply_attrs(&file, f).map_err(RestoreError::io("set mode and mtime of", &dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_files_are_told_by_database() {
        assert_eq!(relation_file_db("base/16384/16385"), Some(16384));
        assert_eq!(relation_file_db("base/16384/16385_fsm"), Some(16384));
        assert_eq!(relation_file_db("base/16384/16385.1"), Some(16384));
        assert_eq!(relation_file_db("base/16384/PG_VERSION"), None);
        assert_eq!(relation_file_db("base/16384/pg_filenode.map"), None);
        assert_eq!(
            relation_file_db("pg_tblspc/16400/PG_16_202307071/16384/16401"),
            Some(16384)
        );
        assert_eq!(relation_file_db("global/1262"), None);
        assert_eq!(relation_file_db("pg_xact/0000"), None);
    }

    #[test]
    fn only_other_user_databases_are_left_out() {
        let f = |path: &str| ManifestFile {
            path: path.into(),
            size: 8192,
            mode: 0o600,
            mtime: 0,
            blake3: "x".into(),
            stored_size: 10,
            stored_in: None,
            checksum_failures: Vec::new(),
            blocks: None,
            bundle: None,
        };
        let mut files = vec![
            f("base/1/1259"),
            f("base/5/1259"),
            f("base/16384/1259"),
            f("base/16390/1259"),
            f("base/16390/PG_VERSION"),
            f("global/1262"),
        ];
        let out = split_off(&mut files, 16384);
        assert_eq!(out.databases, vec![16390]);
        assert_eq!((out.files, out.bytes), (1, 8192));
        assert_eq!(files.len(), 5);
    }
}
