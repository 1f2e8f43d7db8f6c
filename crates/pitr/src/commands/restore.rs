//! `pitr restore`: options → [`pitr_core::restore`] plan/execute (and `--start`), rendered.

use super::info::human_bytes;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pitr_core::restore::choose::show_time;
use pitr_core::restore::start::{self, RecoveryOutcome, StartOptions, StartReport};
use pitr_core::restore::target::{parse_lsn, parse_name, parse_time, parse_xid};
use pitr_core::restore::{
    self, conf, ArchiveMode, DirAction, DirState, RecoveryTarget, RestoreOptions, RestorePlan,
    RestoreReport, TargetSpec,
};

use super::{open_cluster, print_json, repo_location, DEFAULT_CLUSTER};
use crate::cli::{GlobalArgs, RestoreArgs, TargetArgs};
use crate::error::CliError;
use crate::progress;

/// The `restore_command` a restored server fetches WAL with: this binary, the repository (an
/// absolute path when local), the cluster, and the S3 and key options (never secrets).
pub fn restore_command_for(g: &GlobalArgs) -> Result<String, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find the path of this pitr binary: {e}")))?;
    Ok(conf::restore_command(
        &exe,
        &repo_for_command(repo_location(g)?),
        g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER),
        &[crate::s3::command_args(g), super::key_file_args(g)].concat(),
    ))
}

/// `-j/--jobs`: at least 1, the number of CPUs by default.
pub fn jobs(given: Option<usize>) -> Result<usize, CliError> {
    match given {
        Some(0) => Err(CliError::Usage("--jobs must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)),
    }
}

/// The target the options name; `action` is `--target-action` (restore only).
pub fn target_spec(a: &TargetArgs, action: Option<&str>) -> Result<TargetSpec, CliError> {
    let target = if let Some(t) = &a.target_time {
        RecoveryTarget::Time(parse_time(t).map_err(restore::RestoreError::from)?)
    } else if let Some(l) = &a.target_lsn {
        RecoveryTarget::Lsn(parse_lsn(l).map_err(restore::RestoreError::from)?)
    } else if let Some(n) = &a.target_name {
        RecoveryTarget::Name(parse_name(n).map_err(restore::RestoreError::from)?)
    } else if let Some(x) = &a.target_xid {
        RecoveryTarget::Xid(parse_xid(x).map_err(restore::RestoreError::from)?)
    } else if a.target_immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::EndOfWal
    };
    let spec = TargetSpec {
        target,
        exclusive: a.target_exclusive,
        timeline: match &a.target_timeline {
            Some(t) => t.parse().map_err(restore::RestoreError::from)?,
            None => Default::default(),
        },
        action: match action {
            Some(t) => Some(t.parse().map_err(restore::RestoreError::from)?),
            None => None,
        },
    };
    spec.validate().map_err(restore::RestoreError::from)?;
    Ok(spec)
}

fn tablespace_map(items: &[String]) -> Result<Vec<(u32, PathBuf)>, CliError> {
    items
        .iter()
        .map(|item| {
            let bad = || {
                CliError::Usage(format!(
                    "invalid --tablespace-map {item:?}\nhint: use OID=DIR, e.g. --tablespace-map 16390=/srv/restore/ts1"
                ))
            };
            let (oid, dir) = item.split_once('=').ok_or_else(bad)?;
            let oid: u32 = oid.trim().parse().map_err(|_| bad())?;
            if dir.is_empty() {
                return Err(bad());
            }
            Ok((oid, PathBuf::from(dir)))
        })
        .collect()
}

/// The repository as `restore_command` must name it: an absolute path for a local repository.
fn repo_for_command(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let p = Path::new(location);
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}

pub async fn run(g: &GlobalArgs, a: RestoreArgs) -> Result<u8, CliError> {
    let pgdata = g.pgdata.clone().ok_or_else(|| {
        CliError::Usage(
            "restore needs the data directory to restore into\nhint: pass --pgdata DIR (or set PGDATA)".into(),
        )
    })?;
    let spec = target_spec(&a.target, a.target_action.as_deref())?;
    let cluster = open_cluster(g).await?;
    let restore_command = restore_command_for(g)?;
    let jobs = jobs(a.jobs)?;
    let opts = RestoreOptions {
        pgdata,
        spec,
        backup: a.backup.clone(),
        delta: a.delta,
        force: a.force,
        standby: a.standby,
        tablespace_map: tablespace_map(&a.tablespace_map)?,
        owner: a.owner.clone(),
        jobs,
        restore_command,
        archive_mode: a
            .archive_mode
            .parse()
            .map_err(restore::RestoreError::from)?,
    };
    let plan = restore::plan(&cluster, &opts).await?;
    if a.dry_run {
        if g.json {
            print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
        } else {
            println!("restore plan (dry run: nothing was changed)");
            print_plan(&plan);
        }
        return Ok(0);
    }
    for b in &plan.timeline_warnings {
        tracing::warn!("{}", b.message);
    }
    if !g.quiet && !g.json {
        eprintln!(
            "pitr: restoring backup {} into {} ({} files, {})",
            plan.backup.label,
            plan.pgdata.display(),
            plan.backup.files,
            human_bytes(plan.backup.bytes)
        );
    }
    if a.start {
        if let Some(port) = g.port {
            // Before anything is written: a taken port would only fail after the restore.
            restore::port::ensure_port_free(port, true)?;
        }
    }
    let major = plan.backup.pg_major;
    // A standby given a target ends recovery there like any restore: wait for that, not only
    // for read-only connections.
    let endless_standby =
        a.standby && opts.spec.target == pitr_core::restore::target::RecoveryTarget::EndOfWal;
    let show_bar = !g.quiet && !g.json && std::io::stderr().is_terminal();
    let spec_target = opts.spec.target.clone();
    let progress: Arc<dyn restore::Progress> =
        Arc::new(progress::for_step("restore", "files", show_bar));
    let at = pitr_core::history::now();
    // Held until recovery ends with --start: it replays the backup's WAL from the repository.
    let lease = if a.start {
        restore::execute::take_lease(&cluster, &plan).await?
    } else {
        None
    };
    let report = restore::execute(&cluster, plan, Some(progress)).await?;
    let start_report = if a.start {
        let opts = StartOptions {
            pgdata: report.plan.pgdata.clone(),
            pg_major: major,
            pg_bin: a.pg_bin.clone(),
            owner: report.plan.owner.clone(),
            port: g.port,
            log_file: a.server_log.clone(),
            timeout: a.wait_timeout.map(Duration::from_secs),
            standby: endless_standby,
        };
        if !g.quiet && !g.json {
            eprintln!("pitr: starting PostgreSQL {major} and waiting for recovery to end");
        }
        let replay = (!endless_standby)
            .then(|| restore::replay_span(&report.plan, &spec_target))
            .flatten()
            .map(|(from, to)| restore::ReplayProgress {
                from,
                to,
                progress: Arc::new(progress::for_step("replay", "segments", show_bar)),
            });
        match start::start_and_wait_reporting(&opts, replay).await {
            Ok(r) => Some(r),
            Err(e) => {
                if g.json {
                    print_json(&serde_json::json!({ "restore": report }));
                } else {
                    print_report(&report, false);
                }
                return Err(e.into());
            }
        }
    } else {
        None
    };
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!("cannot remove the restore's lease (it lapses by itself): {e}");
        }
    }
    record_restore(&cluster, &report, start_report.as_ref(), &at).await;
    if g.json {
        print_json(&serde_json::json!({ "restore": report, "start": start_report }));
    } else {
        print_report(&report, start_report.is_none());
        if let Some(s) = &start_report {
            print_start(s);
        }
    }
    Ok(0)
}

