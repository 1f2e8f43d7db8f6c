//! `pitr restore --start`: start the restored server as the data directory's owner, follow its
//! log until recovery ends (paused, promoted or shut down at the target, or failed), and report
//! where it stopped.
//!
//! The server is started with `logging_collector=off`, `log_destination=stderr` and
//! `lc_messages=C` for this run only (as `pg_ctl -o` options), so every message lands, in
//! English, in the log file given to `pg_ctl -l`, whatever the restored configuration says.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

mod log;

use log::{follow, tail};
pub use log::{hint_for, LogState};

use super::replay::{ReplayProgress, ReplayTracker};
use super::OsUser;
use crate::pgbin::{find_pg_bin, PgBinError};

/// How to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The restored data directory.
    pub pgdata: PathBuf,
    /// PostgreSQL major version of the backup.
    pub pg_major: u32,
    /// Directory with `pg_ctl` and `postgres` (`--pg-bin`); found automatically when `None`.
    pub pg_bin: Option<PathBuf>,
    /// OS user to run the server as (when running as root).
    pub owner: Option<OsUser>,
    /// Port to listen on instead of the configured one.
    pub port: Option<u16>,
    /// Server log (`pg_ctl -l`); default `<pgdata>/log/pitr-start.log`.
    pub log_file: Option<PathBuf>,
    /// Give up waiting after this long (the server keeps running).
    pub timeout: Option<Duration>,
    /// A standby never ends recovery: wait until it accepts read-only connections.
    pub standby: bool,
}

/// How recovery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryOutcome {
    /// Paused at the target, read-only (`recovery_target_action = pause`).
    Paused,
    /// Promoted: open for writes on a new timeline.
    Promoted,
    /// Shut down at the target (`shutdown`, or `pause` without hot_standby).
    ShutDown,
    /// A standby that reached consistency and keeps replaying.
    Standby,
}

/// What `--start` saw.
#[derive(Debug, Clone, Serialize)]
pub struct StartReport {
    /// Binaries used.
    pub bindir: PathBuf,
    /// Server log.
    pub log_file: PathBuf,
    /// How recovery ended.
    pub outcome: RecoveryOutcome,
    /// Where it stopped, as the server said it ("before commit of transaction 743, time …").
    pub stopped: Option<String>,
    /// LSN of the stop: from the stop message, `redo done at`, or (paused) the last replayed.
    pub stop_lsn: Option<String>,
    /// Time of the stop record, when known.
    pub stop_time: Option<String>,
    /// Transaction of the stop record, when known.
    pub stop_xid: Option<u64>,
    /// Where redo ended (`redo done at`).
    pub redo_done_at: Option<String>,
    /// Last transaction replayed (`last completed transaction was at log time`).
    pub last_transaction_time: Option<String>,
    /// Where the backup became consistent.
    pub consistent_at: Option<String>,
    /// Timeline the server is on now (new timeline after promotion).
    pub timeline: Option<u32>,
    /// Whether the server is still running.
    pub server_running: bool,
    /// What to do next.
    pub next_step: Option<String>,
    /// Seconds from start to the end of recovery.
    pub seconds: f64,
}

/// `--start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No PostgreSQL binaries of the right version.
    #[error("cannot find PostgreSQL {major} binaries (pg_ctl, postgres); looked in: {tried}\nhint: pass --pg-bin DIR (the directory holding pg_ctl), or put that version's pg_config on PATH")]
    NoBinaries {
        /// Major wanted.
        major: u32,
        /// Places tried.
        tried: String,
    },
    /// `--pg-bin` holds another version.
    #[error("{bindir:?} holds PostgreSQL {found}, but the backup is PostgreSQL {expected}\nhint: pass --pg-bin with PostgreSQL {expected}'s bin directory")]
    WrongVersion {
        /// Directory.
        bindir: PathBuf,
        /// Version found.
        found: String,
        /// Major expected.
        expected: u32,
    },
    /// A program could not be run.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// Program.
        program: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// Something already listens on the port the server would use.
    #[error("port {port} is already in use{}, so PostgreSQL cannot start on it\nhint: pass -p PORT with a free port (-p sets the port of the server --start starts); a restore already done can be run again with -p and --delta, which reuses the restored files", if *.given { " (given with -p)" } else { " (the port in the restored configuration)" })]
    PortInUse {
        /// The port.
        port: u16,
        /// Whether it was given with `-p`.
        given: bool,
    },
    /// `pg_ctl start` failed.
    #[error("pg_ctl could not start the server on {pgdata:?}:\n{output}\nhint: see the server log {log:?}")]
    PgCtl {
        /// Data directory.
        pgdata: PathBuf,
        /// pg_ctl's output.
        output: String,
        /// Server log.
        log: PathBuf,
    },
    /// Recovery failed (FATAL/PANIC).
    #[error("recovery failed: {message}\n--- server log {log:?} ---\n{lines}\nhint: {hint}")]
    RecoveryFailed {
        /// The main message.
        message: String,
        /// What to do about it.
        hint: String,
        /// Relevant log lines.
        lines: String,
        /// Server log.
        log: PathBuf,
    },
    /// The server stopped without saying why.
    #[error("the server stopped before recovery ended\n--- server log {log:?} (tail) ---\n{tail}")]
    ServerExited {
        /// Log tail.
        tail: String,
        /// Server log.
        log: PathBuf,
    },
    /// Waiting timed out; the server keeps running.
    #[error("recovery had not ended after {secs} s; the server keeps running (pg_ctl -D {pgdata:?} status)\n--- server log {log:?} (tail) ---\n{tail}")]
    Timeout {
        /// Seconds waited.
        secs: u64,
        /// Data directory.
        pgdata: PathBuf,
        /// Log tail.
        tail: String,
        /// Server log.
        log: PathBuf,
    },
    /// Log or data directory I/O.
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
}

