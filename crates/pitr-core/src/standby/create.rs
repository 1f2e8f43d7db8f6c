//! `pitr standby create`: a streaming standby of the server given by `-h -p -U`, from a base
//! backup over the replication protocol ([`super::receive`]) or restored from the repository
//! (`--from-repo`, the restore engine with `standby.signal`), then the standby settings and
//! optionally `--start`, waiting until its WAL receiver streams.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitr_proto::repl::{connect_replication, ReplConnection, SlotOptions};
use pitr_proto::ConnParams;
use pitr_repo::ClusterRepo;

use super::conf::{self, conninfo, StandbySettings};
use super::local::{self, ensure_stopped, entries, owner_for};
use super::receive::{receive_into, Received};
use super::StandbyError;
use crate::restore::{self, OsUser, RestoreOptions, TargetSpec};

/// Where the standby's data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateSource {
    /// A base backup of the primary over the replication protocol.
    Primary,
    /// The newest suitable backup in the repository, restored with the restore engine.
    Repository,
}

/// How to start the standby (`--start`).
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// `--pg-bin`.
    pub pg_bin: Option<PathBuf>,
    /// How long to wait for the server, and then for streaming.
    pub timeout: Duration,
    /// Server log (default `DIR/log/pitr-start.log`).
    pub log_file: Option<PathBuf>,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The standby's data directory (empty or missing).
    pub pgdata: PathBuf,
    /// The primary (`-h -p -U`).
    pub conn: ConnParams,
    /// Where the data comes from.
    pub source: CreateSource,
    /// `--slot`: physical slot on the primary (created unless it exists).
    pub slot: Option<String>,
    /// `application_name` in `primary_conninfo` (how the primary lists the standby).
    pub application_name: Option<String>,
    /// `restore_command` (pitr archive-get with the repository), when a repository is given.
    pub restore_command: Option<String>,
    /// `--set NAME=VALUE`.
    pub extra: Vec<(String, String)>,
    /// `--owner` (as root).
    pub owner: Option<String>,
    /// `--backup` (with `--from-repo`).
    pub backup: Option<String>,
    /// Files restored in parallel (with `--from-repo`).
    pub jobs: usize,
    /// `--start`.
    pub start: Option<StartSpec>,
}

/// What will be done, decided before anything is touched.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatePlan {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Whom its files belong to (as root).
    pub owner: Option<OsUser>,
    /// Where the data comes from.
    pub source: CreateSource,
    /// The slot.
    pub slot: Option<String>,
    /// Whether the server is started.
    pub start: bool,
    #[serde(skip)]
    opts: CreateOptions,
}

/// The started standby.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Started {
    /// The server log.
    pub log_file: PathBuf,
    /// What the WAL receiver had flushed when streaming was seen.
    pub streaming_at: Option<String>,
    /// Seconds from `pg_ctl start` to streaming.
    pub seconds: f64,
}

/// What was done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateReport {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Where the data came from.
    pub source: CreateSource,
    /// The primary, as the standby reaches it.
    pub primary: String,
    /// The primary's system identifier.
    pub system_id: String,
    /// The primary's timeline.
    pub timeline: u32,
    /// The slot, and whether pitr created it.
    pub slot: Option<String>,
    /// Whether the slot was created now (false: it existed).
    pub slot_created: bool,
    /// The base backup received from the primary.
    pub received: Option<Received>,
    /// The backup restored from the repository.
    pub restored_backup: Option<String>,
    /// The standby settings written.
    pub settings: StandbySettings,
    /// Files written for the standby configuration.
    pub written: Vec<String>,
    /// The started server.
    pub started: Option<Started>,
    /// Seconds in all.
    pub seconds: f64,
}

