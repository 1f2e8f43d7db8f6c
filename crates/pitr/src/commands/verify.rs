//! `pitr verify`.

use std::io::IsTerminal;
use std::sync::Arc;

use pitr_core::verify;

use super::{open_cluster, print_json};
use crate::cli::{GlobalArgs, VerifyArgs};
use crate::error::{CliError, EXIT_CORRUPT};

pub async fn run(g: &GlobalArgs, a: VerifyArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let progress = crate::progress::for_step(
        "verify",
        "objects",
        !g.quiet && !g.json && std::io::stderr().is_terminal(),
    );
    let report = verify::verify_with_progress(
        &cluster,
        a.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get())),
        Some(Arc::new(progress)),
    )
    .await?;
    if g.json {
        print_json(&report);
    } else {
        outln!(
            "cluster {}: checked {} WAL files and {} files of {} backups ({})",
            report.cluster,
            report.wal_files,
            report.backup_files,
            report.backups,
            super::info::human_bytes(report.bytes_checked)
        );
        for p in &report.problems {
            outln!("  PROBLEM {}: {}", p.object, p.problem);
        }
        if report.problems.is_empty() {
            outln!("  everything verified");
        }
    }
    Ok(if report.problems.is_empty() {
        0
    } else {
        EXIT_CORRUPT
    })
}
