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
