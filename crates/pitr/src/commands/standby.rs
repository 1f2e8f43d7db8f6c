//! `pitr standby create|promote|rejoin`: options → [`pitr_core::standby`] plan/execute,
//! rendered.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use pitr_core::standby::{
    self, conf::parse_setting, create::StartSpec, CreateOptions, CreateReport, CreateSource,
    PromoteOptions, RejoinMethod, RejoinOptions, RejoinReport,
};

use super::restore::{jobs, restore_command_for};
use super::{conn_params, open_cluster, print_json};
use crate::cli::GlobalArgs;
use crate::error::CliError;

/// `pitr standby …`.
#[derive(Debug, Subcommand)]
pub enum StandbyCommand {
    /// Make --pgdata DIR a streaming standby of the server given by -h/-p/-U (a base backup
    /// over the replication protocol, or restored from the repository with --from-repo)
    Create(CreateArgs),
    /// Promote the standby running on --pgdata, wait until it accepts writes, report its new
    /// timeline
    Promote(PromoteArgs),
    /// Turn the stopped former primary in --pgdata into a standby of the new primary given by
    /// -h/-p/-U (pg_rewind when the cluster allows it, else a --delta restore from the
    /// repository)
    Rejoin(RejoinArgs),
}

/// Options shared by create and rejoin.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Physical replication slot on the primary for the standby (created unless it exists)
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Start the standby and wait until it streams from the primary
    #[arg(long)]
    pub start: bool,
    /// application_name in primary_conninfo (how the primary lists the standby)
    #[arg(long, value_name = "NAME")]
    pub application_name: Option<String>,
    /// Extra setting for the standby's postgresql.auto.conf, e.g. --set port=5433 for a
    /// standby on the primary's host (repeatable)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Directory holding PostgreSQL's programs (pg_ctl, pg_rewind) [default: searched]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Seconds to wait for the started standby to stream
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub wait_timeout: u64,
    /// Server log for --start [default: DIR/log/pitr-start.log]
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Files restored in parallel from the repository [default: number of CPUs]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// `pitr standby create`.
#[derive(Debug, Args)]
#[command(
    after_help = "The standby gets primary_conninfo (host, port and user of -h/-p/-U; no password: \
put it in the standby's ~/.pgpass), primary_slot_name (--slot), restore_command (pitr archive-get \
from --repo, so it catches up from the repository when the primary no longer has the WAL) and \
standby.signal. DIR must be empty or missing. Without --from-repo no repository is needed, but \
then the standby has no restore_command."
)]
pub struct CreateArgs {
    /// Restore the standby from the repository instead of a base backup of the primary
    #[arg(long)]
    pub from_repo: bool,
    /// With --from-repo: restore this backup [default: the newest that reaches the end of WAL]
    #[arg(long, value_name = "LABEL", requires = "from_repo")]
    pub backup: Option<String>,
    /// OS user to own the files when run as root [default: owner of DIR or its parent]
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `pitr standby promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Directory holding pg_ctl [default: searched]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Seconds to wait for the server to accept writes
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// How rejoin brings the old primary onto the new timeline.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// pg_rewind when pg_control shows data checksums or wal_log_hints, else restore
    Auto,
    /// pg_rewind --source-server
    Rewind,
    /// a --delta restore from the repository as a standby
    Restore,
}

/// `pitr standby rejoin`.
#[derive(Debug, Args)]
#[command(
    after_help = "Refuses while a server runs on DIR. pg_rewind needs data checksums or \
wal_log_hints (read from pg_control) and a superuser (or a role granted its functions) on the new \
primary; otherwise the repository's backup is restored with --delta as a standby following the \
newest timeline (the new primary's history file must reach the repository: its archive_command \
must archive there)."
)]
pub struct RejoinArgs {
    /// auto, rewind or restore
    #[arg(long, value_enum, default_value = "auto")]
    pub method: MethodArg,
    #[command(flatten)]
    pub follow: FollowArgs,
}

pub async fn run(g: &GlobalArgs, cmd: StandbyCommand) -> Result<u8, CliError> {
    match cmd {
        StandbyCommand::Create(a) => create(g, a).await,
        StandbyCommand::Promote(a) => promote(g, a).await,
        StandbyCommand::Rejoin(a) => rejoin(g, a).await,
    }
}

fn pgdata(g: &GlobalArgs, what: &str) -> Result<PathBuf, CliError> {
    g.pgdata.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "standby {what} needs the data directory\nhint: pass --pgdata DIR (or set PGDATA)"
        ))
    })
}

fn start_spec(f: &FollowArgs) -> Option<StartSpec> {
    f.start.then(|| StartSpec {
        pg_bin: f.pg_bin.clone(),
        timeout: Duration::from_secs(f.wait_timeout),
        log_file: f.server_log.clone(),
    })
}

fn extra(f: &FollowArgs) -> Result<Vec<(String, String)>, CliError> {
    f.set
        .iter()
        .map(|s| parse_setting(s).map_err(CliError::from))
        .collect()
}

async fn create(g: &GlobalArgs, a: CreateArgs) -> Result<u8, CliError> {
    let restore_command = match g.repo {
        Some(_) => Some(restore_command_for(g)?),
        None => None,
    };
    let opts = CreateOptions {
        pgdata: pgdata(g, "create")?,
        conn: conn_params(g),
        source: if a.from_repo {
            CreateSource::Repository
        } else {
            CreateSource::Primary
        },
        slot: a.follow.slot.clone(),
        application_name: a.follow.application_name.clone(),
        restore_command,
        extra: extra(&a.follow)?,
        owner: a.owner.clone(),
        backup: a.backup.clone(),
        jobs: jobs(a.follow.jobs)?,
        start: start_spec(&a.follow),
    };
    let plan = standby::plan_create(&opts)?;
    let cluster = if a.from_repo {
        Some(open_cluster(g).await?)
    } else {
        None
    };
    let report = standby::create(plan, cluster.as_ref()).await?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_create(&report);
    }
    Ok(0)
}

fn print_create(r: &CreateReport) {
    match (&r.received, &r.restored_backup) {
        (Some(b), _) => println!(
            "standby created in {} from a base backup of {} ({} files, {} .. {} on timeline {})",
            r.pgdata.display(),
            r.primary,
            b.files,
            b.start_lsn,
            b.end_lsn,
            b.timeline
        ),
        (None, Some(label)) => println!(
            "standby created in {} from backup {label} of the repository, following {}",
            r.pgdata.display(),
            r.primary
        ),
        _ => {}
    }
    print_settings(&r.settings, r.slot_created);
    match &r.started {
        Some(s) => println!(
            "started: streaming from the primary (received up to {}) after {:.1} s; server log {}",
            s.streaming_at.as_deref().unwrap_or("-"),
            s.seconds,
            s.log_file.display()
        ),
        None => println!(
            "next: start it (pg_ctl -D {} start, as the owner of the directory); it streams from the primary",
            r.pgdata.display()
        ),
    }
}

fn print_settings(s: &standby::StandbySettings, slot_created: bool) {
    println!("  primary_conninfo  = {}", s.primary_conninfo);
    if let Some(slot) = &s.slot {
        let how = if slot_created { "created" } else { "existed" };
        println!("  primary_slot_name = {slot} (slot {how} on the primary)");
    }
    match &s.restore_command {
        Some(c) => println!("  restore_command   = {c}"),
        None => println!("  restore_command   : none (no --repo given)"),
    }
    for (n, v) in &s.extra {
        println!("  {n} = {v}");
    }
}

async fn promote(g: &GlobalArgs, a: PromoteArgs) -> Result<u8, CliError> {
    let opts = PromoteOptions {
        pgdata: pgdata(g, "promote")?,
        pg_bin: a.pg_bin,
        timeout: Duration::from_secs(a.wait_timeout),
    };
    let r = standby::promote(&opts).await?;
    if g.json {
        print_json(&r);
    } else if !g.quiet {
        println!(
            "promoted {}: accepts writes on timeline {}{} (at {}, {:.1} s)",
            r.pgdata.display(),
            r.timeline,
            r.previous_timeline
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default(),
            r.lsn,
            r.seconds
        );
    }
    Ok(0)
}

async fn rejoin(g: &GlobalArgs, a: RejoinArgs) -> Result<u8, CliError> {
    let restore_command = match g.repo {
        Some(_) => Some(restore_command_for(g)?),
        None => None,
    };
    let opts = RejoinOptions {
        pgdata: pgdata(g, "rejoin")?,
        conn: conn_params(g),
        method: match a.method {
            MethodArg::Auto => RejoinMethod::Auto,
            MethodArg::Rewind => RejoinMethod::Rewind,
            MethodArg::Restore => RejoinMethod::Restore,
        },
        slot: a.follow.slot.clone(),
        application_name: a.follow.application_name.clone(),
        restore_command,
        extra: extra(&a.follow)?,
        jobs: jobs(a.follow.jobs)?,
        pg_bin: a.follow.pg_bin.clone(),
        start: start_spec(&a.follow),
        timeout: Duration::from_secs(a.follow.wait_timeout),
    };
    let plan = standby::plan_rejoin(&opts)?;
    let cluster = if plan.method == RejoinMethod::Restore {
        Some(open_cluster(g).await?)
    } else {
        None
    };
    let r = standby::rejoin(plan, cluster.as_ref()).await?;
    if g.json {
        print_json(&r);
    } else if !g.quiet {
        print_rejoin(&r);
    }
    Ok(0)
}

fn print_rejoin(r: &RejoinReport) {
    let how = match (&r.restored_backup, r.plan.method) {
        (Some(label), _) => format!("restored backup {label} with --delta"),
        _ => "rewound with pg_rewind".to_string(),
    };
    println!(
        "{} rejoined as a standby of {} (timeline {}): {how}",
        r.plan.pgdata.display(),
        r.primary,
        r.timeline
    );
    println!("  why: {}", r.plan.reason);
    print_settings(&r.settings, r.slot_created);
    match &r.started {
        Some(s) => println!(
            "started: streaming from the new primary (received up to {}) after {:.1} s; server log {}",
            s.streaming_at.as_deref().unwrap_or("-"),
            s.seconds,
            s.log_file.display()
        ),
        None => println!(
            "next: start it (pg_ctl -D {} start, as the owner of the directory); it follows the new primary",
            r.plan.pgdata.display()
        ),
    }
}
