//! `pitr status`.

use std::time::Duration;

use pitr_core::status::{self, StatusReport, StatusThresholds};

use super::{conn_params, print_json};
use crate::cli::{GlobalArgs, StatusArgs};
use crate::error::CliError;

/// Exit status when a threshold is exceeded (Nagios CRITICAL).
const EXIT_THRESHOLD: u8 = 2;

pub async fn run(g: &GlobalArgs, a: StatusArgs) -> Result<u8, CliError> {
    let mut limits = StatusThresholds::default();
    for v in &a.max_lag {
        match parse_limit(v)? {
            Limit::Bytes(b) => limits.max_lag_bytes = Some(b),
            Limit::Time(t) => limits.max_lag_time = Some(t),
        }
    }
    if let Some(v) = &a.max_archive_age {
        match parse_limit(v)? {
            Limit::Time(t) => limits.max_archive_age = Some(t),
            Limit::Bytes(_) => {
                return Err(CliError::Usage(format!(
                    "--max-archive-age {v:?} is not a duration\nhint: give a unit, e.g. 600s, 10min or 1h"
                )))
            }
        }
    }
    let client = pitr_proto::connect(&conn_params(g)).await?;
    let report = status::status(&client, &limits).await?;
    if g.json {
        print_json(&report);
    } else {
        render(&report, g.quiet);
    }
    Ok(if report.ok { 0 } else { EXIT_THRESHOLD })
}

/// A threshold.
#[derive(Debug, PartialEq)]
enum Limit {
    Bytes(u64),
    Time(Duration),
}

/// `16MB`, `1048576`, `512kB` (sizes, powers of 1024 as PostgreSQL counts) or `30s`, `5min`,
/// `1h`, `250ms` (durations).
fn parse_limit(v: &str) -> Result<Limit, CliError> {
    let t = v.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || {
        CliError::Usage(format!(
            "invalid threshold {v:?}\nhint: a size (1048576, 512kB, 16MB, 1GB) or a duration (250ms, 30s, 5min, 1h, 1d)"
        ))
    };
    let n: f64 = n.parse().map_err(|_| bad())?;
    let bytes = |mult: f64| Ok(Limit::Bytes((n * mult) as u64));
    let secs = |mult: f64| Ok(Limit::Time(Duration::from_secs_f64(n * mult)));
    match unit.trim() {
        "" | "B" => bytes(1.0),
        "kB" | "KB" | "k" => bytes(1024.0),
        "MB" | "M" => bytes(1024.0 * 1024.0),
        "GB" | "G" => bytes(1024.0 * 1024.0 * 1024.0),
        "TB" | "T" => bytes(1024f64.powi(4)),
        "ms" => secs(0.001),
        "s" | "sec" => secs(1.0),
        "min" => secs(60.0),
        "h" => secs(3600.0),
        "d" => secs(86400.0),
        _ => Err(bad()),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{s:.1}s"))
}

fn render(r: &StatusReport, quiet: bool) {
    if !quiet {
        println!(
            "{} ({}), {} at {}",
            r.server,
            r.version_num,
            r.role,
            opt(&r.current_lsn)
        );
        if let Some(rec) = &r.recovery {
            println!(
                "  recovery: received {} replayed {} lag {} bytes {}{}; WAL receiver {} from {} slot {}",
                opt(&rec.receive_lsn),
                opt(&rec.replay_lsn),
                opt(&rec.replay_lag_bytes),
                secs(rec.replay_lag_seconds),
                if rec.replay_paused { " (paused)" } else { "" },
                opt(&rec.receiver_status),
                opt(&rec.sender),
                opt(&rec.slot_name)
            );
        }
        if r.role == "primary" {
            println!("  standbys: {}", r.standbys.len());
        }
        for s in &r.standbys {
            println!(
                "    {} ({}): {} {}, lag write/flush/replay {}/{}/{} bytes, {}/{}/{}",
                s.application_name,
                s.client,
                s.state,
                s.sync_state,
                opt(&s.write_lag_bytes),
                opt(&s.flush_lag_bytes),
                opt(&s.replay_lag_bytes),
                secs(s.write_lag_seconds),
                secs(s.flush_lag_seconds),
                secs(s.replay_lag_seconds)
            );
        }
        println!("  slots: {}", r.slots.len());
        for s in &r.slots {
            println!(
                "    {} ({}, {}): restart {} retains {} bytes, wal_status {}",
                s.name,
                s.slot_type,
                if s.active { "active" } else { "inactive" },
                opt(&s.restart_lsn),
                opt(&s.retained_bytes),
                opt(&s.wal_status)
            );
        }
        let a = &r.archiver;
        println!(
            "  archiver (archive_mode {}): {} archived, last {} {} ago; {} failed{}{}; .ready backlog {}",
            a.archive_mode,
            a.archived_count,
            opt(&a.last_archived_wal),
            secs(a.last_archived_age_seconds),
            a.failed_count,
            a.last_failed_wal
                .as_ref()
                .map(|w| format!(", last {w}"))
                .unwrap_or_default(),
            if a.failing { " (FAILING now)" } else { "" },
            a.ready_count.map_or_else(
                || format!("unknown: {}", a.ready_unknown.as_deref().unwrap_or("")),
                |n| n.to_string()
            )
        );
    }
    for f in &r.failed {
        println!("CRITICAL: {f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_sizes_or_durations() {
        assert_eq!(parse_limit("1048576").unwrap(), Limit::Bytes(1 << 20));
        assert_eq!(parse_limit("16MB").unwrap(), Limit::Bytes(16 << 20));
        assert_eq!(parse_limit("512kB").unwrap(), Limit::Bytes(512 << 10));
        assert_eq!(
            parse_limit("30s").unwrap(),
            Limit::Time(Duration::from_secs(30))
        );
        assert_eq!(
            parse_limit("5min").unwrap(),
            Limit::Time(Duration::from_secs(300))
        );
        assert_eq!(
            parse_limit("250ms").unwrap(),
            Limit::Time(Duration::from_millis(250))
        );
        assert!(parse_limit("fast").is_err());
        assert!(parse_limit("3 parsecs").is_err());
    }
}
