//! `archive-push` and `archive-get`.

use pitr_core::archive::{self, GetOutcome, PushOutcome};

use super::{compression, open_cluster, print_json};
use crate::cli::{ArchiveGetArgs, ArchivePushArgs, GlobalArgs};
use crate::error::{CliError, EXIT_NOT_FOUND};

pub async fn push(g: &GlobalArgs, a: ArchivePushArgs) -> Result<u8, CliError> {
    let c = compression(g)?;
    let cluster = open_cluster(g)?;
    let report = archive::push(&cluster, &a.wal_path, c).await?;
    if g.json {
        print_json(&report);
    } else if report.outcome == PushOutcome::AlreadyArchived && !g.quiet {
        eprintln!(
            "pitr: notice: {} is already archived with the same content (blake3 {}); nothing to do",
            report.name, report.blake3
        );
    }
    tracing::info!(
        "archived {} ({} bytes, {} stored)",
        report.name,
        report.original_bytes,
        report
            .stored_bytes
            .map(|b| b.to_string())
            .unwrap_or_else(|| "already".into())
    );
    Ok(0)
}

pub async fn get(g: &GlobalArgs, a: ArchiveGetArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g)?;
    match archive::get(&cluster, &a.wal_name, &a.dest).await? {
        GetOutcome::Restored { bytes } => {
            tracing::info!(
                "restored {} ({bytes} bytes) to {}",
                a.wal_name,
                a.dest.display()
            );
            Ok(0)
        }
        GetOutcome::NotFound => {
            // PostgreSQL probes for files that may not exist (the next timeline's history):
            // one short line, and only when asked for with -v.
            tracing::info!("{} is not in the repository", a.wal_name);
            Ok(EXIT_NOT_FOUND)
        }
    }
}
