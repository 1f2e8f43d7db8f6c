//! `pitr info`.

use pitr_core::info;

use super::{open_repo, print_json};
use crate::cli::{GlobalArgs, InfoArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, _a: InfoArgs) -> Result<u8, CliError> {
    let repo = open_repo(g)?;
    let report = info::info(&repo).await?;
    if g.json {
        print_json(&report);
        return Ok(0);
    }
    println!("repository: {}", report.repository);
    if report.clusters.is_empty() {
        println!("  no clusters yet (nothing archived)");
    }
    for c in &report.clusters {
        if let Some(wanted) = &g.cluster {
            if wanted != &c.name {
                continue;
            }
        }
        match &c.identity {
            Some(id) => println!(
                "cluster {}: PostgreSQL {}, system identifier {}, WAL segment size {} MB",
                c.name,
                id.pg_major,
                id.system_id,
                id.wal_seg_size >> 20
            ),
            None => println!("cluster {}: identity not recorded yet", c.name),
        }
        println!(
            "  {:<9} {:>8}  {:<24}  {:<24}  {:>10}  gaps",
            "timeline", "segments", "first", "last", "stored"
        );
        for t in &c.timelines {
            println!(
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
    }
    Ok(0)
}

fn human_bytes(b: u64) -> String {
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
