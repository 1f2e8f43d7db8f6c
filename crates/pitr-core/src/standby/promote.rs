//! `pitr standby promote`: `pg_ctl promote` on a running standby, then wait until it takes
//! writes (a transaction ID can be assigned) and report the new timeline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::local::{self, connect_local, current_timeline, owner_for, query_one};
use super::StandbyError;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// The standby's data directory.
    pub pgdata: PathBuf,
    /// `--pg-bin`.
    pub pg_bin: Option<PathBuf>,
    /// How long to wait for writes.
    pub timeout: Duration,
}

/// What was done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PromoteReport {
    /// The data directory.
    pub pgdata: PathBuf,
    /// The timeline it replayed before.
    pub previous_timeline: Option<u32>,
    /// The timeline it writes on now.
    pub timeline: u32,
    /// Its WAL insert position once it took writes.
    pub lsn: String,
    /// Seconds from `pg_ctl promote` until writes were accepted.
    pub seconds: f64,
}

/// Promotes the standby running on `opts.pgdata`; refused when no server runs there or it is
/// not a standby.
pub async fn promote(opts: &PromoteOptions) -> Result<PromoteReport, StandbyError> {
    let pgdata =
        std::path::absolute(&opts.pgdata).map_err(StandbyError::io("resolve", &opts.pgdata))?;
    let major = local::pgdata_major(&pgdata)?;
    if pitr_os::running_postmaster(&pgdata).is_none() {
        return Err(StandbyError::NotRunning { pgdata });
    }
    let owner = owner_for(&pgdata, None)?;
    let client = connect_local(&pgdata, owner.as_ref()).await?;
    let in_recovery = query_one(
        &client,
        "pg_is_in_recovery",
        "SELECT pg_is_in_recovery()::text",
    )
    .await?;
    if in_recovery.as_deref() != Some("true") {
        return Err(StandbyError::NotStandby { pgdata });
    }
    let previous = query_one(
        &client,
        "timeline before promotion",
        "SELECT COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), \
         (SELECT timeline_id FROM pg_control_checkpoint()))::text",
    )
    .await?
    .and_then(|v| v.parse().ok());
    let bindir = local::bindir(opts.pg_bin.as_deref(), major, &["pg_ctl"])?;
    let t0 = Instant::now();
    local::run_program(
        &bindir.join("pg_ctl"),
        &["-D".as_ref(), pgdata.as_os_str(), "promote".as_ref()],
        owner.as_ref(),
        &pgdata,
        None,
    )?;
    let lsn = loop {
        let writable = query_one(
            &client,
            "pg_is_in_recovery",
            "SELECT (NOT pg_is_in_recovery())::text",
        )
        .await?;
        if writable.as_deref() == Some("true") {
            // Assigning a transaction ID writes WAL: it fails on a server that does not take
            // writes.
            let lsn = query_one(
                &client,
                "a write after promotion",
                "SELECT pg_current_xact_id()::text || ' ' || pg_current_wal_lsn()::text",
            )
            .await?
            .unwrap_or_default();
            break lsn.split(' ').nth(1).unwrap_or_default().to_string();
        }
        if t0.elapsed() > opts.timeout {
            return Err(StandbyError::Timeout {
                what: format!(
                    "the server on {} to accept writes after promotion",
                    pgdata.display()
                ),
                secs: opts.timeout.as_secs(),
                log: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let timeline = current_timeline(&client).await?.0;
    Ok(PromoteReport {
        pgdata,
        previous_timeline: previous,
        timeline,
        lsn,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
