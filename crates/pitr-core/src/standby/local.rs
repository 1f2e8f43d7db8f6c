//! The server on the local data directory: its version, owner, programs, a session through
//! its socket, and the waits the standby commands need.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pitr_pg::TimelineId;
use pitr_proto::PgClient;

use super::StandbyError;
use crate::pgbin::find_pg_bin;
use crate::restore::plan::owner::{resolve_owner, user_by_uid};
use crate::restore::OsUser;

/// The major version in `pgdata/PG_VERSION`.
pub fn pgdata_major(pgdata: &Path) -> Result<u32, StandbyError> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| StandbyError::NotPgdata {
        pgdata: pgdata.to_path_buf(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    text.trim().parse().map_err(|_| StandbyError::NotPgdata {
        pgdata: pgdata.to_path_buf(),
        reason: format!("{} holds {:?}", path.display(), text.trim()),
    })
}

/// Who owns (or will own) the files of `pgdata`: as root its owner (never root, see
/// [`resolve_owner`]); otherwise `None` (pitr's own user), refused when `pgdata` exists and
/// belongs to someone else.
pub fn owner_for(pgdata: &Path, asked: Option<&str>) -> Result<Option<OsUser>, StandbyError> {
    if !pitr_os::is_root() {
        if let Ok(m) = std::fs::metadata(pgdata) {
            let me = pitr_os::effective_uid();
            if m.uid() != me {
                return Err(StandbyError::WrongUser {
                    path: pgdata.to_path_buf(),
                    owner: user_by_uid(m.uid(), None).name,
                    me: pitr_os::effective_user_name(),
                });
            }
        }
    }
    Ok(resolve_owner(pgdata, asked)?)
}

/// PostgreSQL's bin directory for `major` holding `programs`.
pub fn bindir(
    explicit: Option<&Path>,
    major: u32,
    programs: &[&str],
) -> Result<PathBuf, StandbyError> {
    Ok(find_pg_bin(explicit, Some(major), programs)?)
}

/// Runs a PostgreSQL program as `owner` (when root) in `cwd`, with C messages; its output
/// when it succeeds.
pub fn run_program(
    program: &Path,
    args: &[&std::ffi::OsStr],
    owner: Option<&OsUser>,
    cwd: &Path,
    hint: Option<String>,
) -> Result<String, StandbyError> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).env("LC_ALL", "C");
    crate::restore::start::as_owner(&mut cmd, owner);
    tracing::info!("running {} {:?}", program.display(), args);
    let out = cmd.output().map_err(StandbyError::io("run", program))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string();
    if !out.status.success() {
        return Err(StandbyError::Program {
            program: program.display().to_string(),
            status: out.status.code().unwrap_or(-1),
            output,
            hint,
        });
    }
    Ok(output)
}

/// A session with the server running on `pgdata`, through the socket and port in its
/// `postmaster.pid`, as `owner` (or the OS user running pitr).
pub async fn connect_local(
    pgdata: &Path,
    owner: Option<&OsUser>,
) -> Result<PgClient, StandbyError> {
    let pf = pitr_os::PidFile::read(pgdata).map_err(|_| StandbyError::NotRunning {
        pgdata: pgdata.to_path_buf(),
    })?;
    if !pf.is_alive() {
        return Err(StandbyError::NotRunning {
            pgdata: pgdata.to_path_buf(),
        });
    }
    let host = match pf.socket_dir {
        Some(d) => d.to_string_lossy().into_owned(),
        None => "localhost".to_string(),
    };
    let params = pitr_proto::ConnParams {
        host: Some(host),
        port: pf.port,
        user: owner.map(|u| u.name.clone()),
        dbname: Some("postgres".to_string()),
        ..Default::default()
    };
    Ok(pitr_proto::connect(&params).await?)
}

/// One text value of `sql` (NULL as `None`).
pub async fn query_one(
    client: &PgClient,
    what: &'static str,
    sql: &str,
) -> Result<Option<String>, StandbyError> {
    let rows = client.query_text(what, sql).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// The timeline the server writes (or replays) on now: the first 8 hex digits of the WAL file
/// name of its current insert position (of its replay position on a standby).
pub async fn current_timeline(client: &PgClient) -> Result<TimelineId, StandbyError> {
    let v = query_one(
        client,
        "current timeline",
        "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli::text FROM pg_stat_wal_receiver) \
         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
    )
    .await?
    .ok_or_else(|| StandbyError::Server("the server reports no timeline".into()))?;
    TimelineId::from_hex8(&v)
        .or_else(|| v.parse().ok().map(TimelineId))
        .ok_or_else(|| StandbyError::Server(format!("the server reports timeline {v:?}")))
}

/// Waits until the WAL receiver of the standby on `pgdata` streams
/// (`pg_stat_wal_receiver.status = 'streaming'`); returns the LSN it has received up to.
pub async fn wait_streaming(
    pgdata: &Path,
    owner: Option<&OsUser>,
    timeout: Duration,
    log: Option<&Path>,
) -> Result<Option<String>, StandbyError> {
    let started = Instant::now();
    let client = connect_local(pgdata, owner).await?;
    loop {
        let rows = client
            .query_text(
                "pg_stat_wal_receiver",
                "SELECT status, flushed_lsn::text FROM pg_stat_wal_receiver",
            )
            .await?;
        if let Some(row) = rows.first() {
            if row.first().and_then(|s| s.as_deref()) == Some("streaming") {
                return Ok(row.get(1).cloned().flatten());
            }
        }
        if started.elapsed() > timeout {
            return Err(StandbyError::Timeout {
                what: format!(
                    "the standby on {} to stream from its primary",
                    pgdata.display()
                ),
                secs: timeout.as_secs(),
                log: log.map(Path::to_path_buf),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Entries in `dir` (0 when it does not exist).
pub fn entries(dir: &Path) -> Result<usize, StandbyError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StandbyError::io("read", dir)(e)),
    }
}

/// Refuses when a server runs on `pgdata`.
pub fn ensure_stopped(pgdata: &Path) -> Result<(), StandbyError> {
    match pitr_os::running_postmaster(pgdata) {
        Some(pid) => Err(StandbyError::Running {
            pgdata: pgdata.to_path_buf(),
            pid,
        }),
        None => Ok(()),
    }
}
