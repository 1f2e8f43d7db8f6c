//! `pitr wal log` and `pitr wal incidents`.

use pitr_core::walscan::{
    self, names::Namer, Bound, CommandContext, Event, ScanInfo, ScanOptions, TxnReport,
};
use pitr_pg::TimelineId;

use super::{conn_params, open_cluster, print_json, DEFAULT_CLUSTER};
use crate::cli::{GlobalArgs, WalCommand, WalRangeArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, cmd: WalCommand) -> Result<u8, CliError> {
    match cmd {
        WalCommand::Log(a) => {
            let cluster = open_cluster(g).await?;
            let opts = options(&a.range, None)?;
            let plan = walscan::plan(&cluster, &opts).await?;
            let mut namer = Namer::new(&cluster, &plan, live_params(g, &a.range)).await;
            // Events are printed as they are decoded: memory stays small on long ranges.
            let mut out = Out::new();
            if g.json {
                out.write("{\n\"events\": [");
            } else {
                out.write(&format!(
                    "{:<12} {:<27} {:>10} {:<17} {:<12} changes\n",
                    "lsn", "time (UTC)", "xid", "event", "database"
                ));
            }
            let mut first = true;
            let scan = walscan::scan(&cluster, &plan, &opts, &mut namer, |e| {
                if g.json {
                    let sep = if first { "\n" } else { ",\n" };
                    first = false;
                    match serde_json::to_string(&e) {
                        Ok(j) => out.write(&format!("{sep}{j}")),
                        Err(err) => eprintln!("pitr: error: cannot render JSON: {err}"),
                    }
                } else {
                    out.write(&render_event(&e));
                }
            })
            .await;
            let scan = match scan {
                Ok(s) => s,
                Err(e) => {
                    out.flush();
                    return Err(e.into());
                }
            };
            if g.json {
                let info = serde_json::to_string_pretty(&scan).unwrap_or_default();
                out.write(&format!("\n],\n\"scan\": {info}\n}}\n"));
            } else {
                out.write(&scan_line(&scan));
            }
            out.flush();
            warn(g, &scan);
        }
        WalCommand::Incidents(a) => {
            let cluster = open_cluster(g).await?;
            let opts = options(&a.range, Some(a.threshold))?;
            let plan = walscan::plan(&cluster, &opts).await?;
            let mut namer = Namer::new(&cluster, &plan, live_params(g, &a.range)).await;
            let log = walscan::log(&cluster, &plan, &opts, &mut namer).await?;
            warn(g, &log.scan);
            let ctx = CommandContext {
                program: "pitr".into(),
                repo: g.repo.clone().unwrap_or_default(),
                cluster: g.cluster.clone().filter(|c| c != DEFAULT_CLUSTER),
                extra: crate::s3::command_args(g),
            };
            let mut report = walscan::incidents(log, a.threshold, &ctx);
            // The undo works on the live cluster: the same -h -p -U as this command.
            let live = live_args(g);
            for i in &mut report.incidents {
                if let Some(u) = &mut i.undo {
                    u.push_str(&live);
                }
            }
            if g.json {
                print_json(&report);
            } else {
                out!("{}", scan_line(&report.scan));
                if report.incidents.is_empty() {
                    outln!(
                        "no incidents: no DROP or TRUNCATE, and no transaction deleted or updated more than {} rows of a table",
                        report.threshold
                    );
                }
                for i in &report.incidents {
                    let t = &i.transaction;
                    outln!();
                    outln!(
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
                        outln!("  {r}");
                    }
                    match &i.undo {
                        Some(u) => {
                            outln!("  undo with: {u}");
                            outln!("  or restore a whole copy: {}", i.restore_by_xid);
                        }
                        None => outln!("  undo with: {}", i.restore_by_xid),
                    }
                    outln!("         or: {}", i.restore_by_lsn);
                }
            }
        }
    }
    Ok(0)
}

/// Buffered stdout that stops quietly when the reader goes away (`| head`).
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    broken: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            w: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
            broken: false,
        }
    }

    fn write(&mut self, s: &str) {
        use std::io::Write;
        if !self.broken && self.w.write_all(s.as_bytes()).is_err() {
            self.broken = true;
        }
    }

    fn flush(&mut self) {
        use std::io::Write;
        if !self.broken && self.w.flush().is_err() {
            self.broken = true;
        }
    }
}

fn options(a: &WalRangeArgs, incidents: Option<u64>) -> Result<ScanOptions, CliError> {
    Ok(ScanOptions {
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
        incidents_only: incidents,
    })
}

/// ` -h HOST -p PORT -U USER` as given to this command (for the suggested `pitr undo`).
fn live_args(g: &GlobalArgs) -> String {
    let q = |s: &str| pitr_core::restore::conf::shell_quote(s);
    let mut out = String::new();
    if let Some(h) = &g.host {
        out.push_str(&format!(" -h {}", q(h)));
    }
    if let Some(p) = g.port {
        out.push_str(&format!(" -p {p}"));
    }
    if let Some(u) = &g.user {
        out.push_str(&format!(" -U {}", q(u)));
    }
    out
}

/// The running server is asked for names only when told where it is.
fn live_params(g: &GlobalArgs, a: &WalRangeArgs) -> Option<pitr_proto::ConnParams> {
    let told = g.host.is_some() || g.port.is_some() || g.user.is_some() || g.dbname.is_some();
    (!a.no_live && told).then(|| conn_params(g))
}

fn warn(g: &GlobalArgs, s: &ScanInfo) {
    if !g.quiet {
        for w in &s.warnings {
            eprintln!("pitr: warning: {w}");
        }
    }
}

fn scan_line(s: &ScanInfo) -> String {
    format!(
        "cluster {}, timeline {}: {} segments {}..{} ({:.1} MiB, {} records); {} at {}\n",
        s.cluster,
        s.timeline,
        s.segments,
        s.first_segment,
        s.last_segment,
        s.bytes as f64 / 1048576.0,
        s.records,
        s.end,
        s.end_lsn
    )
}

fn db_label(t: &TxnReport) -> String {
    match &t.database {
        Some(d) => d.name.clone().unwrap_or_else(|| format!("oid {}", d.oid)),
        None => "-".into(),
    }
}

fn render_event(e: &Event) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    match e {
        Event::Transaction(t) => {
            let _ = writeln!(
                o,
                "{:<12} {:<27} {:>10} {:<17} {:<12} {}",
                t.lsn.to_string(),
                t.time,
                t.xid,
                t.outcome,
                db_label(t),
                if t.relations.iter().all(|r| r.how().is_empty()) && t.truncated_oids.is_empty() {
                    "-"
                } else {
                    ""
                }
            );
            for r in &t.relations {
                let how = r.how();
                if !how.is_empty() {
                    let _ = writeln!(o, "    {}: {how}", r.label());
                }
            }
            for oid in &t.truncated_oids {
                let _ = writeln!(o, "    relation oid {oid}: TRUNCATE");
            }
        }
        Event::RestorePoint(r) => {
            let _ = writeln!(
                o,
                "{:<12} {:<27} {:>10} {:<17} {:<12} {:?}",
                r.lsn.to_string(),
                r.time,
                "",
                "restore point",
                "",
                r.name
            );
        }
        Event::Checkpoint(c) => {
            let _ = writeln!(
                o,
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
            );
        }
    }
    o
}
