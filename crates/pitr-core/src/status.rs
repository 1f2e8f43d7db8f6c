//! `pitr status`: replication and archiving as the server sees them.
//!
//! On a primary: every standby (and WAL receiver such as `pg_receivewal`) from
//! `pg_stat_replication`, every slot from `pg_replication_slots`, the archiver from
//! `pg_stat_archiver` and the `.ready` backlog from `pg_ls_archive_statusdir()` (superuser or
//! `pg_monitor`; reported as unknown otherwise). On a standby: received and replayed
//! positions, the replay delay and the WAL receiver. Thresholds (`max_lag_*`,
//! `max_archive_age`) turn the report into a check whose failures are listed in `failed`.
//!
//! Every query selects text and is parsed here, so one code path serves 14 to 18.

use std::time::Duration;

use pitr_pg::Lsn;
use pitr_proto::{PgClient, ProtoError};
use serde::Serialize;

/// Thresholds that make `status` a check.
#[derive(Debug, Clone, Default)]
pub struct StatusThresholds {
    /// Largest replay lag in bytes: of each standby on a primary, of replay behind receive on
    /// a standby.
    pub max_lag_bytes: Option<u64>,
    /// Largest replay lag in time, as `max_lag_bytes`.
    pub max_lag_time: Option<Duration>,
    /// Oldest acceptable last successful archiving.
    pub max_archive_age: Option<Duration>,
}

/// A standby (or other WAL receiver) connected to a primary.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyLink {
    /// Its `application_name` (`walreceiver` unless `primary_conninfo` sets one).
    pub application_name: String,
    /// Client address, or `local` for a Unix socket.
    pub client: String,
    /// `streaming`, `catchup`, `backup`, `startup`, `stopping`.
    pub state: String,
    /// `async`, `sync`, `potential`, `quorum`.
    pub sync_state: String,
    /// Last positions it reported.
    pub sent_lsn: Option<String>,
    /// Written.
    pub write_lsn: Option<String>,
    /// Flushed.
    pub flush_lsn: Option<String>,
    /// Replayed.
    pub replay_lsn: Option<String>,
    /// Bytes between the primary's current position and what it wrote.
    pub write_lag_bytes: Option<u64>,
    /// ... flushed.
    pub flush_lag_bytes: Option<u64>,
    /// ... replayed.
    pub replay_lag_bytes: Option<u64>,
    /// Seconds the server measured for recent WAL to be written (NULL when idle).
    pub write_lag_seconds: Option<f64>,
    /// ... flushed.
    pub flush_lag_seconds: Option<f64>,
    /// ... replayed.
    pub replay_lag_seconds: Option<f64>,
}

/// A replication slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Name.
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// A receiver is using it.
    pub active: bool,
    /// Oldest WAL it keeps.
    pub restart_lsn: Option<String>,
    /// WAL the server keeps for it: from `restart_lsn` to the current position.
    pub retained_bytes: Option<u64>,
    /// `reserved`, `extended`, `unreserved`, `lost`.
    pub wal_status: Option<String>,
}

/// The archiver.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiverReport {
    /// `archive_mode`.
    pub archive_mode: String,
    /// Segments archived since the statistics were reset.
    pub archived_count: u64,
    /// Last file archived.
    pub last_archived_wal: Option<String>,
    /// When (RFC 3339).
    pub last_archived_time: Option<String>,
    /// Seconds since then.
    pub last_archived_age_seconds: Option<f64>,
    /// Failed attempts.
    pub failed_count: u64,
    /// Last file that failed.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_time: Option<String>,
    /// The last attempt failed (a failure newer than the last success).
    pub failing: bool,
    /// Segments waiting for archiving (`.ready` files); `None` when not readable.
    pub ready_count: Option<u64>,
    /// Why `ready_count` is unknown.
    pub ready_unknown: Option<String>,
}

/// Positions of a standby.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryStatus {
    /// Last WAL received and flushed by the WAL receiver (NULL when it never streamed).
    pub receive_lsn: Option<String>,
    /// Last WAL replayed.
    pub replay_lsn: Option<String>,
    /// Received but not replayed.
    pub replay_lag_bytes: Option<u64>,
    /// Seconds since the last replayed transaction committed on the primary, 0 when
    /// everything received is replayed.
    pub replay_lag_seconds: Option<f64>,
    /// Replay is paused.
    pub replay_paused: bool,
    /// The WAL receiver's state (`streaming`, …), `None` when none runs.
    pub receiver_status: Option<String>,
    /// The primary it streams from.
    pub sender: Option<String>,
    /// Its slot on the primary.
    pub slot_name: Option<String>,
}

/// What `pitr status` found.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The server.
    pub server: String,
    /// `server_version_num`.
    pub version_num: u32,
    /// `primary` or `standby`.
    pub role: &'static str,
    /// The current WAL position (write position on a primary, replay on a standby).
    pub current_lsn: Option<String>,
    /// Standbys connected to a primary.
    pub standbys: Vec<StandbyLink>,
    /// Replication slots.
    pub slots: Vec<SlotStatus>,
    /// The archiver.
    pub archiver: ArchiverReport,
    /// On a standby, its positions.
    pub recovery: Option<RecoveryStatus>,
    /// Thresholds exceeded (empty when none, or none given).
    pub failed: Vec<String>,
    /// No threshold exceeded.
    pub ok: bool,
}

