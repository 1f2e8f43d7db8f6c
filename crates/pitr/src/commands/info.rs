//! `pitr info`.

use pitr_core::info::{self, ClusterInfo};
use pitr_pg::{Lsn, WalFileName, WalSegSize};

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
    match &report.encryption {
        Some(e) => outln!("encryption: {e}"),
        None => outln!("encryption: none"),
    }
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
                "cluster {}: PostgreSQL {}, system identifier {}, WAL segment size {} MiB",
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
                    match (b.pinned, b.checksum_failures) {
                        (true, 0) => "  pinned".to_string(),
                        (true, n) => format!("  pinned ({n} page checksum failures!)"),
                        (false, 0) => String::new(),
                        (false, n) => format!("  ({n} page checksum failures!)"),
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
        if let Some(st) = &c.streamed {
            outln!(
                "  streamed WAL ends at {} (timeline {}, {} of segment {} received{})",
                st.end_lsn,
                st.timeline,
                human_bytes(st.bytes),
                st.segment,
                st.age_seconds
                    .map(|a| format!(", written {a:.0} s ago"))
                    .unwrap_or_default()
            );
        }
        if let Some(strip) = window_strip(c, 60) {
            outln!("  {strip}");
        }
        for p in &c.window_problems {
            outln!("  PROBLEM {}: {}", p.object, p.problem);
        }
        for b in &c.timeline_warnings {
            outln!("  WARNING {}", b.message.replace('\n', "\n  "));
        }
    }
    Ok(0)
}

/// The window in one line, on an LSN axis from the first archived segment to the end of the
/// last: `=` recoverable WAL, `-` archived WAL before the window, `!` a gap, `F`/`i` where a
/// full/incremental backup becomes consistent.
fn window_strip(c: &ClusterInfo, width: usize) -> Option<String> {
    let size = WalSegSize::new(c.identity.as_ref()?.wal_seg_size).ok()?;
    let start = |n: &str| -> Option<u64> {
        let f = WalFileName::parse(n).ok()?;
        size.start_of(f.segno(size)?).map(|l| l.0)
    };
    let end = |n: &str| start(n).map(|l| l + size.bytes());
    let lo = c
        .timelines
        .iter()
        .filter_map(|t| start(t.first.as_deref()?))
        .min()?;
    let hi = c
        .timelines
        .iter()
        .filter_map(|t| end(t.last.as_deref()?))
        .max()?;
    let span = (hi - lo).max(1) as f64;
    let cell = |lsn: u64| {
        (((lsn.saturating_sub(lo)) as f64 / span * width as f64) as usize).min(width - 1)
    };
    let mut line = vec![' '; width];
    let win = c.window.as_ref();
    let parse = |s: &str| s.parse::<Lsn>().ok().map(|l| l.0);
    let w_from = win
        .and_then(|w| w.from.as_ref())
        .and_then(|f| parse(&f.lsn));
    let w_to = win.and_then(|w| w.to.as_ref()).and_then(|t| parse(&t.lsn));
    for t in &c.timelines {
        let (Some(a), Some(b)) = (
            t.first.as_deref().and_then(start),
            t.last.as_deref().and_then(end),
        ) else {
            continue;
        };
        for (i, ch) in line
            .iter_mut()
            .enumerate()
            .take(cell(b - 1) + 1)
            .skip(cell(a))
        {
            let at = lo + (i as f64 / width as f64 * span) as u64;
            let inside = matches!((w_from, w_to), (Some(f), Some(e)) if at + (span / width as f64) as u64 >= f && at < e);
            if *ch != '=' {
                *ch = if inside { '=' } else { '-' };
            }
        }
        for [ga, gb] in &t.gaps {
            if let (Some(a), Some(b)) = (start(ga), end(gb)) {
                for ch in line.iter_mut().take(cell(b - 1) + 1).skip(cell(a)) {
                    *ch = '!';
                }
            }
        }
    }
    for b in &c.backups {
        if let Some(l) = parse(&b.stop_lsn).filter(|l| (lo..hi).contains(l)) {
            line[cell(l)] = if b.kind == "full" { 'F' } else { 'i' };
        }
    }
    Some(format!(
        "{} |{}| {}   (F full, i incremental backup; = recoverable, - before the window, ! gap)",
        Lsn(lo),
        line.into_iter().collect::<String>(),
        Lsn(hi)
    ))
}

pub(crate) fn human_bytes(b: u64) -> String {
    // IEC units, as indicatif's progress lines print them: one convention everywhere.
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
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
