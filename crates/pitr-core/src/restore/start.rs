//! `pitr restore --start`: start the restored server as the data directory's owner, follow its
//! log until recovery ends (paused, promoted or shut down at the target, or failed), and report
//! where it stopped.
//!
//! The server is started with `logging_collector=off`, `log_destination=stderr` and
//! `lc_messages=C` for this run only (as `pg_ctl -o` options), so every message lands, in
//! English, in the log file given to `pg_ctl -l`, whatever the restored configuration says.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

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

/// What to do about a FATAL message of the startup process.
pub fn hint_for(fatal: &str) -> String {
    if fatal.contains("recovery ended before configured recovery target was reached") {
        "no record matching the target was found on the timeline path recovery followed: the target may be after the end of the archived WAL, or on another timeline (see --target-timeline, `pitr info`); restore again (--force or --delta) with another target".to_string()
    } else if fatal.contains("before consistent recovery point") {
        "the target is before the restored backup became consistent: choose a later target, or an older backup with --backup".to_string()
    } else if fatal.contains("is not a child of this server's history")
        || fatal.contains("timeline")
    {
        "the backup is not on the requested timeline's history: pass --target-timeline current, or the timeline the backup can reach (`pitr info`)".to_string()
    } else if fatal.contains("checkpoint record") || fatal.contains("WAL") {
        "WAL the backup needs could not be read from the repository: run `pitr verify` and check restore_command in postgresql.auto.conf".to_string()
    } else {
        "read the server log above; after fixing the cause, restore again with --force or --delta"
            .to_string()
    }
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

/// What the server log says about recovery so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// `recovery stopping …` (the text after "recovery stopping ").
    pub stopping: Option<String>,
    /// LSN from the stop message or `redo done at`.
    pub stop_lsn: Option<String>,
    /// Time from the stop message.
    pub stop_time: Option<String>,
    /// Transaction from the stop message.
    pub stop_xid: Option<u64>,
    /// `redo done at`.
    pub redo_done_at: Option<String>,
    /// `last completed transaction was at log time`.
    pub last_transaction_time: Option<String>,
    /// `consistent recovery state reached at`.
    pub consistent_at: Option<String>,
    /// `selected new timeline ID`.
    pub new_timeline: Option<u32>,
    /// Timeline of the last WAL file restored.
    pub replay_timeline: Option<u32>,
    /// Name of the last WAL segment restored (`restored log file "…" from archive`).
    pub last_restored: Option<String>,
    /// How many WAL segments were restored so far.
    pub restored_segments: u64,
    /// `pausing at the end of recovery` / `recovery has paused`.
    pub paused: bool,
    /// `database system is ready to accept connections` (read-write).
    pub ready: bool,
    /// `database system is ready to accept read-only connections`.
    pub ready_read_only: bool,
    /// `shutdown at recovery target`.
    pub shutdown_at_target: bool,
    /// `database system is shut down`.
    pub shut_down: bool,
    /// First FATAL/PANIC message.
    pub fatal: Option<String>,
    /// Lines worth showing on failure (errors, hints, details, recovery milestones).
    pub relevant: Vec<String>,
}

/// Whether a log line comes from the startup process or the postmaster, by the backend type
/// the start's `log_line_prefix` puts in angle brackets (`<startup>`); lines without one (a log
/// written with another prefix) count as theirs.
fn recovery_process(line: &str) -> bool {
    let Some(level_at) = line.find(":  ") else {
        return true;
    };
    let head = &line[..level_at];
    match (head.rfind('<'), head.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            matches!(&head[open + 1..close], "startup" | "postmaster")
        }
        _ => true,
    }
}

/// The message part of a log line and its level (`LOG`, `FATAL`, …), whatever the prefix.
fn split_level(line: &str) -> Option<(&str, &str)> {
    for level in [
        "LOG",
        "FATAL",
        "PANIC",
        "ERROR",
        "WARNING",
        "HINT",
        "DETAIL",
        "CONTEXT",
        "STATEMENT",
    ] {
        let tag = format!("{level}:  ");
        if let Some(pos) = line.find(&tag) {
            return Some((&line[pos..pos + level.len()], &line[pos + tag.len()..]));
        }
    }
    None
}

fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let len = s[start..].find('"')?;
    Some(s[start..start + len].to_string())
}

fn lsn_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .find(|w| !w.is_empty())
}