/// Checks the directory, the server on it and the OS user.
pub fn plan_create(opts: &CreateOptions) -> Result<CreatePlan, StandbyError> {
    let pgdata =
        std::path::absolute(&opts.pgdata).map_err(StandbyError::io("resolve", &opts.pgdata))?;
    ensure_stopped(&pgdata)?;
    let n = entries(&pgdata)?;
    if n > 0 {
        return Err(StandbyError::NotEmpty {
            path: pgdata,
            entries: n,
        });
    }
    let owner = owner_for(&pgdata, opts.owner.as_deref())?;
    if opts.source == CreateSource::Repository && opts.restore_command.is_none() {
        return Err(StandbyError::Usage(
            "standby create --from-repo needs the repository\nhint: pass --repo PATH|URL".into(),
        ));
    }
    if let Some(s) = &opts.slot {
        pitr_proto::repl::validate_slot_name(s)?;
    }
    Ok(CreatePlan {
        pgdata: pgdata.clone(),
        owner,
        source: opts.source,
        slot: opts.slot.clone(),
        start: opts.start.is_some(),
        opts: CreateOptions {
            pgdata,
            ..opts.clone()
        },
    })
}

/// Creates the physical slot `name` (reserving WAL) unless it exists; whether it was created.
pub async fn ensure_slot(conn: &mut ReplConnection, name: &str) -> Result<bool, StandbyError> {
    let opts = SlotOptions {
        temporary: false,
        reserve_wal: true,
    };
    match conn.create_physical_slot(name, opts).await {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("already exists") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The settings a standby of the server on `conn` gets.
pub fn settings_for(
    conn: &ReplConnection,
    application_name: Option<&str>,
    slot: Option<&str>,
    restore_command: Option<&str>,
    extra: &[(String, String)],
) -> StandbySettings {
    let app: Vec<(&str, &str)> = application_name
        .map(|a| vec![("application_name", a)])
        .unwrap_or_default();
    StandbySettings {
        primary_conninfo: conninfo(conn.endpoint(), conn.user(), &app),
        slot: slot.map(str::to_string),
        restore_command: restore_command.map(str::to_string),
        extra: extra.to_vec(),
    }
}

/// Carries the plan out. `cluster` is the repository's cluster (needed with `--from-repo`).
pub async fn create(
    plan: CreatePlan,
    cluster: Option<&ClusterRepo>,
) -> Result<CreateReport, StandbyError> {
    let started = Instant::now();
    let opts = &plan.opts;
    let mut conn = connect_replication(&opts.conn).await?;
    let id = conn.identify_system().await?;
    let slot_created = match &opts.slot {
        Some(s) => ensure_slot(&mut conn, s).await?,
        None => false,
    };
    let settings = settings_for(
        &conn,
        opts.application_name.as_deref(),
        opts.slot.as_deref(),
        opts.restore_command.as_deref(),
        &opts.extra,
    );
    let primary = conn.endpoint().to_string();
    let (received, restored_backup) = match plan.source {
        CreateSource::Primary => {
            make_pgdata(&plan.pgdata, plan.owner.as_ref())?;
            let r = receive_into(&mut conn, &plan.pgdata, plan.owner.as_ref()).await?;
            tracing::info!(
                "base backup received into {}: {} files, {} .. {}",
                plan.pgdata.display(),
                r.files,
                r.start_lsn,
                r.end_lsn
            );
            (Some(r), None)
        }
        CreateSource::Repository => {
            let cluster = cluster.ok_or_else(|| {
                StandbyError::Usage("standby create --from-repo needs --repo".into())
            })?;
            check_identity(cluster, id.system_id.0).await?;
            let label = restore_standby(
                cluster,
                &StandbyRestore {
                    pgdata: plan.pgdata.clone(),
                    owner: opts.owner.clone(),
                    backup: opts.backup.clone(),
                    jobs: opts.jobs,
                    restore_command: opts.restore_command.clone().unwrap_or_default(),
                    delta: false,
                },
            )
            .await?;
            (None, Some(label))
        }
    };
    let _ = conn.close().await;
    let written = conf::write(&plan.pgdata, &settings, plan.owner.as_ref())?;
    let started_report = match &opts.start {
        Some(spec) => Some(start_standby(&plan.pgdata, plan.owner.as_ref(), spec).await?),
        None => None,
    };
    Ok(CreateReport {
        pgdata: plan.pgdata.clone(),
        source: plan.source,
        primary,
        system_id: id.system_id.0.to_string(),
        timeline: id.timeline.0,
        slot: opts.slot.clone(),
        slot_created,
        received,
        restored_backup,
        settings,
        written,
        started: started_report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuses a repository cluster that holds another cluster's data.
pub async fn check_identity(cluster: &ClusterRepo, system_id: u64) -> Result<(), StandbyError> {
    if let Some(idn) = cluster.identity().await? {
        if idn.system_id != system_id {
            return Err(StandbyError::Server(format!(
                "the repository's cluster {:?} is system {}, but the primary is system {system_id}\nhint: pass the --cluster that archives this primary",
                cluster.name(),
                idn.system_id
            )));
        }
    }
    Ok(())
}

/// A restore from the repository as a standby.
#[derive(Debug, Clone)]
pub struct StandbyRestore {
    /// Into this data directory.
    pub pgdata: PathBuf,
    /// `--owner`.
    pub owner: Option<String>,
    /// `--backup`.
    pub backup: Option<String>,
    /// Files restored in parallel.
    pub jobs: usize,
    /// `restore_command`.
    pub restore_command: String,
    /// Reuse matching files (`--delta`).
    pub delta: bool,
}

/// Restores the repository's backup as a standby (following the newest timeline to the end
/// of WAL). Returns the backup's label.
pub async fn restore_standby(
    cluster: &ClusterRepo,
    r: &StandbyRestore,
) -> Result<String, StandbyError> {
    let ro = RestoreOptions {
        pgdata: r.pgdata.clone(),
        spec: TargetSpec::default(),
        backup: r.backup.clone(),
        delta: r.delta,
        force: false,
        standby: true,
        tablespace_map: Vec::new(),
        owner: r.owner.clone(),
        jobs: r.jobs.max(1),
        restore_command: r.restore_command.clone(),
        // A standby archives only with archive_mode = always: the settings stay as backed up.
        archive_mode: restore::ArchiveMode::Preserve,
    };
    let rplan = restore::plan(cluster, &ro).await?;
    let label = rplan.backup.label.clone();
    tracing::info!(
        "restoring backup {label} into {} as a standby",
        ro.pgdata.display()
    );
    restore::execute(cluster, rplan, None).await?;
    Ok(label)
}

/// Creates the (missing or empty) data directory with mode 0700, owned by `owner`.
fn make_pgdata(pgdata: &Path, owner: Option<&OsUser>) -> Result<(), StandbyError> {
    if !pgdata.exists() {
        std::fs::create_dir_all(pgdata).map_err(StandbyError::io("create", pgdata))?;
    }
    std::fs::set_permissions(pgdata, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(StandbyError::io("set the mode of", pgdata))?;
    conf::chown(pgdata, owner)
}

/// Starts the standby on `pgdata` (`pg_ctl -w start`: until it accepts read-only connections)
/// and waits until its WAL receiver streams. A WAL receiver that fails and retries (FATAL lines
/// in the log while the primary is not ready for it) is normal for a standby; only the timeout
/// ends the wait.
pub async fn start_standby(
    pgdata: &Path,
    owner: Option<&OsUser>,
    spec: &StartSpec,
) -> Result<Started, StandbyError> {
    let t0 = Instant::now();
    let major = local::pgdata_major(pgdata)?;
    let bindir = local::bindir(spec.pg_bin.as_deref(), major, &["pg_ctl", "postgres"])?;
    let log = spec
        .log_file
        .clone()
        .unwrap_or_else(|| pgdata.join("log").join("pitr-start.log"));
    if let Some(dir) = log.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(StandbyError::io("create", dir))?;
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(StandbyError::io("set the mode of", dir))?;
            conf::chown(dir, owner)?;
        }
    }
    crate::restore::port::ensure_free(&crate::restore::port::listen_settings(pgdata, None))?;
    let secs = spec.timeout.as_secs().max(1).to_string();
    let args: Vec<&std::ffi::OsStr> = vec![
        "-D".as_ref(),
        pgdata.as_os_str(),
        "-l".as_ref(),
        log.as_os_str(),
        "-o".as_ref(),
        "-c logging_collector=off -c log_destination=stderr -c lc_messages=C".as_ref(),
        "-w".as_ref(),
        "-t".as_ref(),
        secs.as_ref(),
        "start".as_ref(),
    ];
    local::run_program(
        &bindir.join("pg_ctl"),
        &args,
        owner,
        pgdata,
        Some(format!("see the server log {}", log.display())),
    )?;
    let left = spec.timeout.saturating_sub(t0.elapsed());
    let at = local::wait_streaming(pgdata, owner, left, Some(&log)).await?;
    Ok(Started {
        log_file: log,
        streaming_at: at,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
