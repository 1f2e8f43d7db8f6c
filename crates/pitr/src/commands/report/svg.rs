//! The SVG of the recovery window: one time axis; a row for the window, one for backups, one
//! per timeline (archived runs, gaps, branches, restore points) and one for incidents. Every
//! mark carries a `<title>` with its exact LSNs and times (the browser shows it on hover).

use std::fmt::Write;

use jiff::Timestamp;
use pitr_core::report::WindowReport;

use super::esc;

const W: f64 = 1160.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 56.0;

/// Maps times to x.
struct Axis {
    t0: f64,
    t1: f64,
}

impl Axis {
    fn new(r: &WindowReport) -> Axis {
        let mut ts: Vec<f64> = Vec::new();
        for b in &r.backups {
            ts.extend(
                [secs_str(&b.start_time), secs_str(&b.stop_time)]
                    .into_iter()
                    .flatten(),
            );
        }
        for t in &r.timelines {
            for run in &t.runs {
                ts.extend(run.start_time.map(secs));
                ts.extend(run.end_time.map(secs));
            }
        }
        ts.extend(r.restore_points.iter().filter_map(|p| p.time.map(secs)));
        ts.extend(
            r.incidents
                .iter()
                .filter_map(|i| secs_str(&i.transaction.time)),
        );
        let lo = ts.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.04).max(5.0);
        Axis {
            t0: lo - pad,
            t1: hi + pad,
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t0) / (self.t1 - self.t0) * (W - LEFT - RIGHT)
    }
}

fn secs(t: Timestamp) -> f64 {
    t.as_microsecond() as f64 / 1e6
}

fn secs_str(s: &str) -> Option<f64> {
    s.parse::<Timestamp>().ok().map(secs)
}

