//! Command-line arguments. Every global option may come before or after the command, from the
//! environment, or from the TOML config file (in that order of precedence).

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Args, CommandFactory, Parser, Subcommand};

/// Continuous archiving and point-in-time recovery for PostgreSQL 14–18.
#[derive(Debug, Parser)]
#[command(name = "pitr", version, disable_help_flag = true, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 success; 1 archive-get: file not in the repository; 2 usage error; \
3 error (check: a check failed); 4 refused (conflicting or foreign data, a --repo directory that is \
not a repository, a recovery target the repository cannot reach, a restore into a non-empty directory, \
a standby command on a directory or server in the wrong state, an undo that would overwrite a \
table or lacks scratch space); 5 corruption detected; archive-get uses 255 for any \
failure other than absence, so that PostgreSQL stops recovery instead of ending it early.\n\n\
S3 repositories (--repo s3://bucket/prefix): credentials from AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or s3_access_key_id / s3_secret_access_key in the \
config file), never from the command line; the bucket must exist.\n\n\
Documentation: docs/ in the source tree (user guide, repository format, recovery cookbook)."
)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every command.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository: a directory, or s3://bucket/prefix
    #[arg(long, global = true, env = "PITR_REPO", value_name = "PATH|URL")]
    pub repo: Option<String>,
    /// Cluster name inside the repository [default: main]
    #[arg(long, global = true, env = "PITR_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// TOML config file [default: /etc/pitr/pitr.toml when it exists]
    #[arg(long, global = true, env = "PITR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL data directory
    #[arg(long, global = true, env = "PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Database server host or socket directory
    #[arg(short = 'h', long, global = true, env = "PGHOST", value_name = "HOST")]
    pub host: Option<String>,
    /// Database server port
    #[arg(short = 'p', long, global = true, env = "PGPORT", value_name = "PORT")]
    pub port: Option<u16>,
    /// Database user name
    #[arg(short = 'U', long, global = true, env = "PGUSER", value_name = "USER")]
    pub user: Option<String>,
    /// Database name to connect to
    #[arg(
        short = 'd',
        long,
        global = true,
        env = "PGDATABASE",
        value_name = "DBNAME"
    )]
    pub dbname: Option<String>,
    /// Key file of an encrypted repository (64 hex digits, or a passphrase); given to `init`,
    /// it makes the new repository encrypted
    #[arg(long, global = true, env = "PITR_ENCRYPTION_KEY", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Compression for new objects: zstd (= zstd:1, tuned for WAL), zstd:LEVEL (1-19), lz4 or
    /// none [default: zstd]
    #[arg(long, global = true, env = "PITR_COMPRESS", value_name = "ALGO")]
    pub compress: Option<String>,
    /// S3 endpoint URL, e.g. https://minio.example:9000 (path-style addressing) [default: AWS]
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1]
    #[arg(long, global = true, env = "AWS_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// PEM file of CA certificates trusted instead of the system's, for an S3 endpoint with a private CA
    #[arg(long, global = true, env = "PITR_S3_CA_FILE", value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// Seconds a failing S3 request (5xx, 429, timeout, connection error) is retried [default: 60]
    #[arg(
        long,
        global = true,
        env = "PITR_S3_RETRY_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub s3_retry_timeout: Option<u64>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print help
    #[arg(long, global = true, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// `retain_full` from the config file (the `expire` flag wins).
    #[arg(skip)]
    pub retain_full: Option<u32>,
    /// `retain_days` from the config file (the `expire` flag wins).
    #[arg(skip)]
    pub retain_days: Option<u32>,
    /// `archive_async` from the config file (`archive-push --no-async` wins).
    #[arg(skip)]
    pub archive_async: Option<bool>,
    /// `archive_async_jobs` from the config file (the `archive-push` flag wins).
    #[arg(skip)]
    pub archive_async_jobs: Option<usize>,
    /// `archive_async_queue` from the config file (the `archive-push` flag wins).
    #[arg(skip)]
    pub archive_async_queue: Option<usize>,
    /// S3 credentials from the config file (`AWS_ACCESS_KEY_ID` in the environment wins).
    #[arg(skip)]
    pub s3_credentials: Option<pitr_storage::S3Credentials>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (and record a cluster's identity from --pgdata, if given)
    Init(InitArgs),
    /// Archive one WAL file: archive_command = 'pitr archive-push %p'
    #[command(name = "archive-push")]
    ArchivePush(ArchivePushArgs),
    /// Fetch one WAL file: restore_command = 'pitr archive-get %f %p'
    #[command(name = "archive-get")]
    ArchiveGet(ArchiveGetArgs),
    /// Take an online base backup of the running cluster; prints its label
    Backup(BackupArgs),
    /// Show what the repository holds: clusters, archived WAL per timeline, gaps
    Info(InfoArgs),
    /// Re-check every stored checksum, and that each backup's WAL is archived
    Verify(VerifyArgs),
    /// Check the server's archiving setup, then switch WAL and wait until it is in the repository
    Check(CheckArgs),
    /// Apply the retention policy: remove old backups and the WAL only they needed
    Expire(ExpireArgs),
    /// The PITR lab end to end on a throwaway cluster: back up, break, restore three ways
    Demo(DemoArgs),
    /// (internal) fetch WAL segments ahead into an archive-get spool
    #[command(name = "spool-fill", hide = true)]
    SpoolFill(SpoolFillArgs),
    /// (internal) push the WAL files PostgreSQL marked ready into the repository ahead of its
    /// archive-push calls
    #[command(name = "push-ahead", hide = true)]
    PushAhead(PushAheadArgs),
    /// (internal) write the man pages and shell completions into a directory (packaging)
    #[command(name = "generate-assets", hide = true)]
    GenerateAssets(GenerateAssetsArgs),
    /// Restore a base backup into --pgdata and configure recovery to a target
    Restore(RestoreArgs),
    /// Read archived WAL: transactions, restore points, dropped or truncated tables
    #[command(subcommand)]
    Wal(WalCommand),
    /// Restore drill: restore into a scratch directory, start it apart from production, check,
    /// stop, and record the measured recovery time in the repository's history
    Drill(DrillArgs),
    /// The restores and drills recorded in the repository
    History,
    /// Replication and archiving status of the server: standbys and their lag, slots and the
    /// WAL they hold, archiver backlog and failures (a check with --max-lag/--max-archive-age)
    Status(StatusArgs),
    /// Prometheus metrics: backups, archived WAL, the recovery window (text, or served over HTTP)
    Metrics(MetricsArgs),
    /// Receive WAL over the replication protocol (like pg_receivewal) into the repository:
    /// completed segments as archive-push stores them, the one in progress as a .partial
    /// (RPO 0 with --synchronous); runs until SIGTERM/SIGINT
    Stream(StreamArgs),
    /// Write a self-contained HTML page picturing the recovery window (backups, WAL, gaps, timelines)
    Report(ReportArgs),
    /// Streaming standbys: create one (from the primary or the repository), promote it, rejoin
    /// a former primary after a failover
    #[command(subcommand)]
    Standby(crate::commands::standby::StandbyCommand),
    /// Pin a backup: expire never removes it (nor its parents, nor the WAL from its start on)
    Pin(PinArgs),
    /// Unpin a backup: the next expire applies the retention policy to it again
    Unpin(PinArgs),
    /// Undo an incident in the live cluster given by -h -p -U -d: restore only the affected
    /// database to a scratch cluster just before transaction XID, and copy the dropped table
    /// (or the rows as they were before a bad UPDATE/DELETE, into NAME_before_XID) back
    Undo(crate::commands::undo::UndoArgs),
}

