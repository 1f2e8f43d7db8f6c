//! One module per command; each turns options into an engine call and renders the report.

mod archive;
mod backup;
mod check;
mod demo;
mod expire;
mod info;
mod init;
mod metrics;
mod report;
mod restore;
mod verify;
mod wal;

use std::sync::Arc;

use pitr_repo::{ClusterRepo, Compression, Repo};
use pitr_storage::{LocalFs, Storage};

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config;
use crate::error::CliError;

/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "main";

/// Runs the parsed command; returns the exit code on success paths that are not 0.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let g = config::apply(cli.global)?;
    match cli.command {
        Command::Init(a) => init::run(&g, a).await,
        Command::ArchivePush(a) => archive::push(&g, a).await,
        Command::ArchiveGet(a) => archive::get(&g, a).await,
        Command::Backup(a) => backup::run(&g, a).await,
        Command::Info(a) => info::run(&g, a).await,
        Command::Verify(a) => verify::run(&g, a).await,
        Command::Check(a) => check::run(&g, a).await,
        Command::Expire(a) => expire::run(&g, a).await,
        Command::Demo(a) => demo::run(&g, a).await,
        Command::SpoolFill(a) => archive::spool_fill(&g, a).await,
        Command::Restore(a) => restore::run(&g, a).await,
        Command::Wal(a) => wal::run(&g, a).await,
        Command::Metrics(a) => metrics::run(&g, a).await,
        Command::Report(a) => report::run(&g, a).await,
    }
}

fn repo_location(g: &GlobalArgs) -> Result<&str, CliError> {
    g.repo.as_deref().ok_or_else(|| {
        CliError::Usage(
            "no repository given\nhint: pass --repo PATH, set PITR_REPO, or put `repo = \"…\"` in the config file".into(),
        )
    })
}

/// The repository at `location`, created (as an empty directory) when `create`; a location
/// that holds something else is refused ([`Repo::open`]).
async fn repo_at(location: &str, create: bool) -> Result<Repo, CliError> {
    if location.starts_with("s3://") {
        return Err(CliError::Usage(format!(
            "repository {location:?}: S3 repositories are not supported by this build yet\nhint: use a local directory"
        )));
    }
    let fs = if create {
        LocalFs::create(location)?
    } else {
        LocalFs::open(location)?
    };
    let storage: Arc<dyn Storage> = Arc::new(fs);
    Ok(Repo::open(storage).await?)
}

/// Opens the repository named by the options (it must exist).
pub async fn open_repo(g: &GlobalArgs) -> Result<Repo, CliError> {
    repo_at(repo_location(g)?, false).await
}

/// The cluster named by the options in the repository.
pub async fn open_cluster(g: &GlobalArgs) -> Result<ClusterRepo, CliError> {
    Ok(open_repo(g)
        .await?
        .cluster(g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER))?)
}

/// The compression chosen by the options.
pub fn compression(g: &GlobalArgs) -> Result<Compression, CliError> {
    match &g.compress {
        None => Ok(Compression::Zstd(pitr_repo::frame::DEFAULT_ZSTD_LEVEL)),
        Some(s) => Compression::parse(s).ok_or_else(|| {
            CliError::Usage(format!(
                "invalid compression {s:?}\nhint: use zstd, zstd:LEVEL (1-19), lz4 or none"
            ))
        }),
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("pitr: error: cannot render JSON: {e}"),
    }
}

/// Connection parameters from the psql-style options (the PG* variables are applied when
/// they are resolved).
pub fn conn_params(g: &GlobalArgs) -> pitr_proto::ConnParams {
    pitr_proto::ConnParams {
        host: g.host.clone(),
        port: g.port,
        user: g.user.clone(),
        dbname: g.dbname.clone(),
        ..Default::default()
    }
}

/// The archive_command that archives into the repository named by the options.
pub fn archive_command_for(g: &GlobalArgs) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pitr".into());
    let mut cmd = format!("{exe} --repo {}", g.repo.as_deref().unwrap_or("REPO"));
    if let Some(c) = g.cluster.as_deref().filter(|c| *c != DEFAULT_CLUSTER) {
        cmd.push_str(&format!(" --cluster {c}"));
    }
    cmd.push_str(" archive-push %p");
    cmd
}