impl LogState {
    /// Feeds one log line.
    pub fn feed(&mut self, line: &str) {
        let Some((level, msg)) = split_level(line) else {
            return;
        };
        let msg = msg.trim_end();
        let keep = |s: &mut LogState| {
            s.relevant.push(line.trim_end().to_string());
            if s.relevant.len() > 200 {
                s.relevant.remove(0);
            }
        };
        match level {
            "FATAL" | "PANIC" => {
                // A FATAL of a client connection or of the WAL receiver (which retries) is not
                // recovery failing; one of the startup process or the postmaster is.
                if self.fatal.is_none() && (level == "PANIC" || recovery_process(line)) {
                    self.fatal = Some(msg.to_string());
                }
                keep(self);
                return;
            }
            "ERROR" | "WARNING" | "HINT" | "DETAIL" => {
                keep(self);
                return;
            }
            "LOG" => {}
            _ => return,
        }
        if let Some(rest) = msg.strip_prefix("recovery stopping ") {
            self.stopping = Some(rest.to_string());
            if rest.contains("WAL location") {
                self.stop_lsn = quoted(rest);
            }
            if let Some(pos) = rest.find("transaction ") {
                self.stop_xid = rest[pos + "transaction ".len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|x| x.parse().ok());
            }
            if let Some(pos) = rest.find(", time ") {
                self.stop_time = Some(rest[pos + ", time ".len()..].to_string());
            }
            keep(self);
        } else if msg.starts_with("redo done at ") {
            self.redo_done_at = lsn_after(msg, "redo done at ").map(str::to_string);
            keep(self);
        } else if let Some(t) = msg.strip_prefix("last completed transaction was at log time ") {
            self.last_transaction_time = Some(t.to_string());
            keep(self);
        } else if msg.starts_with("consistent recovery state reached at ") {
            self.consistent_at =
                lsn_after(msg, "consistent recovery state reached at ").map(str::to_string);
            keep(self);
        } else if let Some(t) = msg.strip_prefix("selected new timeline ID: ") {
            self.new_timeline = t.trim().parse().ok();
            keep(self);
        } else if msg.starts_with("pausing at the end of recovery")
            || msg.starts_with("recovery has paused")
        {
            self.paused = true;
            keep(self);
        } else if msg == "database system is ready to accept connections" {
            self.ready = true;
            keep(self);
        } else if msg == "database system is ready to accept read-only connections" {
            self.ready_read_only = true;
            keep(self);
        } else if msg == "shutdown at recovery target" {
            self.shutdown_at_target = true;
            keep(self);
        } else if msg == "database system is shut down" {
            self.shut_down = true;
            keep(self);
        } else if let Some(rest) = msg.strip_prefix("restored log file ") {
            if let Some(name) = quoted(rest) {
                if name.len() >= 8 {
                    self.replay_timeline = u32::from_str_radix(&name[..8], 16).ok();
                }
                if pitr_pg::walname::WalFileName::parse(&name).is_ok_and(|n| n.holds_wal()) {
                    self.last_restored = Some(name);
                    self.restored_segments += 1;
                }
            }
        } else if msg.starts_with("starting ")
            || msg.starts_with("redo starts at")
            || msg.starts_with("archive recovery complete")
            || msg.contains("recovery target")
        {
            keep(self);
        }
    }

    /// The outcome, once recovery has ended (`running`: whether the server still runs).
    pub fn outcome(&self, running: bool, standby: bool) -> Option<RecoveryOutcome> {
        if self.fatal.is_some() {
            return None;
        }
        if self.shutdown_at_target || (!running && self.shut_down && self.stopping.is_some()) {
            return Some(RecoveryOutcome::ShutDown);
        }
        if !running {
            return None;
        }
        if self.paused {
            return Some(RecoveryOutcome::Paused);
        }
        if self.ready && (self.new_timeline.is_some() || self.redo_done_at.is_some()) {
            return Some(RecoveryOutcome::Promoted);
        }
        if standby && self.ready_read_only {
            return Some(RecoveryOutcome::Standby);
        }
        None
    }
}

