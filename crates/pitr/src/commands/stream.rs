//! `pitr stream`.

use pitr_core::stream::{self, StreamOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::{compression, conn_params, open_cluster, print_json};
use crate::cli::{GlobalArgs, StreamArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, a: StreamArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let spool = a.spool.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pitr-stream-{}", std::process::id()))
    });
    let opts = StreamOptions {
        conn: conn_params(g),
        slot: a.slot.clone(),
        create_slot: a.create_slot,
        compression: compression(g)?,
        spool: spool.clone(),
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
            "pitr stream stopped: {} segments stored (last {}), {} bytes received, {} connection(s); resumes at {}",
            report.segments,
            report.last_segment.as_deref().unwrap_or("-"),
            report.received_bytes,
            report.connections,
            report.flushed.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}