/// `pitr pin` / `pitr unpin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The backup's label (as `pitr backup` printed it and `pitr info` lists it)
    pub label: String,
}

/// `pitr wal …`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Every committed or aborted transaction with what it changed, plus restore points and
    /// checkpoints, in WAL order
    Log(WalLogArgs),
    /// Transactions that dropped or truncated tables or deleted/updated many rows, each with
    /// the `pitr restore` command that undoes it
    Incidents(WalIncidentsArgs),
}

/// The WAL range and naming options shared by `pitr wal` commands.
#[derive(Debug, Args)]
pub struct WalRangeArgs {
    /// Start: an LSN (0/4031F10), a segment name, or a time ('2025-07-10 12:36:52+02') [default: oldest archived]
    #[arg(long, value_name = "LSN|SEGMENT|TIME")]
    pub from: Option<String>,
    /// End: an LSN, a segment name (included), or a time [default: end of archived WAL]
    #[arg(long, value_name = "LSN|SEGMENT|TIME")]
    pub to: Option<String>,
    /// Timeline to follow (with its ancestors) [default: the newest archived]
    #[arg(long, value_name = "N")]
    pub timeline: Option<u32>,
    /// Do not ask the running server for relation names (only base backups are used)
    #[arg(long)]
    pub no_live: bool,
}

