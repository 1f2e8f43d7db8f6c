//! `pitr drill`: a restore test, measured. Restores a backup (the latest, to the end of
//! archived WAL, unless told otherwise) into a scratch directory, starts PostgreSQL there on a
//! free port, isolated from production (archiving off, no TCP listener, a socket and an
//! authentication file of its own), waits for recovery to end, runs the checks, stops the server
//! and removes the scratch directory (unless kept). The result, with the measured recovery time
//! (restore + replay), goes into the repository's history.
//!
//! - `scratch`: the scratch cluster's settings, port, checks and stop;
//! - this file: options, report, and the steps in order.

pub(crate) mod scratch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pitr_pg::Lsn;
use pitr_repo::ClusterRepo;
use serde::Serialize;

use crate::history::{self, HistoryRecord};
use crate::restore::start::{self, RecoveryOutcome, StartOptions};
use crate::restore::{self, RecoveryTarget, RestoreOptions, TargetAction, TargetSpec};

pub use scratch::CheckResult;

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Where the scratch directory is made (a fresh `pitr-drill-*` directory inside).
    pub scratch_parent: PathBuf,
    /// The recovery target (end of WAL by default); promoted at the target.
    pub spec: TargetSpec,
    /// A given backup instead of the newest one that reaches the target.
    pub backup: Option<String>,
    /// SQL checks run once recovery ended (each must succeed and not return a single `false`).
    pub check_sql: Vec<String>,
    /// The database the checks connect to.
    pub dbname: String,
    /// Keep the scratch directory (the server is stopped anyway).
    pub keep: bool,
    /// PostgreSQL binaries (found automatically when `None`).
    pub pg_bin: Option<PathBuf>,
    /// The scratch server's port (a free one when `None`).
    pub port: Option<u16>,
    /// Give up waiting for recovery after this long.
    pub timeout: Duration,
    /// Files restored in parallel.
    pub jobs: usize,
    /// The `restore_command` the scratch server fetches WAL with.
    pub restore_command: String,
    /// OS user the scratch cluster belongs to (as for restore).
    pub owner: Option<String>,
}

/// What a drill did.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// `passed` or `failed`.
    pub outcome: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// The history record written (or that would have been, when writing it failed).
    pub record: HistoryRecord,
    /// The checks and what they returned.
    pub checks: Vec<CheckResult>,
    /// The scratch server's port.
    pub port: Option<u16>,
    /// The scratch directory, when kept.
    pub kept: Option<PathBuf>,
    /// Where the server's log was (inside the scratch directory).
    pub server_log: Option<PathBuf>,
    /// The history record's key, when written.
    pub history_key: Option<String>,
}

impl DrillReport {
    /// Whether the drill passed.
    pub fn passed(&self) -> bool {
        self.outcome == "passed"
    }
}

/// Runs a drill. Every failure after the scratch directory exists is reported (and recorded),
/// not returned as an error: the scratch server is stopped and the directory removed first.
pub async fn run(cluster: &ClusterRepo, opts: &DrillOptions) -> DrillReport {
    let at = history::now();
    let mut record = HistoryRecord {
        kind: "drill".into(),
        at: at.clone(),
        by: pitr_os::effective_user_name(),
        backup: String::new(),
        target: String::new(),
        directory: String::new(),
        outcome: "failed".into(),
        stopped_at: None,
        timeline: None,
        restore_seconds: 0.0,
        replay_seconds: None,
        total_seconds: 0.0,
        wal_replayed_bytes: None,
        detail: None,
        archive_mode: Some(restore::ArchiveMode::Off.to_string()),
    };
    let mut report = DrillReport {
        outcome: "failed".into(),
        failure: None,
        record: record.clone(),
        checks: Vec::new(),
        port: None,
        kept: None,
        server_log: None,
        history_key: None,
    };
    let scratch = match scratch::Scratch::create(&opts.scratch_parent) {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(e);
            record.detail = report.failure.clone();
            return finish(cluster, report, record).await;
        }
    };
    record.directory = scratch.pgdata().display().to_string();
    let outcome = steps(cluster, opts, &scratch, &mut record, &mut report).await;
    if let Err(e) = outcome {
        report.failure = Some(e);
    }
    // Whatever happened: nothing left running, nothing left behind unless asked.
    if let Err(e) = scratch.stop_server(opts.pg_bin.as_deref()) {
        report.failure.get_or_insert(e);
    }
    if opts.keep {
        report.kept = Some(scratch.dir().to_path_buf());
    } else if let Err(e) = scratch.remove() {
        report.failure.get_or_insert(e);
    }
    if report.failure.is_none() {
        report.outcome = "passed".into();
        record.outcome = "passed".into();
    } else {
        record.detail = report.failure.clone();
    }
    finish(cluster, report, record).await
}

