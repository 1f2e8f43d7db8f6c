//! `archive-push` and `archive-get` (with read-ahead).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitr_core::archive::{self, GetOutcome, PushOutcome};
use pitr_core::archive::{AheadOptions, PushSpool, Relayed, Spool, Spooled};
use pitr_pg::WalFileName;

use super::{compression, open_cluster, open_cluster_for_push, print_json, DEFAULT_CLUSTER};
use crate::cli::{ArchiveGetArgs, ArchivePushArgs, GlobalArgs, PushAheadArgs, SpoolFillArgs};
use crate::error::{CliError, EXIT_NOT_FOUND};

pub async fn push(g: &GlobalArgs, a: ArchivePushArgs) -> Result<u8, CliError> {
    let c = compression(g)?;
    let spool = PushSpool::beside(&a.wal_path, &repo_key(g));
    let name = a
        .wal_path
        .file_name()
        .and_then(|n| WalFileName::parse(&n.to_string_lossy()).ok());
    // Asynchronous only for PostgreSQL's archiver (the file is listed as ready): a push run by
    // hand stores its file in this process.
    let ahead = match name {
        Some(name) if async_enabled(g, &a) && spool.is_ready(&name) => Some(name),
        _ => None,
    };
    if let Some(name) = ahead {
        if let Some(code) = push_async(g, &a, &spool, &name).await? {
            return Ok(code);
        }
    }
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

/// How long a call waits for a live worker to push its file before pushing it itself.
const WORKER_WAIT: Duration = Duration::from_secs(120);

fn async_enabled(g: &GlobalArgs, a: &ArchivePushArgs) -> bool {
    !a.no_async && g.archive_async.unwrap_or(true)
}

/// The repository a marker must have been written for.
fn repo_key(g: &GlobalArgs) -> String {
    let repo = g.repo.as_deref().unwrap_or_default();
    let repo = if repo.contains("://") {
        repo.to_string()
    } else {
        std::path::absolute(repo).map_or_else(|_| repo.to_string(), |p| p.display().to_string())
    };
    format!("{repo}#{}", g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER))
}

/// The asynchronous way: `Some(0)` when the worker stored the file (its marker matches the
/// file), an error when the worker failed; `None` when this call must push the file itself (no
/// worker could, or it gave up on it). Starts a worker when there is more to push and none runs.
async fn push_async(
    g: &GlobalArgs,
    a: &ArchivePushArgs,
    spool: &PushSpool,
    name: &WalFileName,
) -> Result<Option<u8>, CliError> {
    let mut worker: Option<Child> = None;
    let started = Instant::now();
    let mut poll = Duration::from_micros(500);
    loop {
        match spool.take(name, &a.wal_path) {
            Spooled::Done { blake3 } => {
                if g.json {
                    print_json(&serde_json::json!({
                        "name": name.to_string(),
                        "outcome": "pushed-ahead",
                        "blake3": blake3,
                    }));
                }
                tracing::info!("archived {name} (pushed ahead, blake3 {blake3})");
                if worker.is_none() && !spool.worker_busy() && spool.wants_worker(name) {
                    start_worker(g, a, spool);
                }
                return Ok(Some(0));
            }
            Spooled::Failed(relayed) => return Err(CliError::Relayed(relayed)),
            Spooled::Nothing => {}
        }
        let alive = spool.worker_busy()
            || worker
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !alive {
            if worker.is_some() {
                // The worker this call started is gone without a marker for this file.
                return Ok(None);
            }
            worker = start_worker(g, a, spool);
            if worker.is_none() {
                return Ok(None);
            }
        }
        if started.elapsed() > WORKER_WAIT {
            tracing::warn!(
                "the archive-push worker has not pushed {name} in {WORKER_WAIT:?}; pushing it here"
            );
            return Ok(None);
        }
        // Poll quickly at first (the worker is usually a few ms from done), then less often.
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_millis(8));
    }
}

/// Starts a detached `pitr push-ahead`, which leaves this session first thing (a session and
/// process group of its own, see [`pitr_os::new_session`]: PostgreSQL's signals to the
/// archiver's group do not reach it). Failing to start it is only logged: the call then pushes
/// its file itself.
fn start_worker(g: &GlobalArgs, a: &ArchivePushArgs, spool: &PushSpool) -> Option<Child> {
    let jobs = a.async_jobs.or(g.archive_async_jobs).unwrap_or(4);
    let queue = a.async_queue.or(g.archive_async_queue).unwrap_or(64);
    let mut cmd = detached(g)?;
    if let Some(c) = &g.compress {
        cmd.args(["--compress", c]);
    }
    cmd.arg("push-ahead")
        .arg("--pg-wal")
        .arg(spool.pg_wal())
        .args(["--jobs", &jobs.to_string(), "--queue", &queue.to_string()]);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!("cannot start the archive-push worker: {e}");
            None
        }
    }
}

/// The worker: pushes what PostgreSQL marked ready, recording its failure for the next call.
pub async fn push_ahead(g: &GlobalArgs, a: PushAheadArgs) -> Result<u8, CliError> {
    if let Err(e) = pitr_os::new_session() {
        // Started as a process group leader (by hand, from a shell): it stays where it is.
        tracing::debug!("push-ahead worker stays in its session: {e}");
    }
    let spool = PushSpool::of_pg_wal(&a.pg_wal, &repo_key(g));
    let record = |name: Option<&WalFileName>, e: CliError| {
        let relayed = Relayed {
            code: e.exit_code().clamp(1, 125),
            message: e.to_string(),
        };
        spool.record_failure(name, &relayed);
        e
    };
    let opts = AheadOptions {
        jobs: a.jobs,
        queue: a.queue,
        compression: compression(g).map_err(|e| record(None, e))?,
    };
    let cluster = open_cluster(g).await.map_err(|e| record(None, e))?;
    match spool.run_worker(&cluster, opts).await {
        Ok(r) => {
            tracing::info!("pushed ahead {} files", r.marked);
            Ok(0)
        }
        Err(f) => Err(record(f.name.as_ref(), f.error.into())),
    }
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
    let Some(mut cmd) = detached(g) else {
        return;
    };
    cmd.arg("spool-fill")
        .arg("--spool")
        .arg(spool.dir())
        .args(ahead.iter().map(|n| n.to_string()));
    if let Err(e) = cmd.spawn() {
        tracing::warn!("cannot start WAL read-ahead: {e}");
    }
}

/// A `pitr` command for a detached helper process (read-ahead, push-ahead): the same
/// repository, cluster, key and S3 options as this one, passed explicitly, no terminal.
fn detached(g: &GlobalArgs) -> Option<Command> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = Command::new(exe);
    if let Some(repo) = &g.repo {
        cmd.args(["--repo", repo]);
    }
    cmd.args(crate::s3::command_args(g))
        .args(super::key_file_args(g))
        .args(["--cluster", g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER)])
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Some(cmd)
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
