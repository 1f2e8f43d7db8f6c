//! One module per command; each turns options into an engine call and renders the report.

mod archive;
mod assets;
mod backup;
mod check;
mod demo;
mod drill;
mod expire;
mod info;
mod init;
mod metrics;
mod pin;
mod report;
mod restore;
pub mod standby;
mod status;
mod stream;
pub mod undo;
mod verify;
mod wal;

use std::sync::Arc;

use pitr_repo::{ClusterRepo, Compression, KeyFile, Repo};
use pitr_storage::{LocalFs, S3Storage, Storage};

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config;
use crate::error::CliError;
use crate::s3;

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
        Command::PushAhead(a) => archive::push_ahead(&g, a).await,
        Command::GenerateAssets(a) => assets::run(a),
        Command::Restore(a) => restore::run(&g, a).await,
        Command::Wal(a) => wal::run(&g, a).await,
        Command::Drill(a) => drill::run(&g, a).await,
        Command::History => drill::history(&g).await,
        Command::Status(a) => status::run(&g, a).await,
        Command::Metrics(a) => metrics::run(&g, a).await,
        Command::Stream(a) => stream::run(&g, a).await,
        Command::Report(a) => report::run(&g, a).await,
        Command::Standby(a) => standby::run(&g, a).await,
        Command::Pin(a) => pin::pin(&g, a).await,
        Command::Unpin(a) => pin::unpin(&g, a).await,
        Command::Undo(a) => undo::run(&g, a).await,
    }
}

fn repo_location(g: &GlobalArgs) -> Result<&str, CliError> {
    g.repo.as_deref().ok_or_else(|| {
        CliError::Usage(
            "no repository given\nhint: pass --repo PATH, set PITR_REPO, or put `repo = \"…\"` in the config file".into(),
        )
    })
}

/// The repository at `location` (a directory, or `s3://bucket/prefix` reached with the S3
/// options of `g`), created (as an empty directory) when `create`; a location that holds
/// something else is refused ([`Repo::open`]). An S3 bucket must exist: opening checks that it
/// does and that the credentials may list it.
async fn repo_at(g: &GlobalArgs, location: &str, create: bool) -> Result<Repo, CliError> {
    let storage = storage_at(g, location, create, true).await?;
    let key = key_file(g)?;
    Ok(Repo::open_with_key(storage, key.as_ref()).await?)
}

/// The storage at `location`; an S3 bucket is checked (one listing) when `check_bucket`.
async fn storage_at(
    g: &GlobalArgs,
    location: &str,
    create: bool,
    check_bucket: bool,
) -> Result<Arc<dyn Storage>, CliError> {
    Ok(if s3::is_s3(location) {
        let s3 = S3Storage::new(s3::config(g, location)?)?;
        if check_bucket {
            s3.check().await?;
        }
        Arc::new(s3)
    } else if location.contains("://") {
        return Err(CliError::Usage(format!(
            "repository {location:?}: unknown URL scheme\nhint: use a directory or s3://bucket/prefix"
        )));
    } else if create {
        Arc::new(LocalFs::create(location)?)
    } else {
        Arc::new(LocalFs::open(location)?)
    })
}

/// The cluster for `archive-push`, opened with two requests fewer on S3 than
/// [`open_cluster`]: no listing of the bucket (the first request, the key object's GET, reports
/// a missing bucket or refused credentials as well, since a GET's error has a body to tell) and
/// no marker HEAD (the push checks the location before writing anything unless the cluster's
/// recorded identity proves it a repository; see `archive::push_opening`).
pub async fn open_cluster_for_push(g: &GlobalArgs) -> Result<ClusterRepo, CliError> {
    let storage = storage_at(g, repo_location(g)?, false, false).await?;
    let key = key_file(g)?;
    let repo = Repo::open_with_key_unchecked(storage, key.as_ref()).await?;
    Ok(repo.cluster(g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER))?)
}

/// The key file named by the options (`--encryption-key-file`, `PITR_ENCRYPTION_KEY`), read.
fn key_file(g: &GlobalArgs) -> Result<Option<KeyFile>, CliError> {
    g.encryption_key_file
        .as_deref()
        .map(KeyFile::read)
        .transpose()
        .map_err(|e| CliError::Repo(e.into()))
}

/// The key file option as a command line that runs elsewhere (archive_command,
/// restore_command, read-ahead) must give it: an absolute path.
pub fn key_file_args(g: &GlobalArgs) -> Vec<String> {
    g.encryption_key_file
        .as_deref()
        .map(|p| {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            vec!["--encryption-key-file".into(), abs.display().to_string()]
        })
        .unwrap_or_default()
}

/// Opens the repository named by the options (it must exist).
pub async fn open_repo(g: &GlobalArgs) -> Result<Repo, CliError> {
    repo_at(g, repo_location(g)?, false).await
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

/// Prints a value as pretty JSON on stdout (a closed pipe ends the output, not the process).
pub fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
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

/// The archive_command that archives into the repository named by the options, with the
/// options it needs to reach it ([`s3::command_args`]; never credentials).
pub fn archive_command_for(g: &GlobalArgs) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pitr".into());
    let word = |s: &str| pitr_core::restore::conf::shell_quote(s).replace('%', "%%");
    let mut cmd = format!(
        "{} --repo {}",
        word(&exe),
        word(g.repo.as_deref().unwrap_or("REPO"))
    );
    if let Some(c) = g.cluster.as_deref().filter(|c| *c != DEFAULT_CLUSTER) {
        cmd.push_str(&format!(" --cluster {}", word(c)));
    }
    for a in s3::command_args(g) {
        cmd.push(' ');
        cmd.push_str(&word(&a));
    }
    for arg in key_file_args(g) {
        cmd.push(' ');
        cmd.push_str(&word(&arg));
    }
    cmd.push_str(" archive-push %p");
    cmd
}
