//! `pitr standby rejoin`: a stopped former primary becomes a standby of the new primary.
//!
//! `pg_rewind --source-server` when pg_control says the cluster allows it (data checksums, or
//! `wal_log_hints = on` when it last ran), else a `--delta` restore from the repository as a
//! standby following the newest timeline (only files that differ from the backup are fetched).
//! Then the standby settings as `standby create` writes them, the slot on the new primary, and
//! optionally `--start`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pitr_pg::control::ControlFile;
use pitr_pg::walname::WalFileName;
use pitr_pg::{TimelineHistory, TimelineId, WalSegSize};
use pitr_proto::repl::connect_replication;
use pitr_proto::ConnParams;
use pitr_repo::ClusterRepo;

use super::conf::{self, conninfo, StandbySettings};
use super::create::{
    check_identity, ensure_slot, restore_standby, settings_for, start_standby, StandbyRestore,
    StartSpec, Started,
};
use super::local::{self, current_timeline, ensure_stopped, owner_for, query_one};
use super::StandbyError;
use crate::restore::OsUser;

/// How the old primary is brought onto the new timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejoinMethod {
    /// `pg_rewind` when allowed, else a restore.
    Auto,
    /// `pg_rewind --source-server`.
    Rewind,
    /// A `--delta` restore from the repository.
    Restore,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RejoinOptions {
    /// The former primary's data directory (stopped).
    pub pgdata: PathBuf,
    /// The new primary (`-h -p -U`, `-d` for pg_rewind's session, default `postgres`).
    pub conn: ConnParams,
    /// `--method`.
    pub method: RejoinMethod,
    /// `--slot` on the new primary.
    pub slot: Option<String>,
    /// `application_name` in `primary_conninfo`.
    pub application_name: Option<String>,
    /// `restore_command`, when a repository is given.
    pub restore_command: Option<String>,
    /// `--set NAME=VALUE`.
    pub extra: Vec<(String, String)>,
    /// Files restored in parallel.
    pub jobs: usize,
    /// `--pg-bin`.
    pub pg_bin: Option<PathBuf>,
    /// `--start`.
    pub start: Option<StartSpec>,
    /// How long to wait for the new timeline's history file in the repository.
    pub timeout: Duration,
}

/// What will be done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejoinPlan {
    /// The data directory.
    pub pgdata: PathBuf,
    /// Its major version.
    pub pg_major: u32,
    /// Whom its files belong to (as root).
    pub owner: Option<OsUser>,
    /// The method chosen (never `Auto`).
    pub method: RejoinMethod,
    /// Why.
    pub reason: String,
    /// The cluster's system identifier (pg_control).
    pub system_id: String,
    /// WAL segment size (pg_control).
    #[serde(skip)]
    seg_size: WalSegSize,
    #[serde(skip)]
    opts: RejoinOptions,
}

/// What was done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejoinReport {
    /// The plan carried out.
    pub plan: RejoinPlan,
    /// The new primary.
    pub primary: String,
    /// Its timeline, which the node now follows.
    pub timeline: u32,
    /// The backup restored (restore method).
    pub restored_backup: Option<String>,
    /// What pg_rewind said (rewind method).
    pub rewind_output: Option<String>,
    /// Whether the slot was created now.
    pub slot_created: bool,
    /// The standby settings written.
    pub settings: StandbySettings,
    /// The started server.
    pub started: Option<Started>,
    /// Seconds in all.
    pub seconds: f64,
}

