//! Crash safety: a restore interrupted at any instant leaves a directory PostgreSQL refuses to
//! start, and running it again finishes it.
//!
//! PostgreSQL cannot start without `global/pg_control`. So the very first change a restore
//! makes is to move the control file already there out of the way ([`open`]), and the last is to rename the
//! restored one into place ([`seal`]), once every other file, `backup_label` and the recovery
//! settings are durable. In between, [`RESTORE_MARKER`] says that the directory is a restore in
//! progress, which the next run resumes as `--delta`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::finish::fsync_dir;
use crate::restore::layout::{PG_CONTROL, PG_CONTROL_PENDING, RESTORE_MARKER};
use crate::restore::RestoreError;

/// Makes `pgdata` (existing) unstartable and marks it as a restore in progress of `label`:
/// moves `global/pg_control` to its temporary name durably (where `--delta` may still keep it
/// if it matches the backup's), then writes the marker.
pub fn open(pgdata: &Path, label: &str) -> Result<(), RestoreError> {
    let control = pgdata.join(PG_CONTROL);
    match fs::rename(&control, pgdata.join(PG_CONTROL_PENDING)) {
        Ok(()) => {
            let global = pgdata.join("global");
            fsync_dir(&global).map_err(RestoreError::io("fsync", &global))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(RestoreError::io("rename", &control)(e)),
    }
    let marker = pgdata.join(RESTORE_MARKER);
    (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)?;
        writeln!(
            f,
            "pitr is restoring backup {label} here; global/pg_control is put in place last.\n\
             An interrupted restore is finished by running it again (or with --delta)."
        )?;
        f.sync_all()
    })()
    .map_err(RestoreError::io("write", &marker))?;
    fsync_dir(pgdata).map_err(RestoreError::io("fsync", pgdata))
}

/// Puts the restored control file in place and removes the marker, each durably. Called once
/// everything else is durable.
pub fn seal(pgdata: &Path) -> Result<(), RestoreError> {
    let pending = pgdata.join(PG_CONTROL_PENDING);
    let control = pgdata.join(PG_CONTROL);
    fs::rename(&pending, &control).map_err(RestoreError::io("rename", &pending))?;
    let global = pgdata.join("global");
    fsync_dir(&global).map_err(RestoreError::io("fsync", &global))?;
    let marker = pgdata.join(RESTORE_MARKER);
    match fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(RestoreError::io("remove", &marker)(e)),
    }
    fsync_dir(pgdata).map_err(RestoreError::io("fsync", pgdata))
}

/// Whether `pgdata` holds an interrupted restore (the marker).
pub fn interrupted(pgdata: &Path) -> bool {
    pgdata.join(RESTORE_MARKER).is_file()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::restore::execute::prepare::wipe_contents;

    #[test]
    fn the_control_file_is_away_from_open_to_seal_and_the_marker_survives_a_wipe() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path();
        fs::create_dir_all(pgdata.join("global")).unwrap();
        fs::write(pgdata.join(PG_CONTROL), b"old control").unwrap();
        fs::write(pgdata.join("PG_VERSION"), b"17\n").unwrap();

        open(pgdata, "20261203T000000F").unwrap();
        assert!(!pgdata.join(PG_CONTROL).exists());
        // Kept under the temporary name, where --delta may reuse it.
        assert_eq!(
            fs::read(pgdata.join(PG_CONTROL_PENDING)).unwrap(),
            b"old control"
        );
        assert!(interrupted(pgdata));
        assert!(fs::read_to_string(pgdata.join(RESTORE_MARKER))
            .unwrap()
            .contains("20261203T000000F"));

        // --force empties the directory, but not of the marker.
        assert_eq!(wipe_contents(pgdata).unwrap(), 2);
        assert!(interrupted(pgdata));
        // Opening again (a rerun) with no control file is fine.
        open(pgdata, "20261203T000000F").unwrap();

        fs::create_dir_all(pgdata.join("global")).unwrap();
        fs::write(pgdata.join(PG_CONTROL_PENDING), b"restored control").unwrap();
        seal(pgdata).unwrap();
        assert_eq!(
            fs::read(pgdata.join(PG_CONTROL)).unwrap(),
            b"restored control"
        );
        assert!(!pgdata.join(PG_CONTROL_PENDING).exists());
        assert!(!interrupted(pgdata));
    }
}
