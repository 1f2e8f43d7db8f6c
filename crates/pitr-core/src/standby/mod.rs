//! `pitr standby create|promote|rejoin`: streaming standbys made, promoted and rebuilt by pitr.
//!
//! - [`create`](mod@create): a standby of the server given by `-h -p -U`, from a base backup
//!   taken over the replication protocol straight into the data directory
//!   ([`receive`](mod@receive), the same `BASE_BACKUP` client and tar reader as
//!   `backup --method replication`), or restored from the repository with the restore engine
//!   (`--from-repo`).
//! - [`promote`](mod@promote): `pg_ctl promote`, then waits until the server takes writes and
//!   reports its new timeline.
//! - [`rejoin`](mod@rejoin): a stopped former primary follows the new primary, rewound with
//!   `pg_rewind` when pg_control says it may be (data checksums or `wal_log_hints`), else
//!   restored from the repository with `--delta` as a standby along the new timeline.
//!
//! Every command plans first (checks the directory, the server, the OS user) and then
//! executes, returning a report. The standby settings (`primary_conninfo`,
//! `primary_slot_name`, `restore_command` through `pitr archive-get`) are one block in
//! `postgresql.auto.conf` ([`conf`]), replaced as a whole when written again.

pub mod conf;
pub mod create;
pub mod local;
pub mod promote;
pub mod receive;
pub mod rejoin;

use std::path::{Path, PathBuf};

pub use conf::StandbySettings;
pub use create::{create, plan_create, CreateOptions, CreatePlan, CreateReport, CreateSource};
pub use promote::{promote, PromoteOptions, PromoteReport};
pub use rejoin::{plan_rejoin, rejoin, RejoinMethod, RejoinOptions, RejoinPlan, RejoinReport};

use crate::pgbin::PgBinError;
use crate::restore::start::StartError;
use crate::restore::RestoreError;

/// Why a standby command failed.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The target directory holds files.
    #[error("{} is not empty ({entries} entries)\nhint: give an empty or missing directory, or remove its contents first", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// How many entries it holds.
        entries: usize,
    },
    /// A server runs on the data directory.
    #[error("a PostgreSQL server (pid {pid}) is running on {}\nhint: stop it first: pg_ctl -D {} stop", pgdata.display(), pgdata.display())]
    Running {
        /// The data directory.
        pgdata: PathBuf,
        /// The postmaster's pid.
        pid: u32,
    },
    /// No server runs on the data directory.
    #[error("no PostgreSQL server is running on {}\nhint: start the standby first (pg_ctl -D {} start); a stopped standby cannot be promoted", pgdata.display(), pgdata.display())]
    NotRunning {
        /// The data directory.
        pgdata: PathBuf,
    },
    /// The server is a primary, not a standby.
    #[error("the server running on {} is not a standby (pg_is_in_recovery() is false): it already accepts writes\nhint: promote only a standby; to make this server follow another, stop it and run pitr standby rejoin", pgdata.display())]
    NotStandby {
        /// The data directory.
        pgdata: PathBuf,
    },
    /// Not a PostgreSQL data directory.
    #[error("{} is not a PostgreSQL data directory ({reason})\nhint: pass the data directory of the cluster with --pgdata", pgdata.display())]
    NotPgdata {
        /// The directory.
        pgdata: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The OS user may not work on the directory.
    #[error("{} belongs to OS user {owner}, but pitr runs as {me}\nhint: run pitr as {owner} (e.g. sudo -u {owner} pitr ...), or as root", path.display())]
    WrongUser {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: String,
        /// Who runs pitr.
        me: String,
    },
    /// The other server is not what the command needs.
    #[error("{0}")]
    Server(String),
    /// Options that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A PostgreSQL program failed.
    #[error("{program} failed (exit status {status}):\n{output}{}", hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Program {
        /// The program.
        program: String,
        /// Its exit status (-1: killed by a signal).
        status: i32,
        /// What it printed.
        output: String,
        /// What to do.
        hint: Option<String>,
    },
    /// Waited too long.
    #[error("timed out after {secs} s waiting for {what}{}", log.as_ref().map(|l| format!("\nhint: see the server log {}", l.display())).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        secs: u64,
        /// The server log, when known.
        log: Option<PathBuf>,
    },
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Talking to a server failed.
    #[error(transparent)]
    Proto(#[from] pitr_proto::ProtoError),
    /// The restore engine (`--from-repo`, rejoin by restore).
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Starting the server.
    #[error(transparent)]
    Start(#[from] StartError),
    /// PostgreSQL's programs were not found.
    #[error("{0}\nhint: pass --pg-bin DIR (the directory holding pg_ctl)")]
    PgBin(#[from] PgBinError),
    /// The repository.
    #[error(transparent)]
    Repo(#[from] pitr_repo::RepoError),
}

impl StandbyError {
    /// A closure turning an I/O error on `path` into [`StandbyError::Io`].
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StandbyError {
        let path = path.to_path_buf();
        move |source| StandbyError::Io { op, path, source }
    }

    /// Whether pitr refused (the state of a directory or server), rather than failed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StandbyError::NotEmpty { .. }
                | StandbyError::Running { .. }
                | StandbyError::NotRunning { .. }
                | StandbyError::NotStandby { .. }
                | StandbyError::NotPgdata { .. }
                | StandbyError::WrongUser { .. }
                | StandbyError::Server(_)
        )
    }
}