fn read_new(path: &Path, offset: &mut u64) -> io::Result<String> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    // Only whole lines; the rest is read next time.
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    *offset += end as u64;
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The postmaster's pid when it runs on `pgdata`.
fn postmaster_alive(pgdata: &Path) -> bool {
    pitr_os::running_postmaster(pgdata).is_some()
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

/// Feeds the log lines written since `offset` to `state`.
fn follow(log: &Path, offset: &mut u64, state: &mut LogState) -> io::Result<()> {
    for line in read_new(log, offset)?.lines() {
        state.feed(line);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &str) -> LogState {
        let mut s = LogState::default();
        for l in lines.lines() {
            s.feed(l);
        }
        s
    }

    #[test]
    fn only_recovery_s_own_fatal_fails_it() {
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] <startup> LOG:  entering standby mode\n\
2026-12-03 13:00:00.200 UTC [51] <client backend> FATAL:  the database system is not yet accepting connections\n\
2026-12-03 13:00:00.300 UTC [52] <walreceiver> FATAL:  could not connect to the primary server: connection to server on socket \"/nowhere/.s.PGSQL.5432\" failed: No such file or directory\n\
2026-12-03 13:00:00.400 UTC [40] <postmaster> LOG:  database system is ready to accept read-only connections\n",
        );
        assert_eq!(s.fatal, None);
        assert_eq!(s.outcome(true, true), Some(RecoveryOutcome::Standby));
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] <startup> FATAL:  requested timeline 3 is not a child of this server's history\n",
        );
        assert!(s
            .fatal
            .as_deref()
            .unwrap()
            .starts_with("requested timeline 3"));
        let s = feed("2026-12-03 13:00:00.100 UTC [40] <postmaster> FATAL:  could not create lock file \"/tmp/.s.PGSQL.5432.lock\": Permission denied\n");
        assert!(s.fatal.is_some());
        let s = feed("2026-12-03 13:00:00.100 UTC [55] <client backend> PANIC:  could not write to file \"pg_wal/xlogtemp.55\": No space left on device\n");
        assert!(s.fatal.is_some(), "a PANIC takes the whole server down");
        // A log written with another prefix: every FATAL counts, as before.
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] FATAL:  could not connect to the primary server\n",
        );
        assert!(s.fatal.is_some());
    }

    #[test]
    fn paused_at_an_xid_target() {
        let s = feed(
            "2026-11-21 19:40:00.100 UTC [42] LOG:  starting point-in-time recovery to XID 743\n\
2026-11-21 19:40:00.120 UTC [42] LOG:  restored log file \"000000010000000000000003\" from archive\n\
2026-11-21 19:40:00.130 UTC [42] LOG:  redo starts at 0/3000028\n\
2026-11-21 19:40:00.140 UTC [42] LOG:  consistent recovery state reached at 0/3000100\n\
2026-11-21 19:40:00.141 UTC [40] LOG:  database system is ready to accept read-only connections\n\
2026-11-21 19:40:00.150 UTC [42] LOG:  recovery stopping before commit of transaction 743, time 2025-07-10 12:36:52.242927-07\n\
2026-11-21 19:40:00.151 UTC [42] LOG:  pausing at the end of recovery\n\
2026-11-21 19:40:00.151 UTC [42] HINT:  Execute pg_wal_replay_resume() to promote.\n",
        );
        assert_eq!(s.outcome(true, false), Some(RecoveryOutcome::Paused));
        assert_eq!(s.stop_xid, Some(743));
        assert_eq!(
            s.stop_time.as_deref(),
            Some("2025-07-10 12:36:52.242927-07")
        );
        assert_eq!(s.consistent_at.as_deref(), Some("0/3000100"));
        assert_eq!(s.replay_timeline, Some(1));
        assert!(s.relevant.iter().any(|l| l.contains("HINT")));
    }

    #[test]
    fn promoted_at_an_lsn_target() {
        let s = feed(
            "LOG:  recovery stopping after WAL location (LSN) \"0/4031F10\"\n\
LOG:  redo done at 0/4031F10 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.01 s\n\
LOG:  last completed transaction was at log time 2026-11-21 19:39:00.123456+00\n\
LOG:  selected new timeline ID: 2\n\
LOG:  archive recovery complete\n\
LOG:  database system is ready to accept connections\n",
        );
        assert_eq!(s.outcome(true, false), Some(RecoveryOutcome::Promoted));
        assert_eq!(s.stop_lsn.as_deref(), Some("0/4031F10"));
        assert_eq!(s.redo_done_at.as_deref(), Some("0/4031F10"));
        assert_eq!(s.new_timeline, Some(2));
        assert_eq!(
            s.last_transaction_time.as_deref(),
            Some("2026-11-21 19:39:00.123456+00")
        );
    }

    #[test]
    fn shut_down_at_the_target() {
        let s = feed(
            "LOG:  recovery stopping at restore point \"before_drop\", time 2026-11-21 19:39:00.1+00\n\
LOG:  shutdown at recovery target\n\
LOG:  database system is shut down\n",
        );
        assert_eq!(s.outcome(false, false), Some(RecoveryOutcome::ShutDown));
        assert!(s.stopping.as_deref().unwrap().contains("before_drop"));
    }

    #[test]
    fn a_missed_target_is_a_failure_not_an_outcome() {
        let s = feed(
            "LOG:  redo done at 0/5000060 system usage: CPU: user: 0.00 s\n\
FATAL:  recovery ended before configured recovery target was reached\n\
LOG:  startup process (PID 12) exited with exit code 1\n\
LOG:  aborting startup due to startup process failure\n\
LOG:  database system is shut down\n",
        );
        assert_eq!(
            s.fatal.as_deref(),
            Some("recovery ended before configured recovery target was reached")
        );
        assert_eq!(s.outcome(false, false), None);
        assert!(s.relevant.iter().any(|l| l.starts_with("FATAL")));
    }

    #[test]
    fn an_unfinished_recovery_has_no_outcome_yet() {
        let s = feed("LOG:  database system is ready to accept read-only connections\n");
        assert_eq!(s.outcome(true, false), None);
        assert_eq!(s.outcome(true, true), Some(RecoveryOutcome::Standby));
        assert_eq!(s.outcome(false, false), None);
    }
}