fn show(t: f64) -> String {
    Timestamp::from_microsecond((t * 1e6) as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The whole `<svg>` element.
pub fn svg(r: &WindowReport) -> String {
    let a = Axis::new(r);
    let rows = 3 + r.timelines.len();
    let h = 40.0 + ROW * rows as f64 + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="window" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img" aria-label="recovery window of cluster {}">"#,
        esc(&r.cluster)
    );
    s.push_str(r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde2e2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d33" stroke-width="3"/></pattern></defs>"##);
    axis(&mut s, &a, h);
    let mut y = 40.0;
    window_row(&mut s, &a, r, y);
    y += ROW;
    backup_row(&mut s, &a, r, y);
    y += ROW;
    for (i, t) in r.timelines.iter().enumerate() {
        timeline_row(&mut s, &a, r, i, y);
        let _ = t;
        y += ROW;
    }
    incident_row(&mut s, &a, r, y);
    s.push_str("</svg>");
    s
}

fn label(s: &mut String, y: f64, text: &str) {
    let _ = write!(
        s,
        r#"<text x="8" y="{}" class="row">{}</text>"#,
        y + ROW / 2.0,
        esc(text)
    );
}

fn axis(s: &mut String, a: &Axis, h: f64) {
    let n = 6;
    for i in 0..=n {
        let t = a.t0 + (a.t1 - a.t0) * i as f64 / n as f64;
        let x = a.x(t);
        let text = show(t);
        // 2025-07-10T12:36:52Z -> "07-10 12:36:52"
        let short = text.get(5..19).unwrap_or(&text).replace('T', " ");
        let anchor = match i {
            0 => "start",
            _ if i == n => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="30" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="20" class="tick" text-anchor="{anchor}">{short}<title>{text}</title></text>"##,
            h - 20.0
        );
    }
}

fn window_row(s: &mut String, a: &Axis, r: &WindowReport, y: f64) {
    label(s, y, "recovery window");
    let Some(w) = &r.window else { return };
    let (Some(from), Some(to)) = (&w.from, &w.to) else {
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{}" class="warn">nothing reachable</text>"#,
            y + ROW / 2.0
        );
        return;
    };
    // The end: the latest time in the WAL of the window's end timeline.
    let end = r
        .timelines
        .iter()
        .filter(|t| t.timeline == to.timeline)
        .flat_map(|t| t.runs.iter().filter_map(|run| run.end_time))
        .max()
        .map(secs)
        .unwrap_or(a.t1);
    let x0 = a.x(secs(from.time));
    let x1 = a.x(end).max(x0 + 2.0);
    let _ = write!(
        s,
        r##"<rect class="window" x="{x0:.1}" y="{:.1}" width="{:.1}" height="22" fill="#2e9d5b" rx="3"><title>recovery window: from {} / {} (backup {} consistent) to {} on timeline {} (end of archived WAL, last time {})</title></rect>"##,
        y + 14.0,
        x1 - x0,
        from.time,
        esc(&from.lsn),
        esc(&from.backup),
        esc(&to.lsn),
        to.timeline,
        show(end)
    );
}

fn backup_row(s: &mut String, a: &Axis, r: &WindowReport, y: f64) {
    label(s, y, "backups");
    for (i, b) in r.backups.iter().enumerate() {
        let (Some(t0), Some(t1)) = (secs_str(&b.start_time), secs_str(&b.stop_time)) else {
            continue;
        };
        let x0 = a.x(t0);
        let w = (a.x(t1) - x0).max(4.0);
        let (fill, kind) = if b.kind == "full" {
            ("#1f5fbf", "full")
        } else {
            ("#7fb0f0", "incremental")
        };
        // Labels under the bars, on alternating lines so neighbours do not overlap.
        let ty = y + 36.0 + 12.0 * (i % 2) as f64;
        let _ = write!(
            s,
            r#"<g class="backup" data-label="{l}"><rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{}" fill="{fill}"/><text x="{:.1}" y="{:.1}" class="blabel">{l}</text><title>{kind} backup {l} on timeline {}: start {} at {}, consistent {} at {}; {} bytes ({} stored), {} files</title></g>"#,
            y + 4.0,
            22.0,
            x0,
            ty,
            b.timeline,
            esc(&b.start_lsn),
            esc(&b.start_time),
            esc(&b.stop_lsn),
            esc(&b.stop_time),
            b.size,
            b.stored_size,
            b.files,
            l = esc(&b.label),
        );
    }
}

fn timeline_row(s: &mut String, a: &Axis, r: &WindowReport, i: usize, y: f64) {
    let t = &r.timelines[i];
    label(s, y, &format!("WAL timeline {}", t.timeline));
    let mid = y + ROW / 2.0;
    for run in &t.runs {
        let (Some(t0), Some(t1)) = (run.start_time, run.end_time) else {
            continue;
        };
        let x0 = a.x(secs(t0));
        let w = (a.x(secs(t1)) - x0).max(3.0);
        let _ = write!(
            s,
            r##"<rect class="wal" x="{x0:.1}" y="{:.1}" width="{w:.1}" height="16" fill="#e39b2d"><title>archived WAL on timeline {}: {} .. {} (LSN {} .. {}), {} .. {}</title></rect>"##,
            mid - 8.0,
            t.timeline,
            run.first,
            run.last,
            run.start_lsn,
            run.end_lsn,
            t0,
            t1
        );
    }
    for g in &t.gaps {
        let x0 = g.start_time.map(|t| a.x(secs(t))).unwrap_or(LEFT);
        let x1 = g.end_time.map(|t| a.x(secs(t))).unwrap_or(x0 + 8.0);
        let _ = write!(
            s,
            r##"<rect class="gap" x="{x0:.1}" y="{:.1}" width="{:.1}" height="24" fill="url(#hatch)" stroke="#d33"><title>gap on timeline {}: missing {} .. {} (LSN {} .. {}): recovery cannot cross it</title></rect>"##,
            mid - 12.0,
            (x1 - x0).max(6.0),
            t.timeline,
            g.first,
            g.last,
            g.start_lsn,
            g.end_lsn
        );
    }
    if let (Some(parent), Some(pi)) = (
        t.parent,
        r.timelines
            .iter()
            .position(|p| Some(p.timeline) == t.parent),
    ) {
        if let Some(t0) = t.runs.first().and_then(|run| run.start_time) {
            let x = a.x(secs(t0));
            let py = 40.0 + ROW * (2 + pi) as f64 + ROW / 2.0;
            let _ = write!(
                s,
                r##"<path class="branch" d="M{x:.1},{py:.1} C{:.1},{py:.1} {x:.1},{mid:.1} {:.1},{mid:.1}" stroke="#555" stroke-width="2" fill="none"><title>timeline {} branched from timeline {parent} at LSN {}</title></path>"##,
                x - 20.0,
                x + 2.0,
                t.timeline,
                t.branch_lsn.as_deref().unwrap_or("?")
            );
        }
    }
    for p in r.restore_points.iter().filter(|p| p.timeline == t.timeline) {
        let Some(tp) = p.time else { continue };
        let x = a.x(secs(tp));
        let _ = write!(
            s,
            r##"<g class="restore-point"><polygon points="{x:.1},{:.1} {:.1},{mid:.1} {x:.1},{:.1} {:.1},{mid:.1}" fill="#7a3fb0"/><text x="{x:.1}" y="{:.1}" class="rp" text-anchor="middle">{n}</text><title>restore point {n}: LSN {} at {}</title></g>"##,
            mid - 9.0,
            x + 7.0,
            mid + 9.0,
            x - 7.0,
            mid + 21.0,
            p.lsn,
            tp,
            n = esc(&p.name)
        );
    }
}

fn incident_row(s: &mut String, a: &Axis, r: &WindowReport, y: f64) {
    label(s, y, "incidents");
    for i in &r.incidents {
        let t = &i.transaction;
        let Some(ts) = secs_str(&t.time) else {
            continue;
        };
        let x = a.x(ts);
        let _ = write!(
            s,
            r##"<g class="incident"><polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="#d33"/><title>incident: xid {} at {} (commit LSN {}): {}; undo with: {}</title></g>"##,
            y + 12.0,
            x + 9.0,
            y + 30.0,
            x - 9.0,
            y + 30.0,
            t.xid,
            esc(&t.time),
            t.lsn,
            esc(&i.reasons.join("; ")),
            esc(&i.restore_by_xid)
        );
    }
}