/// `pitr wal log`.
#[derive(Debug, Args)]
pub struct WalLogArgs {
    /// Range and names.
    #[command(flatten)]
    pub range: WalRangeArgs,
}

/// `pitr wal incidents`.
#[derive(Debug, Args)]
pub struct WalIncidentsArgs {
    /// Range and names.
    #[command(flatten)]
    pub range: WalRangeArgs,
    /// Rows deleted or updated in one table by one transaction above which it is reported
    #[arg(long, default_value_t = 1000, value_name = "ROWS")]
    pub threshold: u64,
}

/// `pitr init`.
#[derive(Debug, Args)]
pub struct InitArgs {}

/// `pitr archive-push`.
#[derive(Debug, Args)]
pub struct ArchivePushArgs {
    /// Path of the WAL file (PostgreSQL's %p)
    pub wal_path: PathBuf,
    /// Push only this file, in this process (no background worker pushing the files PostgreSQL
    /// marked ready ahead of its requests); config: archive_async = false
    #[arg(long)]
    pub no_async: bool,
    /// Files the background worker pushes at the same time [default: 4]; config: archive_async_jobs
    #[arg(long, value_name = "N")]
    pub async_jobs: Option<usize>,
    /// Most files pushed ahead of PostgreSQL's requests [default: 64]; config: archive_async_queue
    #[arg(long, value_name = "N")]
    pub async_queue: Option<usize>,
}

/// `pitr push-ahead` (internal, started by archive-push).
#[derive(Debug, Args)]
pub struct PushAheadArgs {
    /// The pg_wal directory
    #[arg(long)]
    pub pg_wal: PathBuf,
    /// Files pushed at the same time
    #[arg(long)]
    pub jobs: usize,
    /// Most files pushed ahead
    #[arg(long)]
    pub queue: usize,
}

/// `pitr archive-get`.
#[derive(Debug, Args)]
pub struct ArchiveGetArgs {
    /// Name of the WAL file wanted (PostgreSQL's %f)
    pub wal_name: String,
    /// Where to write it (PostgreSQL's %p)
    pub dest: PathBuf,
    /// Segments to fetch ahead in the background while PostgreSQL replays (0 disables)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub prefetch: u32,
    /// Read-ahead directory [default: pitr-spool next to DEST, i.e. inside pg_wal]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

/// `pitr generate-assets` (internal, used by scripts/build-deb.sh).
#[derive(Debug, Args)]
pub struct GenerateAssetsArgs {
    /// Directory to write into: man/ (section 1 pages) and completions/ (bash, zsh, fish)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `pitr spool-fill` (internal, started by archive-get).
#[derive(Debug, Args)]
pub struct SpoolFillArgs {
    /// The spool directory
    #[arg(long)]
    pub spool: PathBuf,
    /// Concurrent fetches
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Segments to fetch, in order
    pub names: Vec<String>,
}

/// `pitr backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// full, or incr (what changed since the last backup: the changed pages of relation files, other changed files whole)
    #[arg(long = "type", value_name = "TYPE", default_value = "full", value_parser = ["full", "incr"])]
    pub kind: String,
    /// Files copied in parallel [default: number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Wait for the next scheduled checkpoint instead of requesting one now
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Seconds to wait for the backup's WAL to reach the repository
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub archive_timeout: u64,
    /// copy: read the data directory here (on the database host); replication: BASE_BACKUP
    /// over a replication connection to -h/-p/-U (from any host); auto: copy when the data
    /// directory (--pgdata, or the server's data_directory) is readable here and is the
    /// server's, else replication
    #[arg(long, default_value = "auto", value_parser = ["auto", "copy", "replication"])]
    pub method: String,
    /// Pin the new backup: expire never removes it (`pitr unpin LABEL` undoes)
    #[arg(long)]
    pub keep: bool,
    /// After a successful backup, apply the retention policy (as `pitr expire` does)
    #[arg(long)]
    pub expire: bool,
    /// With --expire: keep the newest N full backups [default: retain_full from the config]
    #[arg(long, env = "PITR_RETAIN_FULL", value_name = "N")]
    pub retain_full: Option<u32>,
    /// With --expire: keep what recovery to any time in the last D days needs [default:
    /// retain_days from the config]
    #[arg(long, env = "PITR_RETAIN_DAYS", value_name = "D")]
    pub retain_days: Option<u32>,
}

/// `pitr stream`.
#[derive(Debug, Args)]
#[command(
    after_help = "Connects to the server given by -h/-p/-U (a replication connection), starts at \
the slot's restart position (15+), else at the start of the server's current segment, and stores \
each completed segment exactly as archive-push does, so a segment both streamed and archived is one \
object. The segment in progress is kept in the repository as a .partial (written as WAL arrives, or \
every --partial-interval), which archive-get serves under the segment's name while the complete \
segment is not stored. Only WAL durable in the repository is reported as flushed, so the slot keeps \
the rest; with --synchronous, and this --application-name in the primary's \
synchronous_standby_names, a commit is acknowledged only once it is in the repository (RPO 0). \
Reconnects with backoff after the server restarts; follows a timeline switch (a promoted standby) \
with the new history file."
)]
pub struct StreamArgs {
    /// Physical replication slot to stream from (recommended: the server keeps WAL until it
    /// is in the repository)
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Create the slot (reserving WAL) unless it exists
    #[arg(long, requires = "slot")]
    pub create_slot: bool,
    /// Directory for a timeline history file on its way into the repository [default: a
    /// directory under $TMPDIR]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Report WAL as flushed only once it is durable in the repository: with this name in the
    /// primary's synchronous_standby_names, a commit is acknowledged only once it is stored
    /// (RPO 0)
    #[arg(long)]
    pub synchronous: bool,
    /// application_name of the replication connection (what synchronous_standby_names names)
    #[arg(long, value_name = "NAME", default_value = "pitr")]
    pub application_name: String,
    /// Least seconds between two writes of the segment in progress (the .partial) [default: 0
    /// (as WAL arrives) for a directory, 5 for S3; --synchronous writes at once]
    #[arg(long, value_name = "SECONDS")]
    pub partial_interval: Option<f64>,
}

