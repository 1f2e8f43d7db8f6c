//! `archive-push` and `archive-get` (with read-ahead).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pitr_core::archive::{self, GetOutcome, PushOutcome};
use pitr_core::spool::Spool;
use pitr_pg::WalFileName;

use super::{compression, open_cluster, print_json, DEFAULT_CLUSTER};
use crate::cli::{ArchiveGetArgs, ArchivePushArgs, GlobalArgs, SpoolFillArgs};
use crate::error::{CliError, EXIT_NOT_FOUND};

pub async fn push(g: &GlobalArgs, a: ArchivePushArgs) -> Result<u8, CliError> {
    let c = compression(g)?;
    let cluster = open_cluster(g).await?;
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

fn default_spool(dest: &Path) -> PathBuf {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("pitr-spool")
}

pub async fn get(g: &GlobalArgs, a: ArchiveGetArgs) -> Result<u8, CliError> {
    let cluster = open_cluster(g).await?;
    let spool = (a.prefetch > 0)
        .then(|| Spool::new(a.spool.clone().unwrap_or_else(|| default_spool(&a.dest))));
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

/// Starts a detached `pitr spool-fill` for the segments after `name` unless enough of them are
/// spooled already. Read-ahead is an optimisation: failing to start it is only logged.
fn start_read_ahead(
    g: &GlobalArgs,
    spool: &Spool,
    name: &WalFileName,
    served: &Path,
    prefetch: u32,
) {
    let ahead = Spool::ahead(name, served, prefetch);
    let missing: Vec<String> = ahead
        .iter()
        .map(|n| n.to_string())
        .filter(|n| !spool.dir().join(n).exists())
        .collect();
    if missing.is_empty() || (missing.len() as u32) < prefetch / 2 {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    if let Some(repo) = &g.repo {
        cmd.args(["--repo", repo]);
    }
    cmd.args(["--cluster", g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER)])
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
