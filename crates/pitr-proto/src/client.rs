//! A SQL session with a PostgreSQL 14–18 server and the queries pitr's engines run.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use pitr_pg::{Lsn, PgMajor, TimelineId, WalFileName, WalLevel, WalSegSize};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::{describe, query_error, Endpoints, ServerMessage};
use crate::params::{pgpass_lookup, ConnEnv, ConnParams, Endpoint, ResolvedConn};
use crate::sql_tls::MakeSqlTls;
use crate::ProtoError;

/// An open SQL session with a supported server (14–18), its version already known.
#[derive(Debug)]
pub struct PgClient {
    client: tokio_postgres::Client,
    endpoint: Endpoint,
    user: String,
    major: PgMajor,
    version_num: u32,
}

/// Connects with `params`, the process's `PG*` environment and the password file.
pub async fn connect(params: &ConnParams) -> Result<PgClient, ProtoError> {
    connect_with_env(params, &ConnEnv::from_process()).await
}

/// Connects with `params` resolved against `env` (see [`ConnParams::resolve`]).
pub async fn connect_with_env(params: &ConnParams, env: &ConnEnv) -> Result<PgClient, ProtoError> {
    connect_resolved(&params.resolve(env)?).await
}

/// What one connection attempt's failure means for the next endpoint.
enum Failure {
    /// Nothing listens there: try the next endpoint.
    Unreachable(String),
    /// The server answered: stop and report.
    Fatal(ProtoError),
}

fn classify(e: &tokio_postgres::Error, endpoint: &Endpoint, r: &ResolvedConn) -> Failure {
    if let Some(db) = e.as_db_error() {
        let server = ServerMessage::from_db(db);
        return Failure::Fatal(match server.code.as_str() {
            // invalid_password, invalid_authorization_specification (no pg_hba entry, no role)
            "28P01" | "28000" => ProtoError::AuthFailed {
                endpoint: endpoint.clone(),
                user: r.user.clone(),
                server,
            },
            // invalid_catalog_name
            "3D000" => ProtoError::NoDatabase {
                endpoint: endpoint.clone(),
                dbname: r.dbname.clone(),
            },
            _ => ProtoError::Refused {
                endpoint: endpoint.clone(),
                server,
            },
        });
    }
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        causes.push(c.to_string());
        src = c.source();
    }
    if causes.iter().any(|c| c == "password missing") {
        return Failure::Fatal(ProtoError::PasswordRequired {
            endpoint: endpoint.clone(),
            user: r.user.clone(),
        });
    }
    let text = e.to_string();
    if text.starts_with("error performing TLS handshake") {
        return Failure::Fatal(ProtoError::Tls {
            endpoint: endpoint.clone(),
            detail: format!(
                "{}; hint: check sslmode (PGSSLMODE) and that PGSSLROOTCERT names the CA that signed the server's certificate",
                causes.join(": ")
            ),
        });
    }
    if text.starts_with("error connecting to server") || text.starts_with("timeout") {
        return Failure::Unreachable(causes.first().cloned().unwrap_or(text));
    }
    Failure::Fatal(ProtoError::Connection {
        endpoint: endpoint.clone(),
        what: "connect",
        detail: describe(e),
    })
}

/// Connects to the first endpoint of `r` that accepts connections (as libpq does with the
/// default socket directories), using the password file when no password was given.
pub async fn connect_resolved(r: &ResolvedConn) -> Result<PgClient, ProtoError> {
    let pgpass = crate::repl::pgpass_contents(r);
    let mut last = String::from("no address to try");
    for endpoint in &r.endpoints {
        let password = r.password.clone().or_else(|| {
            pgpass
                .as_deref()
                .and_then(|c| pgpass_lookup(c, endpoint, &r.dbname, &r.user))
        });
        let config = r.config(endpoint, password.as_deref());
        tracing::debug!(%endpoint, user = %r.user, dbname = %r.dbname, "connecting");
        let attempt = config.connect(MakeSqlTls::new(r.tls.clone(), endpoint.clone()));
        let result = match r.connect_timeout {
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(res) => res,
                Err(_) => {
                    last = format!("timed out after {} s", t.as_secs());
                    continue;
                }
            },
            None => attempt.await,
        };
        match result {
            Ok((client, connection)) => {
                let ep = endpoint.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(endpoint = %ep, "connection ended: {}", describe(&e));
                    }
                });
                return PgClient::init(client, endpoint.clone(), r.user.clone()).await;
            }
            Err(e) => match classify(&e, endpoint, r) {
                Failure::Unreachable(detail) => {
                    tracing::debug!(%endpoint, "unreachable: {detail}");
                    last = detail;
                }
                Failure::Fatal(err) => return Err(err),
            },
        }
    }
    Err(ProtoError::Unreachable {
        targets: Endpoints(r.endpoints.clone()),
        detail: last,
    })
}

