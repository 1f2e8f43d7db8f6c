//! `pitr backup --method replication`: the base backup taken over the replication protocol
//! (`BASE_BACKUP`, as `pg_basebackup` does), for a host that cannot read PGDATA.
//!
//! The server streams one tar archive per tablespace; [`TarParser`] splits them into files as
//! they arrive, and every file passes through the same frame encoder (BLAKE3 + compression)
//! into the same repository objects and manifest entries as the local copy method
//! ([`super::copy`]). `backup_label` and `tablespace_map` are kept in the manifest, not as
//! files, exactly as the copy method keeps what `pg_backup_stop` returns.
//!
//! The server checks data page checksums itself (`VERIFY_CHECKSUMS`) and fails the backup on
//! a mismatch. WAL is not requested from the server: the caller waits for it in the
//! repository, where the server's `archive_command` (pitr archive-push) puts it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use pitr_pg::Lsn;
use pitr_proto::repl::{BackupEvent, BaseBackupOptions, ReplConnection};
use pitr_proto::tar::{EntryKind, TarEntry, TarEvent, TarParser};
use pitr_repo::frame::FrameEncoder;
use pitr_repo::{ClusterRepo, Compression, ManifestDir, ManifestFile, RepoError};
use pitr_storage::{PutMode, Upload};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::{BackupError, Progress};

/// What the server sent, in the copy method's terms.
#[derive(Debug)]
pub(super) struct Received {
    /// Where the backup starts, and its timeline.
    pub start_lsn: Lsn,
    /// Timeline of the start.
    pub timeline: u32,
    /// Where recovery must at least replay to.
    pub end_lsn: Lsn,
    /// `backup_label` as the server wrote it into the main archive.
    pub backup_label: String,
    /// `tablespace_map`, when the server sent one.
    pub tablespace_map: Option<String>,
    /// Every file stored.
    pub files: Vec<ManifestFile>,
    /// Every directory to recreate.
    pub dirs: Vec<ManifestDir>,
}

/// Chunks (each at most a few tens of kB, as the server sends them) queued per file.
const CHANNEL_CHUNKS: usize = 64;

/// Files of the main archive kept in the manifest rather than stored.
const LABEL_FILE: &str = "backup_label";
const MAP_FILE: &str = "tablespace_map";

/// Runs `BASE_BACKUP` on `conn` under `label` and stores every file of every archive in
/// backup `label` of `cluster`.
pub(super) async fn receive(
    conn: &mut ReplConnection,
    cluster: &ClusterRepo,
    label: &str,
    fast: bool,
    compression: Compression,
    jobs: usize,
    progress: Arc<Progress>,
) -> Result<Received, BackupError> {
    let opts = BaseBackupOptions {
        label: label.to_string(),
        fast_checkpoint: fast,
        // pitr waits for the WAL in its repository, with a deadline (see `wait_for_wal`).
        wait_for_archive: false,
        include_wal: false,
        manifest: false,
        tablespace_map: true,
        verify_checksums: true,
        ..Default::default()
    };
    let mut bb = conn.base_backup(&opts).await?;
    let start_lsn = bb.start_lsn();
    let timeline = bb.timeline().0;
    tracing::info!("backup {label} started at {start_lsn} on timeline {timeline} (BASE_BACKUP)");
    let mut rx = Receiver {
        cluster,
        label,
        compression,
        progress,
        slots: Arc::new(Semaphore::new(jobs.max(1))),
        encoding: JoinSet::new(),
        archive: None,
        file: None,
        small: None,
        files: Vec::new(),
        dirs: Vec::new(),
        backup_label: None,
        tablespace_map: None,
    };
    let mut end = None;
    while let Some(event) = bb.next_event().await? {
        match event {
            BackupEvent::ArchiveStart(a) => {
                let prefix = match a.tablespace.oid {
                    None => String::new(),
                    Some(oid) => {
                        rx.dirs.push(ManifestDir {
                            path: format!("pg_tblspc/{oid}"),
                            mode: 0o700,
                        });
                        format!("pg_tblspc/{oid}/")
                    }
                };
                rx.archive = Some(Archive {
                    parser: TarParser::new(),
                    prefix,
                    name: a.name,
                });
            }
            BackupEvent::ArchiveData(chunk) => rx.data(chunk).await?,
            BackupEvent::ArchiveEnd => rx.end_archive().await?,
            BackupEvent::ManifestData(_) | BackupEvent::Progress(_) => {}
            BackupEvent::End {
                end_lsn, timeline, ..
            } => end = Some((end_lsn, timeline.0)),
        }
    }
    let Some((end_lsn, end_timeline)) = end else {
        return Err(BackupError::Internal(
            "BASE_BACKUP ended without its end position".into(),
        ));
    };
    if end_timeline != timeline {
        return Err(BackupError::Internal(format!(
            "the server switched timeline during the backup ({timeline} to {end_timeline})"
        )));
    }
    while let Some(done) = rx.encoding.join_next().await {
        rx.joined(done)?;
    }
    let backup_label = rx.backup_label.take().ok_or_else(|| {
        BackupError::Internal("the server's base archive holds no backup_label".into())
    })?;
    rx.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Received {
        start_lsn,
        timeline,
        end_lsn,
        backup_label,
        tablespace_map: rx.tablespace_map.take().filter(|m| !m.trim().is_empty()),
        files: rx.files,
        dirs: rx.dirs,
    })
}