async fn finish(
    cluster: &ClusterRepo,
    mut report: DrillReport,
    record: HistoryRecord,
) -> DrillReport {
    match cluster.record_history(&record.at, "drill", &record).await {
        Ok(key) => report.history_key = Some(key),
        Err(e) => {
            report.outcome = "failed".into();
            report
                .failure
                .get_or_insert(format!("cannot record the drill in the repository: {e}"));
        }
    }
    report.record = record;
    report
}

/// Restore, isolate, start, wait, check.
async fn steps(
    cluster: &ClusterRepo,
    opts: &DrillOptions,
    scratch: &scratch::Scratch,
    record: &mut HistoryRecord,
    report: &mut DrillReport,
) -> Result<(), String> {
    let started = Instant::now();
    let mut spec = opts.spec.clone();
    // At a target, promote (the default would pause); at the end of WAL PostgreSQL promotes.
    if spec.target != RecoveryTarget::EndOfWal {
        spec.action = Some(TargetAction::Promote);
    }
    let mut ropts = RestoreOptions {
        pgdata: scratch.pgdata().to_path_buf(),
        spec,
        backup: opts.backup.clone(),
        delta: false,
        force: false,
        standby: false,
        tablespace_map: Vec::new(),
        owner: opts.owner.clone(),
        jobs: opts.jobs,
        restore_command: opts.restore_command.clone(),
        // A drill never archives into the repository it checks.
        archive_mode: restore::ArchiveMode::Off,
    };
    let first = restore::plan(cluster, &ropts)
        .await
        .map_err(|e| e.to_string())?;
    // Tablespaces go into the scratch directory too, never to their production locations.
    ropts.tablespace_map = first
        .tablespaces
        .iter()
        .map(|t| (t.oid, scratch.tablespace_dir(t.oid)))
        .collect();
    let plan = if ropts.tablespace_map.is_empty() {
        first
    } else {
        restore::plan(cluster, &ropts)
            .await
            .map_err(|e| e.to_string())?
    };
    record.backup = plan.backup.label.clone();
    record.target = plan.target.clone();
    let backup_start: Option<Lsn> = plan.backup.start_lsn.parse().ok();
    let major = plan.backup.pg_major;
    // Held until the drill ends (dropped with this function): recovery reads the backup's WAL.
    let _lease = restore::execute::take_lease(cluster, &plan)
        .await
        .map_err(|e| e.to_string())?;
    let restored = restore::execute(cluster, plan, None)
        .await
        .map_err(|e| format!("restore failed: {e}"))?;
    record.restore_seconds = restored.seconds;
    let owner = restored.plan.owner.clone();
    let port = match opts.port {
        Some(p) => p,
        None => scratch::free_port()?,
    };
    report.port = Some(port);
    scratch.isolate(owner.as_ref(), major)?;
    let log = scratch.dir().join("server.log");
    report.server_log = Some(log.clone());
    let sopts = StartOptions {
        pgdata: scratch.pgdata().to_path_buf(),
        pg_major: major,
        pg_bin: opts.pg_bin.clone(),
        owner: owner.clone(),
        port: Some(port),
        log_file: Some(log),
        timeout: Some(opts.timeout),
        standby: false,
    };
    let started_server = start::start_and_wait(&sopts)
        .await
        .map_err(|e| format!("recovery failed: {e}"))?;
    record.replay_seconds = Some(started_server.seconds);
    record.total_seconds = started.elapsed().as_secs_f64();
    record.timeline = started_server.timeline;
    record.stopped_at = started_server
        .stop_lsn
        .clone()
        .or(started_server.redo_done_at.clone());
    record.wal_replayed_bytes = match (backup_start, record.stopped_at.as_deref()) {
        (Some(from), Some(to)) => to.parse::<Lsn>().ok().map(|to| to.0.saturating_sub(from.0)),
        _ => None,
    };
    if started_server.outcome != RecoveryOutcome::Promoted {
        return Err(format!(
            "recovery ended {:?}, not promoted: {}",
            started_server.outcome,
            started_server.stopped.unwrap_or_default()
        ));
    }
    let user = owner.map_or_else(pitr_os::effective_user_name, |u| u.name);
    report.checks = scratch
        .run_checks(port, &user, &opts.dbname, &opts.check_sql)
        .await;
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("check {:?}: {}", c.sql, c.result))
        .collect();
    record.detail = Some(
        report
            .checks
            .iter()
            .map(|c| format!("{} -> {}", c.sql, c.result))
            .collect::<Vec<_>>()
            .join("; "),
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}
