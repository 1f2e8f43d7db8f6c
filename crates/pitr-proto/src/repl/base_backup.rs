//! `BASE_BACKUP` (and `UPLOAD_MANIFEST` for incremental backups on 17+): the server's tar
//! archives and manifest as one stream of events, the same on every major.
//!
//! 14 sends one `CopyOutResponse` of plain tar data per tablespace (in the order of the
//! tablespace result set) and one more for the manifest; 15+ send a single `CopyOutResponse`
//! whose messages say what follows (`n` new archive, `d` data, `p` progress, `m` manifest).
//! Data arrives in chunks of at most a few tens of kB and is passed on as it comes: nothing is
//! buffered whole.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use pitr_pg::{Lsn, TimelineId};
use postgres_protocol::message::frontend;

use super::commands::quote_literal;
use super::conn::{ReplConnection, ResultSets};
use super::version::{base_backup_sql, BaseBackupDialect, BaseBackupSpec};
use super::wire::{be_u64, Backend};
use crate::ProtoError;

const WHAT: &str = "BASE_BACKUP";

/// How often progress is reported on 14, as the server does on 15+.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Checksum algorithm of the backup manifest's file entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestChecksums {
    /// No checksums (sizes only).
    None,
    /// CRC-32C (PostgreSQL's default).
    #[default]
    Crc32c,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ManifestChecksums {
    fn keyword(self) -> &'static str {
        match self {
            ManifestChecksums::None => "NONE",
            ManifestChecksums::Crc32c => "CRC32C",
            ManifestChecksums::Sha224 => "SHA224",
            ManifestChecksums::Sha256 => "SHA256",
            ManifestChecksums::Sha384 => "SHA384",
            ManifestChecksums::Sha512 => "SHA512",
        }
    }
}

/// What to ask `BASE_BACKUP` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// Label (in `backup_label` and the server's log).
    pub label: String,
    /// Checkpoint at once (`FAST` / `CHECKPOINT 'fast'`) instead of a spread one.
    pub fast_checkpoint: bool,
    /// Wait until the WAL the backup needs is archived (only matters with archiving on).
    pub wait_for_archive: bool,
    /// Put the WAL from start to end of the backup into the main archive (`pg_wal/`).
    pub include_wal: bool,
    /// Send a backup manifest.
    pub manifest: bool,
    /// Checksums in the manifest.
    pub manifest_checksums: ManifestChecksums,
    /// Size estimates in the tablespace list (the server walks the files twice).
    pub progress: bool,
    /// A `tablespace_map` file in the main archive instead of `pg_tblspc` symlinks.
    pub tablespace_map: bool,
    /// Check data page checksums while reading (when the cluster has them).
    pub verify_checksums: bool,
    /// Limit the server's send rate, in kB/s (32 to 1048576).
    pub max_rate_kb: Option<u32>,
    /// An incremental backup relative to the manifest given to
    /// [`ReplConnection::upload_manifest`] on this connection (17+, `summarize_wal = on`).
    pub incremental: bool,
}

impl Default for BaseBackupOptions {
    /// What `pg_basebackup -Ft` asks for: a manifest with CRC-32C, a tablespace map, checksum
    /// verification, a spread checkpoint, waiting for the archive; no WAL.
    fn default() -> Self {
        BaseBackupOptions {
            label: "pitr base backup".into(),
            fast_checkpoint: false,
            wait_for_archive: true,
            include_wal: false,
            manifest: true,
            manifest_checksums: ManifestChecksums::Crc32c,
            progress: false,
            tablespace_map: true,
            verify_checksums: true,
            max_rate_kb: None,
            incremental: false,
        }
    }
}

/// A tablespace as the backup lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTablespace {
    /// OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Directory on the server; `None` for the main data directory.
    pub location: Option<PathBuf>,
    /// Estimated size in kB (only with [`BaseBackupOptions::progress`]).
    pub size_kb: Option<u64>,
}

/// One archive (tar) of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupArchive {
    /// `base.tar` for the main data directory, `<oid>.tar` for a tablespace.
    pub name: String,
    /// The tablespace it holds.
    pub tablespace: BackupTablespace,
}