type Rows = Vec<Vec<Option<String>>>;

fn col(row: &[Option<String>], i: usize) -> Option<String> {
    row.get(i).cloned().flatten()
}

fn num<T: std::str::FromStr>(row: &[Option<String>], i: usize) -> Option<T> {
    col(row, i).and_then(|v| v.trim().parse().ok())
}

/// Byte difference of two text LSNs, as `pg_wal_lsn_diff` (never negative).
fn lsn_diff(to: Option<&str>, from: Option<&str>) -> Option<u64> {
    let to: Lsn = to?.parse().ok()?;
    let from: Lsn = from?.parse().ok()?;
    Some(to.0.saturating_sub(from.0))
}

/// Reads the status of the server `client` is connected to and applies `limits`.
pub async fn status(
    client: &PgClient,
    limits: &StatusThresholds,
) -> Result<StatusReport, ProtoError> {
    let head = client
        .query_text(
            "pg_is_in_recovery",
            "select pg_is_in_recovery()::text,
                    case when pg_is_in_recovery() then pg_last_wal_replay_lsn()::text
                         else pg_current_wal_lsn()::text end,
                    current_setting('archive_mode')",
        )
        .await?;
    let head = head.first().cloned().unwrap_or_default();
    let standby = col(&head, 0).as_deref() == Some("true");
    let current = col(&head, 1);
    let archive_mode = col(&head, 2).unwrap_or_default();
    let recovery = if standby {
        Some(recovery_status(client).await?)
    } else {
        None
    };
    // On a standby, a slot retains WAL from its restart_lsn to what was received.
    let reference = recovery
        .as_ref()
        .and_then(|r| r.receive_lsn.clone())
        .or_else(|| current.clone());
    let mut report = StatusReport {
        server: client.endpoint().to_string(),
        version_num: client.version_num(),
        role: if standby { "standby" } else { "primary" },
        current_lsn: current.clone(),
        standbys: if standby {
            Vec::new()
        } else {
            standbys(client, current.as_deref()).await?
        },
        slots: slots(client, reference.as_deref()).await?,
        archiver: archiver(client, archive_mode).await?,
        recovery,
        failed: Vec::new(),
        ok: true,
    };
    report.failed = evaluate(&report, limits);
    report.ok = report.failed.is_empty();
    Ok(report)
}

async fn standbys(
    client: &PgClient,
    current: Option<&str>,
) -> Result<Vec<StandbyLink>, ProtoError> {
    let rows: Rows = client
        .query_text(
            "pg_stat_replication",
            "select application_name, coalesce(host(client_addr), 'local'), state, sync_state,
                    sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
                    extract(epoch from write_lag)::text, extract(epoch from flush_lag)::text,
                    extract(epoch from replay_lag)::text
               from pg_stat_replication order by application_name, pid",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (write, flush, replay) = (col(r, 5), col(r, 6), col(r, 7));
            StandbyLink {
                application_name: col(r, 0).unwrap_or_default(),
                client: col(r, 1).unwrap_or_default(),
                state: col(r, 2).unwrap_or_default(),
                sync_state: col(r, 3).unwrap_or_default(),
                sent_lsn: col(r, 4),
                write_lag_bytes: lsn_diff(current, write.as_deref()),
                flush_lag_bytes: lsn_diff(current, flush.as_deref()),
                replay_lag_bytes: lsn_diff(current, replay.as_deref()),
                write_lsn: write,
                flush_lsn: flush,
                replay_lsn: replay,
                write_lag_seconds: num(r, 8),
                flush_lag_seconds: num(r, 9),
                replay_lag_seconds: num(r, 10),
            }
        })
        .collect())
}

async fn slots(client: &PgClient, reference: Option<&str>) -> Result<Vec<SlotStatus>, ProtoError> {
    let rows: Rows = client
        .query_text(
            "pg_replication_slots",
            "select slot_name::text, slot_type, active::text, restart_lsn::text, wal_status
               from pg_replication_slots order by slot_name",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let restart = col(r, 3);
            SlotStatus {
                name: col(r, 0).unwrap_or_default(),
                slot_type: col(r, 1).unwrap_or_default(),
                active: col(r, 2).as_deref() == Some("true"),
                retained_bytes: lsn_diff(reference, restart.as_deref()),
                restart_lsn: restart,
                wal_status: col(r, 4),
            }
        })
        .collect())
}

