//! `pitr stream`.

use std::time::Duration;

use pitr_core::stream::{self, StreamOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::{compression, conn_params, open_cluster, print_json};
use crate::cli::{GlobalArgs, StreamArgs};
use crate::error::CliError;

/// How often the `.partial` is uploaded to object storage by default: each upload is one PUT
/// of the whole segment so far (see docs/user-guide.md for the trade-off).
const DEFAULT_S3_PARTIAL_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(g: &GlobalArgs, a: StreamArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let spool = a.spool.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pitr-stream-{}", std::process::id()))
    });
    let interval = match a.partial_interval {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Some(secs) => {
            return Err(CliError::Usage(format!(
                "--partial-interval {secs}: expected a number of seconds, 0 or more"
            )))
        }
        None if g.repo.as_deref().is_some_and(crate::s3::is_s3) => DEFAULT_S3_PARTIAL_INTERVAL,
        None => Duration::ZERO,
    };
    let mut conn = conn_params(g);
    conn.application_name = Some(a.application_name.clone());
    let opts = StreamOptions {
        conn,
        slot: a.slot.clone(),
        create_slot: a.create_slot,
        compression: compression(g)?,
        spool: spool.clone(),
        synchronous: a.synchronous,
        partial_interval: interval,
    };
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::Usage(format!("cannot catch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Usage(format!("cannot catch SIGINT: {e}")))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping on signal");
        let _ = tx.send(true);
    });
    let result = stream::stream(&cluster, &opts, rx).await;
    if a.spool.is_none() {
        let _ = std::fs::remove_dir(&spool);
    }
    let report = result?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        eprintln!(
            "pitr stream stopped: {} segments stored (last {}), {} .partial writes, {} bytes received, {} connection(s); durable in the repository up to {}",
            report.segments,
            report.last_segment.as_deref().unwrap_or("-"),
            report.partial_writes,
            report.received_bytes,
            report.connections,
            report.flushed.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}