/// What pitr needs to know about a server before archiving or backing it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Major version.
    pub major: PgMajor,
    /// `server_version_num`, e.g. 170010.
    pub version_num: u32,
    /// The cluster's system identifier (`pg_control_system()`).
    pub system_id: u64,
    /// `data_directory`.
    pub data_directory: PathBuf,
    /// `wal_segment_size`.
    pub wal_segment_size: WalSegSize,
    /// Timeline of the last checkpoint (`pg_control_checkpoint()`).
    pub timeline: TimelineId,
    /// `data_checksums`.
    pub data_checksums: bool,
    /// `pg_is_in_recovery()`: a standby or a server in recovery.
    pub in_recovery: bool,
    /// `archive_mode`.
    pub archive_mode: ArchiveMode,
    /// `archive_command` (empty when unset).
    pub archive_command: String,
    /// `archive_library` (PG15+; `None` before).
    pub archive_library: Option<String>,
    /// `wal_level`.
    pub wal_level: WalLevel,
    /// `block_size`.
    pub block_size: u32,
}

/// The `archive_mode` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveMode {
    /// `off`.
    Off,
    /// `on`: the primary archives.
    On,
    /// `always`: standbys archive too.
    Always,
}

/// A tablespace outside the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// OID: the name of its link under `pg_tblspc`.
    pub oid: u32,
    /// Name.
    pub name: String,
    /// Directory (`pg_tablespace_location`).
    pub location: PathBuf,
}

/// `pg_stat_archiver`: how the archiver is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverStatus {
    /// Files archived successfully.
    pub archived_count: u64,
    /// The last file archived successfully.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_time: Option<SystemTime>,
    /// Failed attempts.
    pub failed_count: u64,
    /// The last file that failed.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<SystemTime>,
    /// When these counters were last reset.
    pub stats_reset: Option<SystemTime>,
}

fn epoch_time(secs: f64) -> Option<SystemTime> {
    if secs >= 0.0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::try_from_secs_f64(-secs).ok()?)
    }
}

impl PgClient {
    async fn init(
        client: tokio_postgres::Client,
        endpoint: Endpoint,
        user: String,
    ) -> Result<PgClient, ProtoError> {
        let what = "server_version_num";
        let row = client
            .query_one("select current_setting('server_version_num')", &[])
            .await
            .map_err(|e| query_error(&endpoint, what, e))?;
        let value: String = row
            .try_get(0)
            .map_err(|e| query_error(&endpoint, what, e))?;
        let unsupported = || ProtoError::UnsupportedServer {
            endpoint: endpoint.clone(),
            version: value.clone(),
        };
        let version_num: u32 = value.trim().parse().map_err(|_| unsupported())?;
        let major = PgMajor::from_server_version(&value).map_err(|_| unsupported())?;
        Ok(PgClient {
            client,
            endpoint,
            user,
            major,
            version_num,
        })
    }