/// Checks the directory (a stopped cluster), the OS user, and chooses the method from
/// pg_control.
pub fn plan_rejoin(opts: &RejoinOptions) -> Result<RejoinPlan, StandbyError> {
    let pgdata =
        std::path::absolute(&opts.pgdata).map_err(StandbyError::io("resolve", &opts.pgdata))?;
    let pg_major = local::pgdata_major(&pgdata)?;
    ensure_stopped(&pgdata)?;
    let owner = owner_for(&pgdata, None)?;
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|e| StandbyError::NotPgdata {
        pgdata: pgdata.clone(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let control = ControlFile::parse(&bytes).map_err(|e| StandbyError::NotPgdata {
        pgdata: pgdata.clone(),
        reason: format!("{}: {e}", path.display()),
    })?;
    let rewindable = control.data_checksum_version > 0 || control.wal_log_hints;
    let why = if control.data_checksum_version > 0 {
        "the cluster has data checksums, so pg_rewind can rewind it".to_string()
    } else if control.wal_log_hints {
        "wal_log_hints was on, so pg_rewind can rewind it".to_string()
    } else {
        "the cluster has neither data checksums nor wal_log_hints, so pg_rewind cannot rewind it"
            .to_string()
    };
    let (method, reason) = match opts.method {
        RejoinMethod::Rewind if !rewindable => {
            return Err(StandbyError::Usage(format!(
                "cannot rewind {}: {why}\nhint: use --method restore (a --delta restore from the repository), or let pitr choose (--method auto)",
                pgdata.display()
            )))
        }
        RejoinMethod::Auto | RejoinMethod::Rewind if rewindable => (RejoinMethod::Rewind, why),
        RejoinMethod::Auto => (
            RejoinMethod::Restore,
            format!("{why}: restoring from the repository with --delta"),
        ),
        RejoinMethod::Restore => (RejoinMethod::Restore, "--method restore".to_string()),
        RejoinMethod::Rewind => (RejoinMethod::Rewind, why),
    };
    if method == RejoinMethod::Restore && opts.restore_command.is_none() {
        return Err(StandbyError::Usage(format!(
            "rejoining {} needs a restore from the repository ({reason})\nhint: pass --repo PATH|URL",
            pgdata.display()
        )));
    }
    if let Some(s) = &opts.slot {
        pitr_proto::repl::validate_slot_name(s)?;
    }
    Ok(RejoinPlan {
        pgdata: pgdata.clone(),
        pg_major,
        owner,
        method,
        reason,
        system_id: control.system_id.to_string(),
        seg_size: control.wal_seg_size,
        opts: RejoinOptions {
            pgdata,
            ..opts.clone()
        },
    })
}

/// Carries the plan out.
pub async fn rejoin(
    plan: RejoinPlan,
    cluster: Option<&ClusterRepo>,
) -> Result<RejoinReport, StandbyError> {
    let t0 = Instant::now();
    let opts = &plan.opts;
    let mut sql_params = opts.conn.clone();
    if sql_params.dbname.is_none() {
        sql_params.dbname = Some("postgres".into());
    }
    let client = pitr_proto::connect(&sql_params).await?;
    let primary = client.endpoint().to_string();
    let recovery = query_one(
        &client,
        "pg_is_in_recovery",
        "SELECT pg_is_in_recovery()::text",
    )
    .await?;
    if recovery.as_deref() != Some("false") {
        return Err(StandbyError::Server(format!(
            "the server at {primary} is a standby, not the new primary\nhint: promote it first (pitr standby promote), or give -h/-p of the new primary"
        )));
    }
    let system_id = query_one(
        &client,
        "pg_control_system",
        "SELECT system_identifier::text FROM pg_control_system()",
    )
    .await?
    .unwrap_or_default();
    if system_id != plan.system_id {
        return Err(StandbyError::Server(format!(
            "the server at {primary} is system {system_id}, but {} holds system {}: they are not the same cluster\nhint: give -h/-p of the server promoted from this cluster's standby",
            plan.pgdata.display(),
            plan.system_id
        )));
    }
    let timeline = current_timeline(&client).await?;
    let mut repl = connect_replication(&opts.conn).await?;
    let settings = settings_for(
        &repl,
        opts.application_name.as_deref(),
        opts.slot.as_deref(),
        opts.restore_command.as_deref(),
        &opts.extra,
    );
    let (restored_backup, rewind_output) = match plan.method {
        RejoinMethod::Restore => {
            let cluster = cluster
                .ok_or_else(|| StandbyError::Usage("rejoin by restore needs --repo".into()))?;
            check_identity(cluster, system_id.parse().unwrap_or_default()).await?;
            wait_fork(cluster, &client, timeline, plan.seg_size, opts.timeout).await?;
            let label = restore_standby(
                cluster,
                &StandbyRestore {
                    pgdata: plan.pgdata.clone(),
                    owner: plan.owner.as_ref().map(|o| o.name.clone()),
                    backup: None,
                    jobs: opts.jobs,
                    restore_command: opts.restore_command.clone().unwrap_or_default(),
                    delta: true,
                },
            )
            .await?;
            (Some(label), None)
        }
        _ => {
            let db = sql_params.dbname.as_deref().unwrap_or("postgres");
            let source = conninfo(client.endpoint(), client.user(), &[("dbname", db)]);
            (None, Some(rewind(&plan, &settings, &source)?))
        }
    };
    let slot_created = match &opts.slot {
        Some(s) => ensure_slot(&mut repl, s).await?,
        None => false,
    };
    let _ = repl.close().await;
    conf::write(&plan.pgdata, &settings, plan.owner.as_ref())?;
    let started = match &opts.start {
        Some(spec) => Some(start_standby(&plan.pgdata, plan.owner.as_ref(), spec).await?),
        None => None,
    };
    Ok(RejoinReport {
        primary,
        timeline: timeline.0,
        restored_backup,
        rewind_output,
        slot_created,
        settings,
        started,
        seconds: t0.elapsed().as_secs_f64(),
        plan,
    })
}

/// `pg_rewind --target-pgdata DIR --source-server SOURCE`, as the owner. With a repository the
/// standby settings are written first, so that `--restore-target-wal` fetches WAL the old
/// primary no longer has from the repository (pg_rewind then copies the new primary's
/// configuration over them; they are written again afterwards).
fn rewind(
    plan: &RejoinPlan,
    settings: &StandbySettings,
    source: &str,
) -> Result<String, StandbyError> {
    let opts = &plan.opts;
    let bindir = local::bindir(opts.pg_bin.as_deref(), plan.pg_major, &["pg_rewind"])?;
    let mut args: Vec<std::ffi::OsString> = vec![
        "--target-pgdata".into(),
        plan.pgdata.clone().into(),
        "--source-server".into(),
        source.into(),
    ];
    if let Some(cmd) = &settings.restore_command {
        // Without read-ahead: pg_rewind walks pg_wal, where the read-ahead spool would be
        // filled meanwhile.
        let during = StandbySettings {
            restore_command: Some(cmd.replace(" archive-get %f ", " archive-get --prefetch 0 %f ")),
            ..settings.clone()
        };
        conf::write(&plan.pgdata, &during, plan.owner.as_ref())?;
        // Not a standby while pg_rewind runs its single-user crash recovery, if it must.
        let signal = plan.pgdata.join("standby.signal");
        std::fs::remove_file(&signal).map_err(StandbyError::io("remove", &signal))?;
        args.push("--restore-target-wal".into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    local::run_program(
        &bindir.join("pg_rewind"),
        &refs,
        plan.owner.as_ref(),
        &plan.pgdata,
        Some(
            "the new primary must allow this connection (a superuser, or a role granted pg_rewind's functions) and still hold the WAL since the timelines diverged; else rejoin with --method restore (a --delta restore from the repository)"
            .to_string(),
        ),
    )
}

/// Waits until the repository holds the history file of `timeline` (the new primary archives
/// it right after its promotion) and the new timeline's first segment, switching WAL on the
/// new primary if needed.
///
/// Why the segment: the old primary archived the rest of its last segment on the old timeline
/// when it shut down (PostgreSQL switches WAL at a shutdown with archiving on), WAL that goes
/// past the fork. A standby looks for each segment in the archive on the newest timeline first
/// and then on older ones, so while the new timeline's segment holding the fork is missing
/// from the repository it would replay the old primary's own WAL past the fork.
async fn wait_fork(
    cluster: &ClusterRepo,
    client: &pitr_proto::PgClient,
    timeline: TimelineId,
    seg_size: WalSegSize,
    timeout: Duration,
) -> Result<(), StandbyError> {
    if timeline.0 <= 1 {
        return Ok(());
    }
    let t0 = Instant::now();
    let name = format!("{}.history", timeline.hex8());
    let history = wait_object(cluster, &name, t0, timeout).await?;
    let parsed = TimelineHistory::parse(timeline, &history)
        .map_err(|e| StandbyError::Server(format!("{name} in the repository: {e}")))?;
    let Some(fork) = parsed.begin_of(timeline) else {
        return Ok(());
    };
    let segment = seg_size.segno_of(fork).file_name(timeline, seg_size);
    let wal = WalFileName::parse(&segment)
        .map_err(|e| StandbyError::Server(format!("segment {segment}: {e}")))?;
    if cluster.get_wal(&wal).await?.is_none() {
        tracing::info!("switching WAL on the new primary so that {segment} is archived");
        if let Err(e) = client
            .query_text("pg_switch_wal", "SELECT pg_switch_wal()::text")
            .await
        {
            tracing::warn!("cannot switch WAL on the new primary ({e}); waiting for {segment}");
        }
    }
    wait_object(cluster, &segment, t0, timeout).await?;
    Ok(())
}

/// Waits until the repository holds the WAL file `name`; its content.
async fn wait_object(
    cluster: &ClusterRepo,
    name: &str,
    t0: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, StandbyError> {
    let wal = WalFileName::parse(name).map_err(|e| StandbyError::Server(format!("{name}: {e}")))?;
    loop {
        if let Some(bytes) = cluster.get_wal(&wal).await? {
            return Ok(bytes);
        }
        if t0.elapsed() > timeout {
            return Err(StandbyError::Timeout {
                what: format!(
                    "{name} (the new primary's timeline) to reach the repository; check the new primary's archive_command"
                ),
                secs: timeout.as_secs(),
                log: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