/// The state of the archives being read.
struct Receiver<'a> {
    cluster: &'a ClusterRepo,
    label: &'a str,
    compression: Compression,
    progress: Arc<Progress>,
    /// Files encoded at the same time (`--jobs`).
    slots: Arc<Semaphore>,
    /// The files being encoded and stored.
    encoding: JoinSet<Result<ManifestFile, BackupError>>,
    /// The archive being read.
    archive: Option<Archive>,
    /// The file being stored.
    file: Option<FileSink>,
    /// `backup_label` or `tablespace_map` being collected: which, and its bytes.
    small: Option<(&'static str, Vec<u8>)>,
    files: Vec<ManifestFile>,
    dirs: Vec<ManifestDir>,
    backup_label: Option<String>,
    tablespace_map: Option<String>,
}

/// One file on its way into the repository: its data goes to an encoding task.
struct FileSink {
    tx: mpsc::Sender<Bytes>,
    path: String,
}

impl Receiver<'_> {
    /// Feeds the next bytes of the current archive to its parser.
    async fn data(&mut self, chunk: Bytes) -> Result<(), BackupError> {
        let Some(mut archive) = self.archive.take() else {
            return Err(BackupError::Internal(
                "archive data outside an archive".into(),
            ));
        };
        let result = self.feed(&mut archive, &chunk).await;
        self.archive = Some(archive);
        result
    }

    async fn feed(&mut self, archive: &mut Archive, chunk: &Bytes) -> Result<(), BackupError> {
        let mut rest: &[u8] = chunk;
        loop {
            let consumed = chunk.len() - rest.len();
            let (n, event) = archive.parser.parse(rest).map_err(|e| archive.error(e))?;
            rest = &rest[n..];
            match event {
                // File data is the parsed prefix of `rest`: pass it on without a copy.
                Some(TarEvent::Data(d)) => {
                    self.file_data(chunk.slice(consumed..consumed + d.len()))
                        .await?
                }
                Some(ev) => self.event(ev, &archive.prefix).await?,
                None if rest.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    /// The end of the current archive: the parser's last events, then its end check.
    async fn end_archive(&mut self) -> Result<(), BackupError> {
        let Some(mut archive) = self.archive.take() else {
            return Err(BackupError::Internal(
                "archive end outside an archive".into(),
            ));
        };
        while let (0, Some(ev)) = archive.parser.parse(&[]).map_err(|e| archive.error(e))? {
            self.event(ev, &archive.prefix).await?;
        }
        archive.parser.finish().map_err(|e| archive.error(e))?;
        if self.file.is_some() || self.small.is_some() {
            return Err(BackupError::Internal(format!(
                "archive {} ended inside a file",
                archive.name
            )));
        }
        Ok(())
    }

    async fn event(&mut self, event: TarEvent<'_>, prefix: &str) -> Result<(), BackupError> {
        match event {
            TarEvent::Entry(e) => self.entry(prefix, e).await,
            TarEvent::Data(d) => self.file_data(Bytes::copy_from_slice(d)).await,
            TarEvent::EntryEnd => {
                if let Some((which, buf)) = self.small.take() {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    match which {
                        LABEL_FILE => self.backup_label = Some(text),
                        _ => self.tablespace_map = Some(text),
                    }
                }
                // Closing the channel lets the task finish the file.
                self.file = None;
                while let Some(done) = self.encoding.try_join_next() {
                    self.joined(done)?;
                }
                Ok(())
            }
            TarEvent::End => Ok(()),
        }
    }

    /// The next bytes of the current file.
    async fn file_data(&mut self, d: Bytes) -> Result<(), BackupError> {
        if let Some((_, buf)) = self.small.as_mut() {
            buf.extend_from_slice(&d);
        } else if let Some(f) = self.file.as_mut() {
            let n = d.len() as u64;
            if f.tx.send(d).await.is_err() {
                // The task ended early: its error says why.
                let path = f.path.clone();
                while let Some(done) = self.encoding.join_next().await {
                    self.joined(done)?;
                }
                return Err(BackupError::Internal(format!("storing {path} stopped")));
            }
            self.progress.bytes.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A finished encoding task.
    fn joined(
        &mut self,
        done: Result<Result<ManifestFile, BackupError>, tokio::task::JoinError>,
    ) -> Result<(), BackupError> {
        let entry = done.map_err(|e| BackupError::Internal(e.to_string()))??;
        self.files.push(entry);
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A new entry of an archive whose entries go under `prefix`.
    async fn entry(&mut self, prefix: &str, e: TarEntry) -> Result<(), BackupError> {
        let mut path = e.path.trim_end_matches('/');
        while let Some(rest) = path.strip_prefix("./") {
            path = rest;
        }
        let in_main = prefix.is_empty();
        let rel = format!("{prefix}{path}");
        let mode = e.mode & 0o7777;
        match e.kind {
            EntryKind::Directory => {
                if !path.is_empty() && path != "." {
                    self.dirs.push(ManifestDir { path: rel, mode });
                }
            }
            EntryKind::File if in_main && (path == LABEL_FILE || path == MAP_FILE) => {
                let which = if path == LABEL_FILE {
                    LABEL_FILE
                } else {
                    MAP_FILE
                };
                self.small = Some((which, Vec::new()));
            }
            EntryKind::File => {
                let key = self.cluster.backup_file_key(self.label, &rel);
                let enc = FrameEncoder::new(self.compression).map_err(|err| {
                    BackupError::Internal(format!("cannot start compression for {rel}: {err}"))
                })?;
                let permit = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|err| BackupError::Internal(err.to_string()))?;
                let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
                let entry = ManifestFile::new(rel.clone(), mode, e.mtime);
                let task = EncodeTask {
                    rt: Handle::current(),
                    cluster: self.cluster.clone(),
                    key,
                    entry,
                    enc,
                };
                self.encoding.spawn_blocking(move || {
                    let r = task.run(rx);
                    drop(permit);
                    r
                });
                self.file = Some(FileSink { tx, path: rel });
            }
            other => {
                // With a tablespace map the server sends no links; anything else is unexpected
                // in a data directory and is left out, as the copy method leaves out links.
                tracing::warn!("skipping {rel} in the server's archive (entry type {other:?})");
            }
        }
        Ok(())
    }
}

/// The archive being read.
struct Archive {
    parser: TarParser,
    /// Manifest path prefix of its entries (`pg_tblspc/<oid>/` for a tablespace).
    prefix: String,
    /// Its name (`base.tar`, `<oid>.tar`).
    name: String,
}

impl Archive {
    fn error(&self, e: pitr_proto::tar::TarError) -> BackupError {
        BackupError::Internal(format!("the server's archive {}: {e}", self.name))
    }
}

/// Encodes one file's chunks as they come and streams the frames to storage (on a blocking
/// thread, so compression runs beside the reception of the next files).
struct EncodeTask {
    rt: Handle,
    cluster: ClusterRepo,
    key: String,
    entry: ManifestFile,
    enc: FrameEncoder,
}

impl EncodeTask {
    fn run(mut self, mut rx: mpsc::Receiver<Bytes>) -> Result<ManifestFile, BackupError> {
        let storage = self.cluster.repo().storage().clone();
        let encode_err = |path: &str, e: std::io::Error| {
            BackupError::Internal(format!("cannot encode {path}: {e}"))
        };
        let mut upload: Option<Box<dyn Upload>> = None;
        while let Some(data) = rx.blocking_recv() {
            self.enc
                .write(&data)
                .map_err(|e| encode_err(&self.entry.path, e))?;
            self.entry.size += data.len() as u64;
            let out = self.enc.take_output();
            if !out.is_empty() {
                let up = match upload.as_mut() {
                    Some(up) => up,
                    None => upload.insert(
                        self.rt
                            .block_on(storage.upload(&self.key))
                            .map_err(RepoError::from)?,
                    ),
                };
                self.rt
                    .block_on(up.write(Bytes::from(out)))
                    .map_err(RepoError::from)?;
            }
        }
        if self.entry.size == 0 {
            return Ok(self.entry);
        }
        let (rest, summary) = self
            .enc
            .finish()
            .map_err(|e| encode_err(&self.entry.path, e))?;
        let mut up = match upload {
            Some(u) => u,
            None => self
                .rt
                .block_on(storage.upload(&self.key))
                .map_err(RepoError::from)?,
        };
        self.rt
            .block_on(async {
                up.write(Bytes::from(rest)).await?;
                up.finish(PutMode::Overwrite).await
            })
            .map_err(RepoError::from)?;
        self.entry.stored_size = self
            .rt
            .block_on(storage.head(&self.key))
            .map_err(RepoError::from)?
            .map(|m| m.size)
            .unwrap_or(0);
        self.entry.blake3 = summary.checksum.to_string();
        Ok(self.entry)
    }
}
