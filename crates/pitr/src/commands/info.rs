//! `pitr info`.

use pitr_core::info;

use super::{open_repo, print_json};
use crate::cli::{GlobalArgs, InfoArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, _a: InfoArgs) -> Result<u8, CliError> {
    let repo = open_repo(g).await?;
    let report = info::info(&repo).await?;
    if g.json {
        print_json(&report);
        return Ok(0);
    }
    outln!("repository: {}", report.repository);
    if report.clusters.is_empty() {
        outln!("  no clusters yet (nothing archived)");
    }
    for c in &report.clusters {
        if let Some(wanted) = &g.cluster {
            if wanted != &c.name {
                continue;
            }
        }
        match &c.identity {
            Some(id) => outln!(
                "cluster {}: PostgreSQL {}, system identifier {}, WAL segment size {} MB",
                c.name,
                id.pg_major,
                id.system_id,
                id.wal_seg_size >> 20
            ),
            None => outln!("cluster {}: identity not recorded yet", c.name),
        }
        outln!(
            "  {:<9} {:>8}  {:<24}  {:<24}  {:>10}  gaps",
            "timeline",
            "segments",
            "first",
            "last",
            "stored"
        );
        for t in &c.timelines {
            outln!(
                "  {:<9} {:>8}  {:<24}  {:<24}  {:>10}  {}",
                t.timeline,
                t.segments,
                t.first.as_deref().unwrap_or("-"),
                t.last.as_deref().unwrap_or("-"),
                human_bytes(t.stored_bytes),
                if t.gaps.is_empty() {
                    "none".to_string()
                } else {
                    t.gaps
                        .iter()
                        .map(|[a, b]| format!("{a}..{b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        if c.backups.is_empty() {
            outln!("  no base backups (take one with `pitr backup`)");
        } else {
            outln!(
                "  {:<18} {:<5} {:>3}  {:<12} {:<12} {:<26} {:>10} {:>10}",
                "backup",
                "type",
                "tli",
                "start lsn",
                "stop lsn",
                "consistent at",
                "size",
                "stored"
            );
            for b in &c.backups {
                outln!(
                    "  {:<18} {:<5} {:>3}  {:<12} {:<12} {:<26} {:>10} {:>10}{}",
                    b.label,
                    b.kind,
                    b.timeline,
                    b.start_lsn,
                    b.stop_lsn,
                    b.stop_time,
                    human_bytes(b.size),
                    human_bytes(b.stored_size),
                    if b.checksum_failures > 0 {
                        format!("  ({} page checksum failures!)", b.checksum_failures)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(w) = &c.window {
            // "reachable: from … to …", the window restore refusals quote.
            outln!(
                "  recovery window: {}",
                w.to_string().trim_start_matches("reachable: ")
            );
        }
        for p in &c.window_problems {
            outln!("  PROBLEM {}: {}", p.object, p.problem);
        }
    }
    Ok(0)
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
