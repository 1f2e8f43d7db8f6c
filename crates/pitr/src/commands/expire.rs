//! `pitr expire`.

use std::io::IsTerminal;
use std::sync::Arc;

use pitr_core::expire::{self, ExpireReport, Policy};
use pitr_core::progress::Progress;

use super::info::human_bytes;
use super::{open_cluster, print_json};
use crate::cli::{ExpireArgs, GlobalArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, a: ExpireArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let policy = Policy {
        retain_full: a.retain_full.or(g.retain_full),
        retain_days: a.retain_days.or(g.retain_days),
    };
    let report =
        expire::expire_with_progress(&cluster, policy, a.dry_run, Some(progress(g))).await?;
    if g.json {
        print_json(&report);
        return Ok(0);
    }
    if g.quiet {
        return Ok(0);
    }
    for line in lines(&report) {
        outln!("{line}");
    }
    Ok(0)
}

/// Expire's progress reporter (backups removed).
pub fn progress(g: &GlobalArgs) -> Arc<dyn Progress> {
    Arc::new(crate::progress::for_step(
        "expire",
        "backups",
        !g.quiet && !g.json && std::io::stderr().is_terminal(),
    ))
}

/// The report in words, one line each (`expire` prints them on stdout, `backup --expire` on
/// stderr beside the backup's own lines).
pub fn lines(report: &ExpireReport) -> Vec<String> {
    let mut out = Vec::new();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut what = Vec::new();
    if let Some(n) = report.policy.retain_full {
        what.push(if n == 1 {
            "the newest full backup".to_string()
        } else {
            format!("the newest {n} full backups")
        });
    }
    if let Some(d) = report.policy.retain_days {
        what.push(format!(
            "what recovery to any time in the last {d} day{} needs",
            if d == 1 { "" } else { "s" }
        ));
    }
    out.push(format!(
        "cluster {}: keeping {}",
        report.cluster,
        what.join(" and ")
    ));
    for e in &report.expired {
        out.push(format!(
            "  {verb} backup {} ({}, finished {}, {}): {}",
            e.label,
            e.kind,
            e.stop_time.strftime("%Y-%m-%d %H:%M:%S UTC"),
            human_bytes(e.stored_bytes),
            e.reason
        ));
    }
    for l in &report.leftovers {
        out.push(format!(
            "  {verb} the leftovers of backup {l} (no manifest: an interrupted expire)"
        ));
    }
    for p in &report.pinned {
        out.push(format!(
            "  kept backup {p}: pinned (`pitr unpin {p}` lets expire apply the policy to it)"
        ));
    }
    for n in &report.in_use {
        outln!("  in use, skipped: {n}");
    }
    for l in &report.lapsed_leases {
        outln!("  ignored a lapsed lease (its holder stopped renewing it): {l}");
    }
    match &report.wal_kept_from {
        Some(first) if report.wal_files > 0 => out.push(format!(
            "  {verb} {} WAL files ({}) before {first}, the start of the oldest backup kept",
            report.wal_files,
            human_bytes(report.wal_bytes)
        )),
        Some(first) => out.push(format!(
            "  no WAL before {first} (the start of the oldest backup kept)"
        )),
        None => out.push("  WAL untouched: no backup to anchor it".to_string()),
    }
    if report.expired.is_empty() && report.leftovers.is_empty() {
        out.push("  no backup to remove".to_string());
    }
    out.push(format!(
        "  kept {} backup{}: {}",
        report.kept.len(),
        if report.kept.len() == 1 { "" } else { "s" },
        if report.kept.is_empty() {
            "none".to_string()
        } else {
            report.kept.join(", ")
        }
    ));
    out
}