fn print_plan(p: &RestorePlan) {
    let b = &p.backup;
    println!(
        "  backup:      {} ({}, PostgreSQL {}, timeline {}, {} .. {}, finished {})",
        b.label,
        match b.kind {
            pitr_repo::BackupKind::Full => "full",
            pitr_repo::BackupKind::Incr => "incremental",
        },
        b.pg_major,
        b.timeline,
        b.start_lsn,
        b.stop_lsn,
        show_time(b.stop_time)
    );
    println!("  why:         {}", p.choice.reason);
    for r in &p.choice.rejected {
        println!("               passed over {}: {}", r.label, r.reason);
    }
    println!("  target:      {}", p.target);
    if let Some(l) = &p.located {
        let at = l
            .time
            .map(|t| format!(", {}", show_time(t)))
            .unwrap_or_default();
        println!(
            "  located at:  {} on timeline {}{at} (found in the archived WAL)",
            l.lsn, l.tli
        );
    }
    let path: Vec<String> = p
        .choice
        .path
        .iter()
        .map(|s| match s.until {
            Some(u) => format!("timeline {} until {u}", s.tli),
            None => format!("timeline {}", s.tli),
        })
        .collect();
    println!("  timelines:   {}", path.join(" -> "));
    println!(
        "  WAL:         {} .. {} (archived WAL continuous up to {} on timeline {})",
        p.choice.first_segment,
        p.choice.last_segment.as_deref().unwrap_or("-"),
        p.choice.wal_end,
        p.choice.target_tli
    );
    println!(
        "  into:        {} ({})",
        p.pgdata.display(),
        dir_words(&p.pgdata_state, p.pgdata_action)
    );
    for t in &p.tablespaces {
        println!(
            "  tablespace:  {} {:?}: {} -> {} ({})",
            t.oid,
            t.name,
            t.original,
            t.restore_to.display(),
            dir_words(&t.state, t.action)
        );
    }
    println!(
        "  files:       {} ({}, {} stored), {} at a time",
        b.files,
        human_bytes(b.bytes),
        human_bytes(b.stored_bytes),
        p.jobs
    );
    if let Some(o) = &p.owner {
        println!("  owner:       {} (uid {}, gid {})", o.name, o.uid, o.gid);
    }
    let mut files = vec![p.signal_file.clone()];
    if p.writes_backup_label {
        files.push("backup_label".into());
    }
    if p.writes_tablespace_map {
        files.push("tablespace_map".into());
    }
    files.push("postgresql.auto.conf".into());
    println!("  writes:      {}", files.join(", "));
    println!(
        "  archiving:   {}",
        match p.archive_mode {
            ArchiveMode::Preserve =>
                "preserved (--archive-mode preserve): once promoted, the server archives its new timeline into the repository",
            ArchiveMode::Off =>
                "off (--archive-mode off): the restored server archives nothing into the repository",
        }
    );
    for s in &p.settings {
        println!(
            "               {} = {}",
            s.name,
            conf::quote_value(&s.value)
        );
    }
    for n in &p.choice.notes {
        println!("  note:        {n}");
    }
    for b in &p.timeline_warnings {
        println!(
            "  WARNING:     {}",
            b.message.replace('\n', "\n               ")
        );
    }
}

