//! A base backup over the replication protocol written straight into a data directory (what
//! `pg_basebackup -D DIR -Fp` does), for `pitr standby create`: the same `BASE_BACKUP` client
//! and streaming tar reader as `backup --method replication`, but files land in DIR instead of
//! the repository.
//!
//! Crash safety as in `pitr restore`: `global/pg_control` is written under a temporary name and
//! renamed into place only once every other file and directory is durable, so an interrupted
//! run never leaves a directory PostgreSQL would start (it refuses to start without a control
//! file). WAL is not included: the standby streams it from the primary (from the slot when one
//! is given) or fetches it from the repository with its `restore_command`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pitr_pg::Lsn;
use pitr_proto::repl::{BackupEvent, BaseBackupOptions, ReplConnection};
use pitr_proto::tar::{EntryKind, TarEntry, TarEvent, TarParser};

use super::conf::chown;
use super::local::entries;
use super::StandbyError;
use crate::restore::execute::finish::fsync_dir;
use crate::restore::layout::{is_safe_rel, PG_CONTROL, PG_CONTROL_PENDING};
use crate::restore::OsUser;

/// What was received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    /// Where the backup starts.
    #[serde(serialize_with = "crate::restore::ser_display")]
    pub start_lsn: Lsn,
    /// Where recovery must at least replay to.
    #[serde(serialize_with = "crate::restore::ser_display")]
    pub end_lsn: Lsn,
    /// Timeline of the backup.
    pub timeline: u32,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Tablespace directories written besides the data directory.
    pub tablespaces: Vec<PathBuf>,
}

/// Runs `BASE_BACKUP` on `conn` and writes every archive: the main one into `pgdata`, each
/// tablespace into its location (which must be empty or missing), owned by `owner`.
pub async fn receive_into(
    conn: &mut ReplConnection,
    pgdata: &Path,
    owner: Option<&OsUser>,
) -> Result<Received, StandbyError> {
    let opts = BaseBackupOptions {
        label: "pitr standby create".into(),
        fast_checkpoint: true,
        wait_for_archive: false,
        include_wal: false,
        manifest: false,
        tablespace_map: false,
        verify_checksums: true,
        ..Default::default()
    };
    let mut bb = conn.base_backup(&opts).await?;
    let start_lsn = bb.start_lsn();
    let timeline = bb.timeline().0;
    let mut w = Writer {
        owner,
        root: pgdata.to_path_buf(),
        parser: TarParser::new(),
        file: None,
        dirs: vec![pgdata.to_path_buf()],
        files: 0,
        bytes: 0,
        tablespaces: Vec::new(),
        name: String::new(),
    };
    let mut end = None;
    while let Some(event) = bb.next_event().await? {
        match event {
            BackupEvent::ArchiveStart(a) => {
                w.root = match (&a.tablespace.oid, &a.tablespace.location) {
                    (None, _) => pgdata.to_path_buf(),
                    (Some(oid), Some(loc)) => w.tablespace_root(*oid, loc)?,
                    (Some(oid), None) => {
                        return Err(StandbyError::Server(format!(
                            "the server sent tablespace {oid} without its location"
                        )))
                    }
                };
                w.parser = TarParser::new();
                w.name = a.name;
            }
            BackupEvent::ArchiveData(chunk) => w.feed(&chunk)?,
            BackupEvent::ArchiveEnd => w.end_archive()?,
            BackupEvent::ManifestData(_) | BackupEvent::Progress(_) => {}
            BackupEvent::End {
                end_lsn, timeline, ..
            } => end = Some((end_lsn, timeline.0)),
        }
    }
    let Some((end_lsn, _)) = end else {
        return Err(StandbyError::Server(
            "BASE_BACKUP ended without its end position".into(),
        ));
    };
    w.seal(pgdata)?;
    Ok(Received {
        start_lsn,
        end_lsn,
        timeline,
        files: w.files,
        bytes: w.bytes,
        tablespaces: w.tablespaces,
    })
}

/// Writes the entries of the archive being read under `root`.
struct Writer<'a> {
    owner: Option<&'a OsUser>,
    root: PathBuf,
    parser: TarParser,
    /// The file being written.
    file: Option<(File, PathBuf)>,
    /// Directories to fsync at the end.
    dirs: Vec<PathBuf>,
    files: u64,
    bytes: u64,
    tablespaces: Vec<PathBuf>,
    /// Name of the archive being read.
    name: String,
}

