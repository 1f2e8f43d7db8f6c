//! `pitr wal log` and `pitr wal incidents`.

use pitr_core::walscan::{
    self, names::Namer, Bound, CommandContext, Event, ScanInfo, ScanOptions, TxnReport, WalLog,
};
use pitr_pg::TimelineId;

use super::{conn_params, open_cluster, print_json, DEFAULT_CLUSTER};
use crate::cli::{GlobalArgs, WalCommand, WalRangeArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, cmd: WalCommand) -> Result<u8, CliError> {
    match cmd {
        WalCommand::Log(a) => {
            let log = scan(g, &a.range).await?;
            if g.json {
                print_json(&log);
            } else {
                print_log(&log);
            }
        }
        WalCommand::Incidents(a) => {
            let log = scan(g, &a.range).await?;
            let ctx = CommandContext {
                program: "pitr".into(),
                repo: g.repo.clone().unwrap_or_default(),
                cluster: g.cluster.clone().filter(|c| c != DEFAULT_CLUSTER),
                extra: Vec::new(),
            };
            let report = walscan::incidents(log, a.threshold, &ctx);
            if g.json {
                print_json(&report);
            } else {
                print_scan(&report.scan);
                if report.incidents.is_empty() {
                    println!(
                        "no incidents: no DROP or TRUNCATE, and no transaction deleted or updated more than {} rows of a table",
                        report.threshold
                    );
                }
                for i in &report.incidents {
                    let t = &i.transaction;
                    println!();
                    println!(
                        "xid {} {} at {} (commit LSN {}) in database {}:",
                        t.xid,
                        if t.outcome == "commit" {
                            "committed"
                        } else {
                            &t.outcome
                        },
                        t.time,
                        t.lsn,
                        db_label(t)
                    );
                    for r in &i.reasons {
                        println!("  {r}");
                    }
                    println!("  undo with: {}", i.restore_by_xid);
                    println!("         or: {}", i.restore_by_lsn);
                }
            }
        }
    }
    Ok(0)
}

async fn scan(g: &GlobalArgs, a: &WalRangeArgs) -> Result<WalLog, CliError> {
    let cluster = open_cluster(g)?;
    let opts = ScanOptions {
        from: a
            .from
            .as_deref()
            .map(|s| Bound::parse("--from", s))
            .transpose()?,
        to: a
            .to
            .as_deref()
            .map(|s| Bound::parse("--to", s))
            .transpose()?,
        timeline: a.timeline.map(TimelineId),
    };
    let plan = walscan::plan(&cluster, &opts).await?;
    let mut log = walscan::scan(&cluster, &plan, &opts).await?;
    // The running server is asked for names only when told where it is.
    let live = !a.no_live
        && (g.host.is_some() || g.port.is_some() || g.user.is_some() || g.dbname.is_some());
    let params = conn_params(g);
    let mut namer = Namer::new(&cluster, &plan, &log, live.then_some(&params)).await;
    namer.name(&mut log).await;
    if !g.quiet {
        for w in &log.scan.warnings {
            eprintln!("pitr: warning: {w}");
        }
    }
    Ok(log)
}

fn print_scan(s: &ScanInfo) {
    println!(
        "cluster {}, timeline {}: {} segments {}..{} ({:.1} MB, {} records); {} at {}",
        s.cluster,
        s.timeline,
        s.segments,
        s.first_segment,
        s.last_segment,
        s.bytes as f64 / 1048576.0,
        s.records,
        s.end,
        s.end_lsn
    );
}

fn db_label(t: &TxnReport) -> String {
    match &t.database {
        Some(d) => d.name.clone().unwrap_or_else(|| format!("oid {}", d.oid)),
        None => "-".into(),
    }
}

fn print_log(log: &WalLog) {
    print_scan(&log.scan);
    println!(
        "{:<12} {:<27} {:>10} {:<17} {:<12} changes",
        "lsn", "time (UTC)", "xid", "event", "database"
    );
    for e in &log.events {
        match e {
            Event::Transaction(t) => {
                println!(
                    "{:<12} {:<27} {:>10} {:<17} {:<12} {}",
                    t.lsn.to_string(),
                    t.time,
                    t.xid,
                    t.outcome,
                    db_label(t),
                    if t.relations.is_empty() && t.truncated_oids.is_empty() {
                        "-"
                    } else {
                        ""
                    }
                );
                for r in &t.relations {
                    let how = r.how();
                    if !how.is_empty() {
                        println!("{:>82}{}: {how}", "", r.label());
                    }
                }
                for o in &t.truncated_oids {
                    println!("{:>82}relation oid {o}: TRUNCATE", "");
                }
            }
            Event::RestorePoint(r) => println!(
                "{:<12} {:<27} {:>10} {:<17} {:<12} {:?}",
                r.lsn.to_string(),
                r.time,
                "",
                "restore point",
                "",
                r.name
            ),
            Event::Checkpoint(c) => println!(
                "{:<12} {:<27} {:>10} {:<17} {:<12} redo {}",
                c.lsn.to_string(),
                c.time,
                "",
                if c.shutdown {
                    "checkpoint (shut)"
                } else {
                    "checkpoint"
                },
                "",
                c.redo
            ),
        }
    }
}
