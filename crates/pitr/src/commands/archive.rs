//! `archive-push` and `archive-get` (with read-ahead).

use std::path::Path;
use std::process::{Command, Stdio};

use pitr_core::archive::Spool;
use pitr_core::archive::{self, GetOutcome, PushOutcome};
use pitr_pg::WalFileName;

use super::{compression, open_cluster, open_cluster_for_push, print_json, DEFAULT_CLUSTER};
use crate::cli::{ArchiveGetArgs, ArchivePushArgs, GlobalArgs, SpoolFillArgs};
use crate::error::{CliError, EXIT_NOT_FOUND};

pub async fn push(g: &GlobalArgs, a: ArchivePushArgs) -> Result<u8, CliError> {
    let c = compression(g)?;
    // The repository opens while the segment is compressed (see push_opening).
    let report = archive::push_opening(open_cluster_for_push(g), &a.wal_path, c).await?;
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
    let cluster = open_cluster(g).await?;
    let spool = (a.prefetch > 0).then(|| {
        a.spool
            .clone()
            .map_or_else(|| Spool::beside(&a.dest), Spool::new)
    });
    match archive::get(&cluster, &a.wal_name, &a.dest, spool.as_ref()).await? {
        GetOutcome::Restored { bytes, from_spool } => {
            tracing::info!(
                "restored {} ({bytes} bytes{}) to {}",
                a.wal_name,
                if from_spool { ", read ahead" } else { "" },
                a.dest.display()
            );
            if let (Some(spool), Ok(name)) = (&spool, WalFileName::parse(&a.wal_name)) {
                start_read_ahead(g, spool, &name, &a.dest, a.prefetch);
            }
            Ok(0)
        }
        GetOutcome::NotFound => {
            // PostgreSQL probes for files that may not exist (the next timeline's history):
            // stay silent unless asked with -v.
            tracing::info!("{} is not in the repository", a.wal_name);
            Ok(EXIT_NOT_FOUND)
        }
    }
}

/// Starts a detached `pitr spool-fill` for the segments the read-ahead policy
/// ([`Spool::read_ahead`]) names after `name`. Read-ahead is an optimisation: failing to start
/// it is only logged.
fn start_read_ahead(
    g: &GlobalArgs,
    spool: &Spool,
    name: &WalFileName,
    served: &Path,
    prefetch: u32,
) {
    let ahead = spool.read_ahead(name, served, prefetch);
    if ahead.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    if let Some(repo) = &g.repo {
        cmd.args(["--repo", repo]);
    }
    cmd.args(crate::s3::command_args(g))
        .args(super::key_file_args(g))
        .args(["--cluster", g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER)])
        .arg("spool-fill")
        .arg("--spool")
        .arg(spool.dir())
        .args(ahead.iter().map(|n| n.to_string()))
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Err(e) = cmd.spawn() {
        tracing::warn!("cannot start WAL read-ahead: {e}");
    }
}

pub async fn spool_fill(g: &GlobalArgs, a: SpoolFillArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let names: Vec<WalFileName> = a
        .names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .collect();
    Spool::new(a.spool)
        .fill(&cluster, &names, a.parallel)
        .await?;
    Ok(0)
}