    /// Runs `sql`, whose columns must all be `text`, and returns every row as text values
    /// (`None` for NULL); `what` names the query in errors.
    pub async fn query_text(
        &self,
        what: &'static str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ProtoError> {
        let rows = self
            .client
            .query(sql, &[])
            .await
            .map_err(|e| query_error(&self.endpoint, what, e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| self.opt(row, i, what))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect()
    }

    /// The server this session is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The database user of this session.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's major version.
    pub fn major(&self) -> PgMajor {
        self.major
    }

    /// `server_version_num`.
    pub fn version_num(&self) -> u32 {
        self.version_num
    }

    /// The underlying tokio-postgres client, for queries not wrapped here.
    pub fn inner(&self) -> &tokio_postgres::Client {
        &self.client
    }

    async fn row(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProtoError> {
        self.client
            .query_one(sql, params)
            .await
            .map_err(|e| query_error(&self.endpoint, what, e))
    }

    /// Column `idx` of `row` as text (every query here selects text).
    fn opt(&self, row: &Row, idx: usize, what: &'static str) -> Result<Option<String>, ProtoError> {
        row.try_get::<_, Option<String>>(idx)
            .map_err(|e| query_error(&self.endpoint, what, e))
    }

    fn req(&self, row: &Row, idx: usize, what: &'static str) -> Result<String, ProtoError> {
        self.opt(row, idx, what)?
            .ok_or_else(|| self.unexpected(what, "NULL"))
    }

    fn unexpected(&self, what: &'static str, value: &str) -> ProtoError {
        ProtoError::UnexpectedResult {
            endpoint: self.endpoint.clone(),
            what,
            value: value.to_string(),
        }
    }

    fn parse<T: FromStr>(&self, what: &'static str, value: &str) -> Result<T, ProtoError> {
        value
            .trim()
            .parse()
            .map_err(|_| self.unexpected(what, value))
    }

    /// Version, identity, sizes and archiving settings of the server. Reading
    /// `data_directory` and `archive_command` needs superuser or `pg_read_all_settings`.
    pub async fn server_info(&self) -> Result<ServerInfo, ProtoError> {
        let row = self
            .row(
                "server_info",
                "select current_setting('server_version_num'),
                        (select system_identifier::text from pg_control_system()),
                        current_setting('data_directory'),
                        (select setting from pg_settings where name = 'wal_segment_size'),
                        (select timeline_id::text from pg_control_checkpoint()),
                        current_setting('data_checksums'),
                        pg_is_in_recovery()::text,
                        current_setting('archive_mode'),
                        current_setting('archive_command'),
                        current_setting('wal_level'),
                        current_setting('block_size'),
                        current_setting('archive_library', true)",
                &[],
            )
            .await?;
        let version_num: u32 = self.parse(
            "server_version_num",
            &self.req(&row, 0, "server_version_num")?,
        )?;
        let system_id = self.req(&row, 1, "system_identifier")?;
        // pg_control_system() shows the unsigned identifier as a signed bigint.
        let system_id = self.parse::<i64>("system_identifier", &system_id)? as u64;
        let seg = self.req(&row, 3, "wal_segment_size")?;
        let wal_segment_size = WalSegSize::new(self.parse("wal_segment_size", &seg)?)
            .map_err(|_| self.unexpected("wal_segment_size", &seg))?;
        let tli = self.req(&row, 4, "timeline_id")?;
        let timeline = match self.parse::<u32>("timeline_id", &tli)? {
            0 => return Err(self.unexpected("timeline_id", &tli)),
            t => TimelineId(t),
        };
        let on_off = |v: String, what: &'static str| match v.as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err(self.unexpected(what, &v)),
        };
        let archive_mode = match self.req(&row, 7, "archive_mode")?.as_str() {
            "off" => ArchiveMode::Off,
            "on" => ArchiveMode::On,
            "always" => ArchiveMode::Always,
            other => return Err(self.unexpected("archive_mode", other)),
        };
        let level = self.req(&row, 9, "wal_level")?;
        let wal_level =
            WalLevel::from_setting(&level).ok_or_else(|| self.unexpected("wal_level", &level))?;
        Ok(ServerInfo {
            major: self.major,
            version_num,
            system_id,
            data_directory: PathBuf::from(self.req(&row, 2, "data_directory")?),
            wal_segment_size,
            timeline,
            data_checksums: on_off(self.req(&row, 5, "data_checksums")?, "data_checksums")?,
            in_recovery: on_off(self.req(&row, 6, "pg_is_in_recovery")?, "pg_is_in_recovery")?,
            archive_mode,
            archive_command: self.req(&row, 8, "archive_command")?,
            archive_library: self.opt(&row, 11, "archive_library")?,
            wal_level,
            block_size: self.parse("block_size", &self.req(&row, 10, "block_size")?)?,
        })
    }

    /// `pg_switch_wal()`: closes the current segment so it can be archived. Returns the
    /// end of the switch and the name of the segment just closed (on an idle server nothing
    /// is switched and that is the last segment closed earlier).
    pub async fn switch_wal(&self) -> Result<(Lsn, WalFileName), ProtoError> {
        let what = "pg_switch_wal";
        let row = self
            .row(
                what,
                "select lsn::text, pg_walfile_name(lsn) from pg_switch_wal() as lsn",
                &[],
            )
            .await?;
        let lsn = self.parse(what, &self.req(&row, 0, what)?)?;
        let name = self.req(&row, 1, "pg_walfile_name")?;
        let file =
            WalFileName::parse(&name).map_err(|_| self.unexpected("pg_walfile_name", &name))?;
        Ok((lsn, file))
    }

    /// `pg_create_restore_point(name)`: a named recovery target.
    pub async fn create_restore_point(&self, name: &str) -> Result<Lsn, ProtoError> {
        let what = "pg_create_restore_point";
        let row = self
            .row(what, "select pg_create_restore_point($1)::text", &[&name])
            .await?;
        self.parse(what, &self.req(&row, 0, what)?)
    }

    /// `pg_logical_emit_message(false, 'pitr', message)`: a WAL record that touches no table
    /// (so that a following WAL switch has something to close). Returns its LSN.
    pub async fn emit_wal_message(&self, message: &str) -> Result<Lsn, ProtoError> {
        let what = "pg_logical_emit_message";
        let row = self
            .row(
                what,
                "select pg_logical_emit_message(false, 'pitr', $1::text)::text",
                &[&message],
            )
            .await?;
        self.parse(what, &self.req(&row, 0, what)?)
    }

    /// `pg_current_wal_lsn()`: the current write position (primary only).
    pub async fn current_wal_lsn(&self) -> Result<Lsn, ProtoError> {
        let what = "pg_current_wal_lsn";
        let row = self
            .row(what, "select pg_current_wal_lsn()::text", &[])
            .await?;
        self.parse(what, &self.req(&row, 0, what)?)
    }

    /// Tablespaces outside the data directory (all but `pg_default` and `pg_global`).
    pub async fn tablespaces(&self) -> Result<Vec<Tablespace>, ProtoError> {
        let what = "pg_tablespace";
        let rows = self
            .client
            .query(
                "select oid::text, spcname::text, pg_tablespace_location(oid)
                   from pg_tablespace
                  where pg_tablespace_location(oid) <> ''
                  order by oid",
                &[],
            )
            .await
            .map_err(|e| query_error(&self.endpoint, what, e))?;
        rows.iter()
            .map(|row| {
                Ok(Tablespace {
                    oid: self.parse(what, &self.req(row, 0, what)?)?,
                    name: self.req(row, 1, what)?,
                    location: PathBuf::from(self.req(row, 2, what)?),
                })
            })
            .collect()
    }

    /// `pg_stat_archiver`.
    pub async fn archiver_status(&self) -> Result<ArchiverStatus, ProtoError> {
        let what = "pg_stat_archiver";
        let row = self
            .row(
                what,
                "select archived_count::text, last_archived_wal,
                        extract(epoch from last_archived_time)::text,
                        failed_count::text, last_failed_wal,
                        extract(epoch from last_failed_time)::text,
                        extract(epoch from stats_reset)::text
                   from pg_stat_archiver",
                &[],
            )
            .await?;
        let time = |idx: usize| -> Result<Option<SystemTime>, ProtoError> {
            match self.opt(&row, idx, what)? {
                None => Ok(None),
                Some(v) => epoch_time(self.parse(what, &v)?)
                    .map(Some)
                    .ok_or_else(|| self.unexpected(what, &v)),
            }
        };
        Ok(ArchiverStatus {
            archived_count: self.parse(what, &self.req(&row, 0, what)?)?,
            last_archived_wal: self.opt(&row, 1, what)?,
            last_archived_time: time(2)?,
            failed_count: self.parse(what, &self.req(&row, 3, what)?)?,
            last_failed_wal: self.opt(&row, 4, what)?,
            last_failed_time: time(5)?,
            stats_reset: time(6)?,
        })
    }
}

/// A non-exclusive online backup in progress on one session: PostgreSQL ties the backup to
/// the connection, so start and stop go through the same [`PgClient`], which must stay open
/// in between (if it closes, the server aborts the backup).
#[derive(Debug)]
pub struct BackupSession<'a> {
    client: &'a PgClient,
    label: String,
    start_lsn: Lsn,
    timeline: TimelineId,
    stopped: bool,
}