impl From<PgBinError> for StartError {
    fn from(e: PgBinError) -> StartError {
        match e {
            PgBinError::NotFound { major, tried, .. } => StartError::NoBinaries {
                major: major.unwrap_or_default(),
                tried,
            },
            PgBinError::WrongVersion {
                bindir,
                found,
                expected,
            } => StartError::WrongVersion {
                bindir,
                found,
                expected,
            },
        }
    }
}

/// The postmaster's pid when it runs on `pgdata`.
fn postmaster_alive(pgdata: &Path) -> bool {
    pitr_os::running_postmaster(pgdata).is_some()
}

pub(crate) fn as_owner<'a>(cmd: &'a mut Command, owner: Option<&OsUser>) -> &'a mut Command {
    if let Some(u) = owner {
        cmd.uid(u.uid)
            .gid(u.gid)
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    cmd
}

/// Starts the server on a restored data directory and waits until recovery ends.
pub async fn start_and_wait(opts: &StartOptions) -> Result<StartReport, StartError> {
    start_and_wait_reporting(opts, None).await
}

/// [`start_and_wait`], reporting replay as it goes (see [`ReplayProgress`]).
pub async fn start_and_wait_reporting(
    opts: &StartOptions,
    replay: Option<ReplayProgress>,
) -> Result<StartReport, StartError> {
    let bindir = find_pg_bin(
        opts.pg_bin.as_deref(),
        Some(opts.pg_major),
        &["pg_ctl", "postgres"],
    )?;
    let log = opts
        .log_file
        .clone()
        .unwrap_or_else(|| opts.pgdata.join("log").join("pitr-start.log"));
    prepare_log_dir(&log, opts.owner.as_ref())?;
    // Only what this start logs: the log may hold earlier runs.
    let mut offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    super::port::ensure_free(&super::port::listen_settings(&opts.pgdata, opts.port))?;
    pg_ctl_start(&bindir, opts, &log)?;
    let mut replay = replay.and_then(|r| ReplayTracker::new(r, &opts.pgdata));
    let (outcome, state) =
        wait_for_recovery(opts, &log, &mut offset, started, replay.as_mut()).await?;
    if let Some(r) = &replay {
        r.finish();
    }
    Ok(report(bindir, log, opts, outcome, state, started).await)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StartError {
    let path = path.to_path_buf();
    move |source| StartError::Io { op, path, source }
}

/// Creates the log's directory (mode 0700, given to the owner) when it does not exist.
fn prepare_log_dir(log: &Path, owner: Option<&OsUser>) -> Result<(), StartError> {
    let Some(dir) = log.parent() else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io_err("set the mode of", dir))?;
    if let Some(u) = owner {
        std::os::unix::fs::lchown(dir, Some(u.uid), Some(u.gid)).map_err(io_err("chown", dir))?;
    }
    Ok(())
}