fn dir_words(state: &DirState, action: DirAction) -> String {
    let what = match state {
        DirState::Missing => "does not exist".to_string(),
        DirState::Empty => "empty".to_string(),
        DirState::NotEmpty { entries, .. } => format!("{entries} entries"),
    };
    let act = match action {
        DirAction::Create => "will be created, mode 0700",
        DirAction::Fill => "will be filled",
        DirAction::Delta => "--delta: matching files kept, others fetched, extra files removed",
        DirAction::Wipe => "--force: contents deleted first",
    };
    format!("{what}; {act}")
}

fn print_report(r: &RestoreReport, hint_start: bool) {
    print_plan(&r.plan);
    println!(
        "restored {} files ({} written, {} read from the repository), reused {} ({}), removed {} entries, in {:.1} s",
        r.files_restored,
        human_bytes(r.bytes_written),
        human_bytes(r.bytes_fetched),
        r.files_reused,
        human_bytes(r.bytes_reused),
        r.entries_removed,
        r.seconds
    );
    for c in &r.commented_out {
        println!("  commented out: {c}");
    }
    if hint_start {
        println!(
            "next: start PostgreSQL on it (e.g. pg_ctl -D {} start, as the owner of the directory); it will replay WAL from the repository to the target",
            r.plan.pgdata.display()
        );
    }
}

fn print_start(s: &StartReport) {
    let what = match s.outcome {
        RecoveryOutcome::Paused => "recovery paused at the target (server running, read-only)",
        RecoveryOutcome::Promoted => "recovery ended and the server was promoted (open for writes)",
        RecoveryOutcome::ShutDown => "recovery stopped at the target and the server shut down",
        RecoveryOutcome::Standby => "the standby is consistent and replaying (read-only)",
    };
    println!("{what}");
    if let Some(st) = &s.stopped {
        println!("  stopped:     {st}");
    }
    if let Some(l) = &s.stop_lsn {
        println!("  at LSN:      {l}");
    }
    if let Some(t) = &s.last_transaction_time {
        println!("  last transaction replayed at {t}");
    }
    if let Some(t) = s.timeline {
        println!("  timeline:    {t}");
    }
    println!("  server log:  {}", s.log_file.display());
    if let Some(n) = &s.next_step {
        println!("next: {n}");
    }
}

/// Records the restore in the repository's history. A repository that cannot take the record
/// (read-only credentials, say) gets a warning: the restore itself is done.
async fn record_restore(
    cluster: &pitr_repo::ClusterRepo,
    report: &RestoreReport,
    started: Option<&StartReport>,
    at: &str,
) {
    let replay = started.map(|s| s.seconds);
    let record = pitr_core::history::HistoryRecord {
        kind: "restore".into(),
        at: at.to_string(),
        by: pitr_os::effective_user_name(),
        backup: report.plan.backup.label.clone(),
        target: report.plan.target.clone(),
        directory: report.plan.pgdata.display().to_string(),
        outcome: if started.is_some() {
            "started"
        } else {
            "restored"
        }
        .into(),
        stopped_at: started.and_then(|s| s.stop_lsn.clone().or(s.redo_done_at.clone())),
        timeline: started.and_then(|s| s.timeline),
        restore_seconds: report.seconds,
        replay_seconds: replay,
        total_seconds: report.seconds + replay.unwrap_or(0.0),
        wal_replayed_bytes: None,
        detail: None,
        archive_mode: Some(report.plan.archive_mode.to_string()),
    };
    if let Err(e) = cluster.record_history(at, "restore", &record).await {
        tracing::warn!(
            "the restore is done, but it could not be recorded in the repository's history: {e}"
        );
    }
}
