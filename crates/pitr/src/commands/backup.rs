//! `pitr backup`.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pitr_core::backup::{self, BackupMethod, BackupOptions, Progress};
use pitr_repo::BackupKind;

use super::{archive_command_for, compression, conn_params, open_cluster, print_json};
use crate::cli::{BackupArgs, GlobalArgs};
use crate::error::CliError;

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let client = pitr_proto::connect(&conn_params(g)).await?;
    let opts = BackupOptions {
        pgdata: g.pgdata.clone(),
        method: match a.method.as_str() {
            "copy" => BackupMethod::Copy,
            "replication" => BackupMethod::Replication,
            _ => BackupMethod::Auto,
        },
        conn: conn_params(g),
        kind: if a.kind == "incr" {
            BackupKind::Incr
        } else {
            BackupKind::Full
        },
        jobs: a.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        compression: compression(g)?,
        fast: !a.spread_checkpoint,
        archive_timeout: Duration::from_secs(a.archive_timeout),
        archive_command_hint: archive_command_for(g),
    };
    let progress = Arc::new(Progress::default());
    let bar = (!g.quiet && !g.json && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} backup: {msg} [{elapsed_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    });
    let ticker = bar.clone().map(|pb| {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                let bytes = progress.bytes.load(Ordering::Relaxed);
                let files = progress.files.load(Ordering::Relaxed);
                pb.set_message(format!("{files} files, {}", indicatif::HumanBytes(bytes)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let result = backup::backup(&cluster, &client, &opts, progress).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let report = result?;
    if g.json {
        print_json(&report);
        return Ok(0);
    }
    if !g.quiet {
        eprintln!(
            "backup {} ({}, {}) of timeline {}: {} files, {} read, {} stored, {:.1}s; consistent at {}",
            report.label,
            report.kind,
            report.method,
            report.timeline,
            report.files,
            indicatif::HumanBytes(report.size),
            indicatif::HumanBytes(report.stored_size),
            report.seconds,
            report.stop_lsn
        );
        for (path, blocks) in &report.checksum_failures {
            eprintln!("pitr: warning: data page checksum failures in {path}: blocks {blocks:?}");
        }
    }
    println!("{}", report.label);
    Ok(0)
}