/// One thing received from `BASE_BACKUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// A tar archive begins.
    ArchiveStart(BackupArchive),
    /// The next bytes of the current archive.
    ArchiveData(Bytes),
    /// The current archive is complete.
    ArchiveEnd,
    /// The next bytes of the backup manifest (after all archives).
    ManifestData(Bytes),
    /// Bytes done so far: as the server reports them (15+: at most once a second and at the
    /// end of each archive), or on 14 (whose server sends no progress) the archive bytes
    /// received, at the same moments, as pg_basebackup counts them.
    Progress(u64),
    /// The backup is complete; the connection accepts commands again.
    End {
        /// Where the backup starts (as [`BaseBackupStream::start_lsn`]).
        start_lsn: Lsn,
        /// The backup's end: recovery must replay WAL at least to here.
        end_lsn: Lsn,
        /// Timeline of `end_lsn`.
        timeline: TimelineId,
    },
}

/// A running `BASE_BACKUP`: its start is known; call [`BaseBackupStream::next_event`] until
/// it returns `None`.
#[derive(Debug)]
pub struct BaseBackupStream<'c> {
    conn: &'c mut ReplConnection,
    dialect: BaseBackupDialect,
    start_lsn: Lsn,
    timeline: TimelineId,
    tablespaces: Vec<BackupTablespace>,
    manifest: bool,
    /// 14: index of the next tablespace's CopyOutResponse.
    next_archive: usize,
    state: State,
    in_archive: bool,
    in_manifest: bool,
    /// An event that follows the one just returned (15+: the start of the next archive after
    /// an `ArchiveEnd`; 14: a progress report).
    pending: Option<BackupEvent>,
    /// 14: archive bytes received, and when progress was last reported.
    received: u64,
    last_progress: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// 14: between two COPYs.
    BetweenCopies,
    InCopy,
    Done,
}

impl ReplConnection {
    /// `UPLOAD_MANIFEST` (17+): the manifest of the backup the next `BASE_BACKUP` with
    /// [`BaseBackupOptions::incremental`] on this connection is relative to.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<(), ProtoError> {
        let what = "UPLOAD_MANIFEST";
        self.require(what, 17, self.features().incremental_backup)?;
        self.send_query(what, "UPLOAD_MANIFEST").await?;
        match self.recv(what).await? {
            Backend::CopyInResponse => {}
            Backend::Error(server) => {
                self.read_results(what).await?;
                return Err(ProtoError::Query {
                    endpoint: self.endpoint().clone(),
                    what,
                    server,
                });
            }
            other => return Err(self.unexpected(what, &other)),
        }
        for chunk in manifest.chunks(64 * 1024) {
            frontend::CopyData::new(chunk)
                .map_err(|e| self.connection_error(what, &e))?
                .write(self.wbuf());
            self.flush().await?;
        }
        frontend::copy_done(self.wbuf());
        self.flush().await?;
        self.read_results(what).await?;
        Ok(())
    }

    /// Starts `BASE_BACKUP` in the server's grammar and reads its start position and
    /// tablespace list.
    pub async fn base_backup(
        &mut self,
        opts: &BaseBackupOptions,
    ) -> Result<BaseBackupStream<'_>, ProtoError> {
        if opts.incremental {
            self.require(
                "BASE_BACKUP INCREMENTAL",
                17,
                self.features().incremental_backup,
            )?;
        }
        let spec = BaseBackupSpec {
            label: quote_literal("backup label", &opts.label)?,
            progress: opts.progress,
            fast: opts.fast_checkpoint,
            wal: opts.include_wal,
            wait: opts.wait_for_archive,
            max_rate_kb: opts.max_rate_kb,
            tablespace_map: opts.tablespace_map,
            verify_checksums: opts.verify_checksums,
            manifest: if opts.manifest { "yes" } else { "no" },
            manifest_checksums: opts.manifest_checksums.keyword(),
            incremental: opts.incremental,
        };
        let dialect = self.features().base_backup;
        let sql = base_backup_sql(self.features(), &spec);
        self.send_query(WHAT, &sql).await?;
        let start = self.read_result_set(WHAT).await?;
        let row = self.one_row(&start, WHAT)?;
        let start_lsn: Lsn = self.parse_req(row, 0, WHAT)?;
        let timeline = TimelineId(self.parse_req(row, 1, WHAT)?);
        let list = self.read_result_set(WHAT).await?;
        let mut tablespaces = Vec::new();
        for row in list.0.iter().flat_map(|s| s.rows.iter()) {
            tablespaces.push(BackupTablespace {
                oid: self.parse_opt(row, 0, WHAT)?,
                location: self.text(row, 1, WHAT)?.map(PathBuf::from),
                size_kb: self.parse_opt(row, 2, WHAT)?,
            });
        }
        let mut state = State::BetweenCopies;
        if dialect == BaseBackupDialect::OptionList {
            match self.recv(WHAT).await? {
                Backend::CopyOutResponse => state = State::InCopy,
                Backend::Error(server) => return Err(self.failed(server).await),
                other => return Err(self.unexpected(WHAT, &other)),
            }
        }
        self.in_copy = true;
        tracing::info!(endpoint = %self.endpoint(), %start_lsn, %timeline, tablespaces = tablespaces.len(), "base backup started");
        Ok(BaseBackupStream {
            conn: self,
            dialect,
            start_lsn,
            timeline,
            tablespaces,
            manifest: opts.manifest,
            next_archive: 0,
            state,
            in_archive: false,
            in_manifest: false,
            pending: None,
            received: 0,
            last_progress: Instant::now(),
        })
    }

    /// One result set, ended by `CommandComplete` (the backup goes on after it).
    async fn read_result_set(&mut self, what: &'static str) -> Result<ResultSets, ProtoError> {
        let mut sets = ResultSets::default();
        loop {
            match self.recv(what).await? {
                Backend::RowDescription => sets.push_set(),
                Backend::DataRow(row) => match sets.0.last_mut() {
                    Some(set) => set.rows.push(row),
                    None => return Err(self.protocol(what, "a row without a row description")),
                },
                Backend::CommandComplete(_) => return Ok(sets),
                Backend::Error(server) => return Err(self.failed(server).await),
                other => return Err(self.unexpected(what, &other)),
            }
        }
    }

    /// The server's error, after reading up to `ReadyForQuery` so the connection stays usable.
    async fn failed(&mut self, server: Box<crate::ServerMessage>) -> ProtoError {
        self.in_copy = false;
        if let Err(e) = self.read_results(WHAT).await {
            tracing::debug!("after a BASE_BACKUP error: {e}");
        }
        ProtoError::Query {
            endpoint: self.endpoint().clone(),
            what: WHAT,
            server,
        }
    }
}

