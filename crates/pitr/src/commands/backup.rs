//! `pitr backup`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use pitr_core::backup::{self, BackupMethod, BackupOptions, BackupReport, Progress};
use pitr_core::expire::{self, ExpireReport, Policy};
use pitr_core::pin::PinReport;
use pitr_core::progress::Progress as _;
use pitr_repo::BackupKind;

use super::{archive_command_for, compression, conn_params, open_cluster, print_json};
use crate::cli::{BackupArgs, GlobalArgs};
use crate::error::CliError;
use crate::progress;

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> Result<u8, CliError> {
    let policy = Policy {
        retain_full: a.retain_full.or(g.retain_full),
        retain_days: a.retain_days.or(g.retain_days),
    };
    if a.expire {
        // A policy expire would refuse is refused before the backup, not after it.
        expire::plan(&[], policy, jiff::Timestamp::now())?;
    }
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
    let counters = Arc::new(Progress::default());
    let reporter = Arc::new(progress::for_step(
        "backup",
        "files",
        !g.quiet && !g.json && std::io::stderr().is_terminal(),
    ));
    let ticker = tokio::spawn(progress::follow_backup(counters.clone(), reporter.clone()));
    let result = backup::backup(&cluster, &client, &opts, counters.clone()).await;
    ticker.abort();
    if result.is_ok() {
        // What the last tick did not see yet, then the end line.
        reporter.sync_backup(&counters);
        reporter.finish();
    } else {
        reporter.abandon();
    }
    let report = result?;
    // The backup is complete and listed: pinning and expiring come after, on their own.
    let pin = if a.keep {
        Some(pitr_core::pin::pin(&cluster, &report.label, "backup --keep").await?)
    } else {
        None
    };
    let expired = if a.expire {
        let progress = super::expire::progress(g);
        Some(
            expire::expire_with_progress(&cluster, policy, false, Some(progress))
                .await
                .inspect_err(|_| {
                    eprintln!(
                        "pitr: backup {} is complete and listed; the expire after it failed:",
                        report.label
                    );
                })?,
        )
    } else {
        None
    };
    if g.json {
        print_json(&BackupOutput {
            backup: &report,
            pin: pin.as_ref(),
            expire: expired.as_ref(),
        });
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
        if report.files_block_level > 0 {
            eprintln!(
                "{} changed relation files stored as their changed pages (block-level incremental)",
                report.files_block_level
            );
        }
        if let Some(how) = &report.changed_pages_from {
            eprintln!("pitr: {how}");
        }
        if let Some(why) = &report.whole_files {
            eprintln!("pitr: note: incremental backup at file level: {why}");
        }
        for (path, blocks) in &report.checksum_failures {
            eprintln!("pitr: warning: data page checksum failures in {path}: blocks {blocks:?}");
        }
        if let Some(p) = &pin {
            eprintln!("{}", super::pin::line(p));
        }
        for line in expired.iter().flat_map(super::expire::lines) {
            eprintln!("{line}");
        }
    }
    println!("{}", report.label);
    Ok(0)
}

/// `backup --json`: the backup's report, with what `--keep` and `--expire` did.
#[derive(serde::Serialize)]
struct BackupOutput<'a> {
    #[serde(flatten)]
    backup: &'a BackupReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<&'a PinReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire: Option<&'a ExpireReport>,
}
