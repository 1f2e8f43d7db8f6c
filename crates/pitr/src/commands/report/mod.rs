//! `pitr report --output FILE.html`: one self-contained page (inline CSS and SVG, no scripts,
//! no external assets) picturing the recovery window of the cluster ([`pitr_core::report`]),
//! with tables of the same facts below the picture.

mod svg;

use std::fmt::Write as _;

use pitr_core::{info, report};

use super::{open_repo, print_json, DEFAULT_CLUSTER};
use crate::cli::{GlobalArgs, ReportArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, a: ReportArgs) -> Result<u8, CliError> {
    let repo = open_repo(g).await?;
    let name = g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
    let inf = info::info(&repo).await?;
    let cluster = inf.clusters.iter().find(|c| c.name == name).ok_or_else(|| {
        CliError::Usage(format!(
            "repository {} has no cluster {name:?}\nhint: `pitr info` lists its clusters; pass --cluster NAME",
            inf.repository
        ))
    })?;
    let plan = report::plan(cluster, a.incidents.then_some(a.threshold)).ok_or_else(|| {
        CliError::Usage(format!(
            "cluster {name:?} has no WAL archived yet: nothing to picture\nhint: archive WAL (`pitr check`) and take a backup first"
        ))
    })?;
    let r = report::execute(&repo, &plan).await?;
    for w in &r.warnings {
        eprintln!("pitr: warning: {w}");
    }
    let page = html(&r, &inf.repository);
    let tmp = a.output.with_extension("html.tmp");
    std::fs::write(&tmp, page.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, &a.output))
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot write the report to {}: {e}\nhint: give --output a path in a writable directory",
                a.output.display()
            ))
        })?;
    if g.json {
        print_json(&r);
    } else {
        outln!("{}", a.output.display());
    }
    Ok(0)
}

/// Escapes text for HTML and XML.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:20px;color:#222;background:#fff}\
h1{font-size:20px}h2{font-size:16px;margin-top:24px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
svg text{font-size:12px;fill:#222}svg .tick{fill:#666;font-size:11px}svg .row{font-weight:600}\
svg .blabel{font-size:11px}svg .rp{font-size:11px;fill:#7a3fb0}.warn{color:#b00}\
.legend span{display:inline-block;margin-right:16px}.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}";

/// The page.
pub fn html(r: &report::WindowReport, repository: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pitr: recovery window of {c}</title><style>{STYLE}</style></head><body>\n\
         <h1>Recovery window of cluster {c}</h1>\n<p>repository {repo}; PostgreSQL {major}, system identifier {sid}; made {at}. Hover over a mark for its exact LSNs and times.</p>\n",
        c = esc(&r.cluster),
        repo = esc(repository),
        major = r.pg_major,
        sid = esc(&r.system_id),
        at = r.generated_at,
    );
    match r.window.as_ref().map(|w| w.to_string()) {
        Some(w) => {
            let _ = writeln!(h, "<p><b>{}</b></p>", esc(&w));
        }
        None => h.push_str("<p class=\"warn\">nothing reachable</p>\n"),
    }
    h.push_str(&svg::svg(r));
    h.push_str("\n<p class=\"legend\"><span><i class=\"sw\" style=\"background:#2e9d5b\"></i>recovery window</span><span><i class=\"sw\" style=\"background:#1f5fbf\"></i>full backup</span><span><i class=\"sw\" style=\"background:#7fb0f0\"></i>incremental backup</span><span><i class=\"sw\" style=\"background:#e39b2d\"></i>archived WAL</span><span><i class=\"sw\" style=\"background:#d33\"></i>gap / incident</span><span><i class=\"sw\" style=\"background:#7a3fb0\"></i>restore point</span></p>\n");
    for w in &r.warnings {
        let _ = writeln!(h, "<p class=\"warn\">warning: {}</p>", esc(w));
    }
    tables(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn tables(h: &mut String, r: &report::WindowReport) {
    h.push_str("<h2>Backups</h2><table><tr><th>label</th><th>type</th><th>timeline</th><th>start LSN</th><th>stop LSN</th><th>started</th><th>consistent at</th><th>size (MiB)</th></tr>\n");
    for b in &r.backups {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            esc(&b.label),
            esc(&b.kind),
            b.timeline,
            esc(&b.start_lsn),
            esc(&b.stop_lsn),
            esc(&b.start_time),
            esc(&b.stop_time),
            b.size as f64 / 1048576.0
        );
    }
    h.push_str("</table>\n<h2>Archived WAL</h2><table><tr><th>timeline</th><th>branched from</th><th>runs</th><th>gaps</th></tr>\n");
    for t in &r.timelines {
        let runs: Vec<String> = t
            .runs
            .iter()
            .map(|x| format!("{} .. {}", x.first, x.last))
            .collect();
        let gaps: Vec<String> = t
            .gaps
            .iter()
            .map(|x| format!("{} .. {}", x.first, x.last))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.timeline,
            match (t.parent, &t.branch_lsn) {
                (Some(p), Some(l)) => format!("{p} at {}", esc(l)),
                _ => "-".into(),
            },
            runs.join("<br>"),
            if gaps.is_empty() {
                "none".into()
            } else {
                gaps.join("<br>")
            }
        );
    }
    h.push_str("</table>\n");
    if !r.restore_points.is_empty() {
        h.push_str("<h2>Restore points</h2><table><tr><th>name</th><th>LSN</th><th>time</th><th>timeline</th></tr>\n");
        for p in &r.restore_points {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.lsn),
                p.time.map(|t| t.to_string()).unwrap_or_default(),
                p.timeline
            );
        }
        h.push_str("</table>\n");
    }
    if !r.incidents.is_empty() {
        h.push_str("<h2>Incidents</h2><table><tr><th>xid</th><th>time</th><th>commit LSN</th><th>what</th><th>undo with</th></tr>\n");
        for i in &r.incidents {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                i.transaction.xid,
                esc(&i.transaction.time),
                i.transaction.lsn,
                esc(&i.reasons.join("; ")),
                esc(&i.restore_by_xid)
            );
        }
        h.push_str("</table>\n");
    }
}