/// `pitr status`.
#[derive(Debug, Args)]
#[command(
    after_help = "Needs no repository. On a primary: pg_stat_replication, pg_replication_slots, \
pg_stat_archiver and the .ready backlog (pg_ls_archive_statusdir: superuser or pg_monitor); on a \
standby: received and replayed positions and the WAL receiver. Exit status (Nagios-style): 0 ok; \
2 a threshold is exceeded (or bad options); 3 the server cannot be queried."
)]
pub struct StatusArgs {
    /// Fail when a standby's replay lag (or, on a standby, its own) exceeds this: a size
    /// (16MB, 1048576) or a duration (30s, 5min, 1h); repeat to give both
    #[arg(long, value_name = "SIZE|DURATION")]
    pub max_lag: Vec<String>,
    /// Fail when the last successful archiving is older than this duration (e.g. 10min)
    #[arg(long, value_name = "DURATION")]
    pub max_archive_age: Option<String>,
}

/// `pitr check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Seconds to wait for the switched WAL segment to reach the repository
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub archive_timeout: u64,
    /// Only read settings and statistics: do not write a WAL record nor switch WAL
    #[arg(long)]
    pub no_switch: bool,
}

/// `pitr expire`.
#[derive(Debug, Args)]
#[command(
    after_help = "Keeps the newest N full backups (with the incrementals built on them) and/or \
every backup that finished in the last D days plus the newest one before (recovery to the start of \
the window restores it); both together keep the union. Archived WAL before the start of the oldest \
backup kept is removed on every timeline; timeline history files stay. Pinned backups (pitr pin, \
backup --keep) always stay, with their parents. Policies can also be set in the config file as \
retain_full / retain_days."
)]
pub struct ExpireArgs {
    /// Keep the newest N full backups
    #[arg(long, env = "PITR_RETAIN_FULL", value_name = "N")]
    pub retain_full: Option<u32>,
    /// Keep what recovery to any time in the last D days needs
    #[arg(long, env = "PITR_RETAIN_DAYS", value_name = "D")]
    pub retain_days: Option<u32>,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `pitr demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// PostgreSQL bin directory [default: pg_config --bindir, PATH, newest /usr/lib/postgresql/*/bin]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Port for the throwaway cluster (Unix socket only)
    #[arg(long, default_value_t = 5499)]
    pub port: u16,
    /// Keep the work directory at the end
    #[arg(long)]
    pub keep: bool,
}

/// `pitr verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Objects checked concurrently [default: number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// `pitr info`.
#[derive(Debug, Args)]
pub struct InfoArgs {}

/// `pitr report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The HTML file to write
    #[arg(long, short = 'o', value_name = "FILE.html")]
    pub output: PathBuf,
    /// Also mark the incidents `pitr wal incidents` finds (reads all archived WAL)
    #[arg(long)]
    pub incidents: bool,
    /// With --incidents: flag transactions that deleted or updated more rows than this
    #[arg(long, value_name = "ROWS", default_value_t = 1000)]
    pub threshold: u64,
}

/// `pitr metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve the metrics over HTTP at http://ADDR/metrics instead of printing them once
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// `pitr restore`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .multiple(false)
        .args(["target_time", "target_lsn", "target_name", "target_xid", "target_immediate"])
))]
#[command(
    after_help = "Without a target, recovery replays all archived WAL and promotes. \
Exit status: 2 bad options; 4 refused (target outside the reachable window, DIR not empty, server running); \
5 repository data damaged; 3 other failures, including a failed --start."
)]
pub struct RestoreArgs {
    /// The recovery target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// What PostgreSQL does at the target: pause, promote or shutdown [default: pause]
    #[arg(long, value_name = "ACTION")]
    pub target_action: Option<String>,
    /// Restore this backup (checked against the target) instead of choosing one
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
    /// Reuse files in DIR with the right size and checksum; remove files not in the backup
    #[arg(long, conflicts_with = "force")]
    pub delta: bool,
    /// Delete everything in DIR (and in tablespace directories) first
    #[arg(long)]
    pub force: bool,
    /// Restore a standby (standby.signal) instead of a point-in-time recovery (recovery.signal)
    #[arg(long)]
    pub standby: bool,
    /// Restore tablespace OID to DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// OS user that owns the restored files when run as root [default: owner of DIR or its parent]
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Files restored in parallel [default: number of CPUs]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Start PostgreSQL afterwards and wait until recovery ends; report where it stopped
    #[arg(long)]
    pub start: bool,
    /// Directory with pg_ctl and postgres for --start [default: pg_config --bindir, /usr/lib/postgresql/<major>/bin, PATH]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// With --start: stop waiting after this many seconds (the server keeps running)
    #[arg(long, value_name = "SECONDS")]
    pub wait_timeout: Option<u64>,
    /// With --start: the server log [default: DIR/log/pitr-start.log]
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Whether the restored server archives: preserve (as the original did: right when it
    /// replaces the original) or off (a restore made to look at data, which must never archive
    /// a new timeline into the repository)
    #[arg(long, value_name = "off|preserve", default_value = "preserve")]
    pub archive_mode: String,
    /// Print the plan (backup, target, WAL, directories, settings) and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// The recovery target options shared by `restore` and `drill` (at most one target).
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// Stop at this time: '2025-07-10 12:36:52.242927-07', ISO 8601, or without zone = local time
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Stop at this WAL position, e.g. 0/4031F10
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Stop at this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Stop at this transaction
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long)]
    pub target_immediate: bool,
    /// Stop just before the target instead of just after it (time, LSN and xid targets)
    #[arg(long)]
    pub target_exclusive: bool,
    /// Timeline to recover along: latest, current or a number [default: latest]
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
}