impl Writer<'_> {
    /// Prepares a tablespace's directory: it must be empty or missing.
    fn tablespace_root(&mut self, oid: u32, loc: &Path) -> Result<PathBuf, StandbyError> {
        let n = entries(loc)?;
        if n > 0 {
            return Err(StandbyError::NotEmpty {
                path: loc.to_path_buf(),
                entries: n,
            });
        }
        tracing::info!("writing tablespace {oid} into {}", loc.display());
        self.mkdir(loc, 0o700)?;
        self.tablespaces.push(loc.to_path_buf());
        Ok(loc.to_path_buf())
    }

    fn tar_err(&self, e: pitr_proto::tar::TarError) -> StandbyError {
        StandbyError::Server(format!("the server's archive {}: {e}", self.name))
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), StandbyError> {
        let mut rest = chunk;
        loop {
            let (n, event) = self.parser.parse(rest).map_err(|e| self.tar_err(e))?;
            rest = rest.get(n..).unwrap_or_default();
            match event {
                Some(TarEvent::Data(d)) => self.data(d)?,
                Some(TarEvent::Entry(e)) => self.entry(e)?,
                Some(TarEvent::EntryEnd) => self.entry_end()?,
                Some(TarEvent::End) => {}
                None if rest.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    fn end_archive(&mut self) -> Result<(), StandbyError> {
        loop {
            match self.parser.parse(&[]).map_err(|e| self.tar_err(e))? {
                (0, Some(TarEvent::Entry(e))) => self.entry(e)?,
                (0, Some(TarEvent::EntryEnd)) => self.entry_end()?,
                (0, Some(TarEvent::Data(d))) => self.data(d)?,
                (0, Some(TarEvent::End)) => {}
                _ => break,
            }
        }
        self.parser.finish().map_err(|e| self.tar_err(e))?;
        if self.file.is_some() {
            return Err(StandbyError::Server(format!(
                "archive {} ended inside a file",
                self.name
            )));
        }
        Ok(())
    }

    fn mkdir(&mut self, dir: &Path, mode: u32) -> Result<(), StandbyError> {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StandbyError::io("create", dir)(e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(StandbyError::io("set the mode of", dir))?;
        chown(dir, self.owner)?;
        self.dirs.push(dir.to_path_buf());
        Ok(())
    }

    fn entry(&mut self, e: TarEntry) -> Result<(), StandbyError> {
        let mut rel = e.path.trim_end_matches('/');
        while let Some(r) = rel.strip_prefix("./") {
            rel = r;
        }
        if rel.is_empty() || rel == "." {
            return Ok(());
        }
        if !is_safe_rel(rel) {
            return Err(StandbyError::Server(format!(
                "the server's archive {} names an unsafe path {rel:?}",
                self.name
            )));
        }
        let rel = if rel == PG_CONTROL {
            PG_CONTROL_PENDING
        } else {
            rel
        };
        let path = self.root.join(rel);
        let mode = e.mode & 0o7777;
        match e.kind {
            EntryKind::Directory => self.mkdir(&path, if mode == 0 { 0o700 } else { mode })?,
            EntryKind::File => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(StandbyError::io("create", &path))?;
                if mode != 0 {
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(StandbyError::io("set the mode of", &path))?;
                }
                chown(&path, self.owner)?;
                self.file = Some((f, path));
                self.files += 1;
            }
            EntryKind::Symlink => {
                let target = e.link_target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(StandbyError::io("create the link", &path))?;
                chown(&path, self.owner)?;
            }
            other => tracing::warn!("skipping {rel} in the server's archive (type {other:?})"),
        }
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> Result<(), StandbyError> {
        if let Some((f, path)) = self.file.as_mut() {
            f.write_all(d).map_err(StandbyError::io("write", path))?;
            self.bytes += d.len() as u64;
        }
        Ok(())
    }

    fn entry_end(&mut self) -> Result<(), StandbyError> {
        if let Some((f, path)) = self.file.take() {
            f.sync_all().map_err(StandbyError::io("fsync", &path))?;
        }
        Ok(())
    }

    /// Makes every directory durable, then puts the control file in place.
    fn seal(&mut self, pgdata: &Path) -> Result<(), StandbyError> {
        for d in self.dirs.iter().rev() {
            fsync_dir(d).map_err(StandbyError::io("fsync", d))?;
        }
        let pending = pgdata.join(PG_CONTROL_PENDING);
        let control = pgdata.join(PG_CONTROL);
        fs::rename(&pending, &control).map_err(StandbyError::io("rename", &pending))?;
        let global = pgdata.join("global");
        fsync_dir(&global).map_err(StandbyError::io("fsync", &global))
    }
}