/// `pg_ctl start` as the owner, with the log settings this run needs (see the module doc).
fn pg_ctl_start(bindir: &Path, opts: &StartOptions, log: &Path) -> Result<(), StartError> {
    // `<%b>`: the backend type, so that a client's or the WAL receiver's FATAL is told apart
    // from recovery's own (see `recovery_process`).
    let mut server_opts = String::from(
        "-c logging_collector=off -c log_destination=stderr -c lc_messages=C -c log_line_prefix='%m [%p] <%b> '",
    );
    if let Some(p) = opts.port {
        server_opts.push_str(&format!(" -p {p}"));
    }
    let pg_ctl = bindir.join("pg_ctl");
    let mut cmd = Command::new(&pg_ctl);
    cmd.arg("-D")
        .arg(&opts.pgdata)
        .arg("-l")
        .arg(log)
        .arg("-o")
        .arg(&server_opts)
        .args(["-W", "start"])
        .current_dir(&opts.pgdata)
        .env("LC_ALL", "C");
    as_owner(&mut cmd, opts.owner.as_ref());
    let out = cmd.output().map_err(|source| StartError::Spawn {
        program: pg_ctl.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(StartError::PgCtl {
            pgdata: opts.pgdata.clone(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
            log: log.to_path_buf(),
        });
    }
    Ok(())
}

/// Follows the log until recovery ends (the outcome, with what the log said) or fails.
async fn wait_for_recovery(
    opts: &StartOptions,
    log: &Path,
    offset: &mut u64,
    started: Instant,
    mut replay: Option<&mut ReplayTracker>,
) -> Result<(RecoveryOutcome, LogState), StartError> {
    let failed = |state: &LogState, fatal: &str| StartError::RecoveryFailed {
        hint: hint_for(fatal),
        message: fatal.to_string(),
        lines: state.relevant.join("\n"),
        log: log.to_path_buf(),
    };
    let mut state = LogState::default();
    let mut seen_running = false;
    loop {
        follow(log, offset, &mut state).map_err(io_err("read", log))?;
        if let Some(r) = replay.as_deref_mut() {
            r.update(state.last_restored.as_deref(), state.restored_segments);
        }
        let running = postmaster_alive(&opts.pgdata);
        seen_running |= running;
        if let Some(fatal) = state.fatal.clone() {
            // Give the postmaster a moment to log the rest (startup process exit, shutdown).
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = follow(log, offset, &mut state);
            return Err(failed(&state, &fatal));
        }
        if let Some(outcome) = state.outcome(running, opts.standby) {
            return Ok((outcome, state));
        }
        if !running && (seen_running || started.elapsed() > Duration::from_secs(30)) {
            // Let a late FATAL line arrive before deciding.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = follow(log, offset, &mut state);
            if let Some(fatal) = &state.fatal {
                return Err(failed(&state, fatal));
            }
            if state.outcome(false, opts.standby).is_none() {
                return Err(StartError::ServerExited {
                    tail: tail(log, 30),
                    log: log.to_path_buf(),
                });
            }
            continue;
        }
        if let Some(limit) = opts.timeout {
            if started.elapsed() > limit {
                return Err(StartError::Timeout {
                    secs: limit.as_secs(),
                    pgdata: opts.pgdata.clone(),
                    tail: tail(log, 30),
                    log: log.to_path_buf(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The report once recovery ended: what the log said, completed by asking a paused server
/// where replay is (that is logged only when recovery ends).
async fn report(
    bindir: PathBuf,
    log: PathBuf,
    opts: &StartOptions,
    outcome: RecoveryOutcome,
    mut state: LogState,
    started: Instant,
) -> StartReport {
    let still = postmaster_alive(&opts.pgdata);
    let mut replayed_to = None;
    if still && (state.last_transaction_time.is_none() || state.redo_done_at.is_none()) {
        match replay_position(&opts.pgdata, opts.owner.as_ref()).await {
            Ok((lsn, time)) => {
                replayed_to = lsn;
                if state.last_transaction_time.is_none() {
                    state.last_transaction_time = time;
                }
            }
            Err(e) => tracing::warn!("cannot ask the restored server where replay is: {e}"),
        }
    }
    let next_step = match outcome {
        RecoveryOutcome::Paused => Some(
            "inspect the data (read-only), then SELECT pg_wal_replay_resume(); to end recovery and open for writes (or SELECT pg_promote();). To go further instead, stop the server, change the target in postgresql.auto.conf and start it again".to_string(),
        ),
        RecoveryOutcome::ShutDown => Some(format!(
            "the server stopped at the target; to open it for writes set recovery_target_action = 'promote' in postgresql.auto.conf and start it: pg_ctl -D {} start",
            opts.pgdata.display()
        )),
        RecoveryOutcome::Promoted => None,
        RecoveryOutcome::Standby => None,
    };
    StartReport {
        bindir,
        log_file: log,
        outcome,
        stopped: state.stopping.clone(),
        stop_lsn: state
            .stop_lsn
            .clone()
            .or_else(|| state.redo_done_at.clone())
            .or(replayed_to),
        stop_time: state.stop_time.clone(),
        stop_xid: state.stop_xid,
        redo_done_at: state.redo_done_at.clone(),
        last_transaction_time: state.last_transaction_time.clone(),
        consistent_at: state.consistent_at.clone(),
        timeline: state.new_timeline.or(state.replay_timeline),
        server_running: still,
        next_step,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// `pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()` of the server running on
/// `pgdata`, reached through the socket and port in its `postmaster.pid`.
async fn replay_position(
    pgdata: &Path,
    owner: Option<&OsUser>,
) -> Result<(Option<String>, Option<String>), String> {
    let pid_file = pgdata.join("postmaster.pid");
    let pf = pitr_os::PidFile::read(pgdata).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    let socket_dir = pf
        .socket_dir
        .ok_or_else(|| format!("{} names no Unix socket directory", pid_file.display()))?;
    let params = pitr_proto::ConnParams {
        host: Some(socket_dir.to_string_lossy().into_owned()),
        port: pf.port,
        user: owner.map(|u| u.name.clone()),
        dbname: Some("postgres".to_string()),
        ..Default::default()
    };
    let client = pitr_proto::connect(&params)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .inner()
        .query_one(
            "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let lsn: Option<String> = row.try_get(0).map_err(|e| e.to_string())?;
    let time: Option<String> = row.try_get(1).map_err(|e| e.to_string())?;
    Ok((lsn, time))
}