/// `pitr drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The recovery target [default: the end of archived WAL]
    #[command(flatten)]
    pub target: TargetArgs,
    /// Restore this backup (checked against the target) instead of choosing one
    #[arg(long, value_name = "LABEL")]
    pub backup: Option<String>,
    /// Directory in which a fresh scratch directory is made for the restore [default: the
    /// system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// A query run once recovery ended; the drill fails if it errors or returns a single
    /// `false` (repeatable) [default: connect and list the databases]
    #[arg(long = "check-sql", value_name = "SQL")]
    pub check_sql: Vec<String>,
    /// Keep the scratch directory (the server is stopped anyway)
    #[arg(long)]
    pub keep: bool,
    /// OS user that owns the scratch cluster when run as root [default: owner of the scratch directory's parent, else postgres]
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Files restored in parallel [default: number of CPUs]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Directory with pg_ctl and postgres [default: pg_config --bindir, /usr/lib/postgresql/<major>/bin, PATH]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Give up waiting for recovery after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub wait_timeout: u64,
}

/// Parses the process arguments; `-h` means host, so help is `--help` only (as in psql's `-?`).
pub fn parse() -> Result<Cli, clap::Error> {
    let cmd = Cli::command();
    let cmd = disable_short_help(cmd);
    let matches = cmd.try_get_matches()?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
}

fn disable_short_help(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_flag(true)
        .mut_subcommands(|sub| disable_short_help(sub.disable_help_flag(true)))
}