/// What `pg_backup_stop` returns: the files a restore must write into the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStopInfo {
    /// End of the backup: recovery must replay at least to here.
    pub stop_lsn: Lsn,
    /// Contents of `backup_label` (parse with [`pitr_pg::BackupLabel::parse`]).
    pub backup_label: String,
    /// Contents of `tablespace_map`, when the cluster has tablespaces.
    pub tablespace_map: Option<String>,
}

impl<'a> BackupSession<'a> {
    /// Starts a backup (`pg_backup_start(label, fast)` on 15+, `pg_start_backup(label, fast,
    /// false)` on 14); `fast` requests an immediate checkpoint instead of a spread one.
    pub async fn start(
        client: &'a PgClient,
        label: &str,
        fast: bool,
    ) -> Result<BackupSession<'a>, ProtoError> {
        let (what, sql) = if client.major.number() >= 15 {
            ("pg_backup_start", "select pg_backup_start($1, $2)::text")
        } else {
            (
                "pg_start_backup",
                "select pg_start_backup($1, $2, false)::text",
            )
        };
        let row = client.row(what, sql, &[&label, &fast]).await?;
        let start_lsn = client.parse(what, &client.req(&row, 0, what)?)?;
        // The backup's checkpoint (or restartpoint on a standby) is now the last one.
        let what = "pg_control_checkpoint";
        let row = client
            .row(
                what,
                "select timeline_id::text from pg_control_checkpoint()",
                &[],
            )
            .await?;
        let tli = client.req(&row, 0, what)?;
        let timeline = match client.parse::<u32>(what, &tli)? {
            0 => return Err(client.unexpected(what, &tli)),
            t => TimelineId(t),
        };
        tracing::info!(endpoint = %client.endpoint, label, %start_lsn, %timeline, "backup started");
        Ok(BackupSession {
            client,
            label: label.to_string(),
            start_lsn,
            timeline,
            stopped: false,
        })
    }

    /// Where the backup starts: the REDO point of its checkpoint.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The timeline the backup started on.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The label given at start.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The session the backup runs on.
    pub fn client(&self) -> &'a PgClient {
        self.client
    }

    /// Ends the backup (`pg_backup_stop(wait)` on 15+, `pg_stop_backup(false, wait)` on 14).
    /// With `wait_for_archive`, returns only once the WAL the backup needs is archived — and
    /// waits forever if archiving is broken, so callers may put a timeout around it.
    pub async fn stop(mut self, wait_for_archive: bool) -> Result<BackupStopInfo, ProtoError> {
        let client = self.client;
        let (what, sql) = if client.major.number() >= 15 {
            (
                "pg_backup_stop",
                "select lsn::text, labelfile, spcmapfile from pg_backup_stop($1)",
            )
        } else {
            (
                "pg_stop_backup",
                "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, $1)",
            )
        };
        let row = client.row(what, sql, &[&wait_for_archive]).await?;
        self.stopped = true;
        let stop_lsn = client.parse(what, &client.req(&row, 0, what)?)?;
        let info = BackupStopInfo {
            stop_lsn,
            backup_label: client.req(&row, 1, what)?,
            tablespace_map: client.opt(&row, 2, what)?.filter(|m| !m.is_empty()),
        };
        tracing::info!(endpoint = %client.endpoint, label = %self.label, %stop_lsn, "backup stopped");
        Ok(info)
    }
}

impl Drop for BackupSession<'_> {
    fn drop(&mut self) {
        if !self.stopped {
            tracing::warn!(
                endpoint = %self.client.endpoint,
                label = %self.label,
                "backup dropped without stop; PostgreSQL aborts it when the session closes"
            );
        }
    }
}
