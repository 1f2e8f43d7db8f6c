//! `pitr drill` and `pitr history`: options → [`pitr_core::drill`], the repository's history,
//! rendered.

use std::time::Duration;

use pitr_core::drill::{self, DrillOptions, DrillReport};
use pitr_core::history::HistoryRecord;

use super::info::human_bytes;
use super::restore::{jobs, restore_command_for, target_spec};
use super::{open_cluster, print_json};
use crate::cli::{DrillArgs, GlobalArgs};
use crate::error::{CliError, EXIT_ERROR};

pub async fn run(g: &GlobalArgs, a: DrillArgs) -> Result<u8, CliError> {
    let spec = target_spec(&a.target, None)?;
    let cluster = open_cluster(g).await?;
    let restore_command = restore_command_for(g)?;
    let jobs = jobs(a.jobs)?;
    let opts = DrillOptions {
        scratch_parent: a.scratch.clone().unwrap_or_else(std::env::temp_dir),
        spec,
        backup: a.backup.clone(),
        check_sql: a.check_sql.clone(),
        dbname: g.dbname.clone().unwrap_or_else(|| "postgres".into()),
        keep: a.keep,
        pg_bin: a.pg_bin.clone(),
        port: g.port,
        timeout: Duration::from_secs(a.wait_timeout),
        jobs,
        restore_command,
        owner: a.owner.clone(),
    };
    if !g.quiet && !g.json {
        eprintln!(
            "pitr: drill: restoring into a scratch directory under {}",
            opts.scratch_parent.display()
        );
    }
    let report = drill::run(&cluster, &opts).await;
    if g.json {
        print_json(&report);
    } else {
        print_drill(&report);
    }
    Ok(if report.passed() { 0 } else { EXIT_ERROR })
}

fn print_drill(r: &DrillReport) {
    let rec = &r.record;
    println!("drill {}", r.outcome.to_uppercase());
    println!("  backup:         {}", show(&rec.backup));
    println!("  target:         {}", show(&rec.target));
    if let Some(at) = &rec.stopped_at {
        let tli = rec
            .timeline
            .map(|t| format!(", now on timeline {t}"))
            .unwrap_or_default();
        println!("  stopped at:     {at}{tli}");
    }
    println!("  restore:        {:.1} s", rec.restore_seconds);
    if let Some(s) = rec.replay_seconds {
        println!("  replay:         {s:.1} s");
    }
    println!(
        "  recovery time:  {:.1} s (restore + replay: the measured RTO)",
        rec.total_seconds
    );
    if let Some(b) = rec.wal_replayed_bytes {
        println!("  WAL replayed:   {}", human_bytes(b));
    }
    for c in &r.checks {
        let mark = if c.passed { "ok" } else { "FAILED" };
        println!("  check {mark}: {} -> {}", c.sql, c.result);
    }
    if let Some(f) = &r.failure {
        println!("  failure:        {f}");
        if let Some(log) = &r.server_log {
            if r.kept.is_some() {
                println!("  server log:     {}", log.display());
            }
        }
    }
    match &r.kept {
        Some(dir) => println!("  scratch kept:   {} (server stopped)", dir.display()),
        None => println!("  scratch:        removed"),
    }
    match &r.history_key {
        Some(_) => println!("  recorded in the repository's history (pitr history)"),
        None => println!("  NOT recorded in the repository's history"),
    }
}

fn show(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `pitr history`.
pub async fn history(g: &GlobalArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let records: Vec<HistoryRecord> = cluster.history().await?;
    if g.json {
        print_json(&serde_json::json!({ "cluster": cluster.name(), "history": records }));
        return Ok(0);
    }
    if records.is_empty() {
        println!("cluster {}: no restore or drill recorded", cluster.name());
        return Ok(0);
    }
    println!(
        "{:<22} {:<8} {:<8} {:<18} {:>9} {:<9} {:<14} target",
        "when", "kind", "outcome", "backup", "RTO (s)", "archiving", "by"
    );
    for r in &records {
        println!(
            "{:<22} {:<8} {:<8} {:<18} {:>9.1} {:<9} {:<14} {}",
            r.at,
            r.kind,
            r.outcome,
            r.backup,
            r.total_seconds,
            r.archive_mode.as_deref().unwrap_or("-"),
            r.by,
            r.target
        );
        if r.outcome == "failed" {
            if let Some(d) = &r.detail {
                println!("    {d}");
            }
        }
    }
    Ok(0)
}