async fn archiver(client: &PgClient, archive_mode: String) -> Result<ArchiverReport, ProtoError> {
    let rows = client
        .query_text(
            "pg_stat_archiver",
            "select archived_count::text, last_archived_wal,
                    to_char(last_archived_time at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    extract(epoch from now() - last_archived_time)::text,
                    failed_count::text, last_failed_wal,
                    to_char(last_failed_time at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    (coalesce(last_failed_time > last_archived_time, last_failed_time is not null))::text
               from pg_stat_archiver",
        )
        .await?;
    let r = rows.first().cloned().unwrap_or_default();
    // Reading the archive status directory needs superuser or pg_monitor.
    let (ready_count, ready_unknown) = match client
        .query_text(
            "pg_ls_archive_statusdir",
            "select count(*)::text from pg_ls_archive_statusdir() where name like '%.ready'",
        )
        .await
    {
        Ok(rows) => (rows.first().and_then(|r| num(r, 0)), None),
        Err(e) => {
            tracing::debug!("pg_ls_archive_statusdir: {e}");
            (
                None,
                Some(
                    "pg_ls_archive_statusdir() is not allowed for this role (grant pg_monitor)"
                        .into(),
                ),
            )
        }
    };
    Ok(ArchiverReport {
        archive_mode,
        archived_count: num(&r, 0).unwrap_or(0),
        last_archived_wal: col(&r, 1),
        last_archived_time: col(&r, 2),
        last_archived_age_seconds: num(&r, 3),
        failed_count: num(&r, 4).unwrap_or(0),
        last_failed_wal: col(&r, 5),
        last_failed_time: col(&r, 6),
        failing: col(&r, 7).as_deref() == Some("true"),
        ready_count,
        ready_unknown,
    })
}

async fn recovery_status(client: &PgClient) -> Result<RecoveryStatus, ProtoError> {
    let rows = client
        .query_text(
            "recovery status",
            "select pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
                    case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then '0'
                         else extract(epoch from now() - pg_last_xact_replay_timestamp())::text end,
                    pg_is_wal_replay_paused()::text,
                    (select status from pg_stat_wal_receiver),
                    (select sender_host || ':' || sender_port from pg_stat_wal_receiver),
                    (select slot_name from pg_stat_wal_receiver)",
        )
        .await?;
    let r = rows.first().cloned().unwrap_or_default();
    let (receive, replay) = (col(&r, 0), col(&r, 1));
    Ok(RecoveryStatus {
        replay_lag_bytes: lsn_diff(receive.as_deref(), replay.as_deref()),
        receive_lsn: receive,
        replay_lsn: replay,
        replay_lag_seconds: num(&r, 2),
        replay_paused: col(&r, 3).as_deref() == Some("true"),
        receiver_status: col(&r, 4),
        sender: col(&r, 5),
        slot_name: col(&r, 6),
    })
}

/// The thresholds `report` exceeds, one message each.
fn evaluate(report: &StatusReport, limits: &StatusThresholds) -> Vec<String> {
    let mut failed = Vec::new();
    let lag_limits = limits.max_lag_bytes.is_some() || limits.max_lag_time.is_some();
    let mut lag = |who: &str, bytes: Option<u64>, seconds: Option<f64>| {
        if let (Some(max), Some(b)) = (limits.max_lag_bytes, bytes) {
            if b > max {
                failed.push(format!("{who}: replay lag {b} bytes > {max}"));
            }
        }
        if let (Some(max), Some(s)) = (limits.max_lag_time, seconds) {
            if s > max.as_secs_f64() {
                failed.push(format!(
                    "{who}: replay lag {s:.1} s > {} s",
                    max.as_secs_f64()
                ));
            }
        }
    };
    if lag_limits {
        match &report.recovery {
            Some(r) => {
                lag("this standby", r.replay_lag_bytes, r.replay_lag_seconds);
                if r.receiver_status.as_deref() != Some("streaming") {
                    failed.push(format!(
                        "this standby is not streaming (WAL receiver: {})",
                        r.receiver_status.as_deref().unwrap_or("not running")
                    ));
                }
            }
            None if report.standbys.is_empty() => {
                failed.push("no standby is connected to this primary".into());
            }
            None => {
                for s in &report.standbys {
                    let who = format!("standby {:?} ({})", s.application_name, s.client);
                    lag(&who, s.replay_lag_bytes, s.replay_lag_seconds);
                }
            }
        }
    }
    if let Some(max) = limits.max_archive_age {
        let a = &report.archiver;
        match a.last_archived_age_seconds {
            _ if a.archive_mode == "off" => failed.push("archive_mode is off".into()),
            None => failed.push("nothing has been archived yet".into()),
            Some(age) if age > max.as_secs_f64() => failed.push(format!(
                "last archived {} {age:.0} s ago > {} s",
                a.last_archived_wal.as_deref().unwrap_or("?"),
                max.as_secs_f64()
            )),
            Some(_) => {}
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_differences_are_bytes_and_never_negative() {
        assert_eq!(lsn_diff(Some("0/3000100"), Some("0/3000000")), Some(256));
        assert_eq!(lsn_diff(Some("1/0"), Some("0/FFFFFFFF")), Some(1));
        assert_eq!(lsn_diff(Some("0/10"), Some("0/20")), Some(0));
        assert_eq!(lsn_diff(None, Some("0/20")), None);
    }
}