impl BaseBackupStream<'_> {
    /// Where the backup starts (the REDO point of its checkpoint).
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// Timeline of the start.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The tablespaces, main data directory included (its `oid` is `None`).
    pub fn tablespaces(&self) -> &[BackupTablespace] {
        &self.tablespaces
    }

    /// The next event; `Ok(None)` after [`BackupEvent::End`].
    pub async fn next_event(&mut self) -> Result<Option<BackupEvent>, ProtoError> {
        if let Some(event) = self.pending.take() {
            if matches!(event, BackupEvent::ArchiveStart(_)) {
                self.in_archive = true;
            }
            return Ok(Some(event));
        }
        loop {
            let msg = match self.state {
                State::Done => return Ok(None),
                _ => self.conn.recv(WHAT).await?,
            };
            let event = match (self.state, msg) {
                (_, Backend::Error(server)) => {
                    self.state = State::Done;
                    return Err(self.conn.failed(server).await);
                }
                (State::BetweenCopies, Backend::CopyOutResponse) => {
                    self.state = State::InCopy;
                    match self.tablespaces.get(self.next_archive) {
                        Some(ts) => {
                            self.next_archive += 1;
                            self.in_archive = true;
                            Some(BackupEvent::ArchiveStart(archive_for(ts.clone())))
                        }
                        None if self.manifest && !self.in_manifest => {
                            self.in_manifest = true;
                            None
                        }
                        None => {
                            return Err(self.conn.protocol(WHAT, "more archives than tablespaces"))
                        }
                    }
                }
                (State::BetweenCopies, Backend::RowDescription) => Some(self.end(true).await?),
                (State::InCopy, Backend::CopyData(payload)) => match self.dialect {
                    BaseBackupDialect::Keywords => {
                        let event = self.data(payload)?;
                        if let BackupEvent::ArchiveData(d) = &event {
                            self.received += d.len() as u64;
                            if self.last_progress.elapsed() >= PROGRESS_INTERVAL {
                                self.report_progress();
                            }
                        }
                        Some(event)
                    }
                    BaseBackupDialect::OptionList => self.copy_message(payload)?,
                },
                (State::InCopy, Backend::CopyDone) => {
                    let was_archive = std::mem::take(&mut self.in_archive);
                    match self.dialect {
                        BaseBackupDialect::Keywords => {
                            self.state = State::BetweenCopies;
                            if was_archive {
                                self.report_progress();
                            }
                        }
                        BaseBackupDialect::OptionList => {
                            if !was_archive {
                                return self.end(false).await.map(Some);
                            }
                            // The end result set follows; read it after this event.
                            self.state = State::BetweenCopies;
                        }
                    }
                    was_archive.then_some(BackupEvent::ArchiveEnd)
                }
                (_, other) => return Err(self.conn.unexpected(WHAT, &other)),
            };
            if let Some(e) = event {
                return Ok(Some(e));
            }
        }
    }

    /// 14: queues a progress report of the bytes received.
    fn report_progress(&mut self) {
        self.pending = Some(BackupEvent::Progress(self.received));
        self.last_progress = Instant::now();
    }

    /// A data chunk of the current archive or of the manifest.
    fn data(&self, chunk: Bytes) -> Result<BackupEvent, ProtoError> {
        if self.in_archive {
            Ok(BackupEvent::ArchiveData(chunk))
        } else if self.in_manifest {
            Ok(BackupEvent::ManifestData(chunk))
        } else {
            Err(self
                .conn
                .protocol(WHAT, "data outside an archive or manifest"))
        }
    }

    /// 15+: one typed message of the copy stream.
    fn copy_message(&mut self, mut payload: Bytes) -> Result<Option<BackupEvent>, ProtoError> {
        let Some(kind) = payload.first().copied() else {
            return Err(self.conn.protocol(WHAT, "empty copy-stream message"));
        };
        payload.advance(1);
        match kind {
            b'n' => {
                let mut fields = payload.split(|&b| b == 0);
                let name = fields
                    .next()
                    .map(|f| String::from_utf8_lossy(f).into_owned());
                let path = fields
                    .next()
                    .map(|f| String::from_utf8_lossy(f).into_owned());
                let (Some(name), Some(path)) = (name, path) else {
                    return Err(self.conn.protocol(WHAT, "malformed new-archive message"));
                };
                let tablespace = self
                    .tablespaces
                    .iter()
                    .find(|t| match &t.location {
                        Some(loc) => {
                            !path.is_empty() && loc.as_path() == std::path::Path::new(&path)
                        }
                        None => path.is_empty(),
                    })
                    .cloned()
                    .unwrap_or(BackupTablespace {
                        oid: None,
                        location: (!path.is_empty()).then(|| PathBuf::from(&path)),
                        size_kb: None,
                    });
                let archive = BackupArchive { name, tablespace };
                if std::mem::take(&mut self.in_archive) {
                    self.pending = Some(BackupEvent::ArchiveStart(archive));
                    return Ok(Some(BackupEvent::ArchiveEnd));
                }
                self.in_archive = true;
                Ok(Some(BackupEvent::ArchiveStart(archive)))
            }
            b'd' => self.data(payload).map(Some),
            b'p' => match be_u64(&payload, 0) {
                Some(done) => Ok(Some(BackupEvent::Progress(done))),
                None => Err(self.conn.protocol(WHAT, "truncated progress message")),
            },
            b'm' => {
                self.in_manifest = true;
                Ok(std::mem::take(&mut self.in_archive).then_some(BackupEvent::ArchiveEnd))
            }
            other => Err(self.conn.protocol(
                WHAT,
                &format!("unknown copy-stream message type {:?}", other as char),
            )),
        }
    }

    /// The end result set (end LSN, timeline), `CommandComplete`, `ReadyForQuery`.
    /// `described`: its row description was already read.
    async fn end(&mut self, described: bool) -> Result<BackupEvent, ProtoError> {
        let mut sets = ResultSets::default();
        if described {
            sets.push_set();
        }
        let sets = self.conn.read_results_into(WHAT, sets).await?;
        self.conn.in_copy = false;
        self.state = State::Done;
        let row = self.conn.one_row(&sets, WHAT)?;
        let end_lsn: Lsn = self.conn.parse_req(row, 0, WHAT)?;
        let timeline = TimelineId(self.conn.parse_req(row, 1, WHAT)?);
        tracing::info!(endpoint = %self.conn.endpoint(), %end_lsn, %timeline, "base backup complete");
        Ok(BackupEvent::End {
            start_lsn: self.start_lsn,
            end_lsn,
            timeline,
        })
    }
}

/// 14: archives are named as pg_basebackup names their files.
fn archive_for(tablespace: BackupTablespace) -> BackupArchive {
    let name = match tablespace.oid {
        Some(oid) => format!("{oid}.tar"),
        None => "base.tar".to_string(),
    };
    BackupArchive { name, tablespace }
}
