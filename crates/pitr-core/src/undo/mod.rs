//! `pitr undo XID --table SCHEMA.NAME`: undoes an incident (a `DROP TABLE`, a mass `UPDATE` or
//! `DELETE` found by `pitr wal incidents`) in the live cluster, without replacing it.
//!
//! 1. [`plan`]: the live database and tables, the backup that reaches just before transaction
//!    XID, what a partial restore of that one database needs on disk (the other databases'
//!    relation files become sparse zeroed files, as pgBackRest's `--db-include` does), and the
//!    scratch disk's free space. `--dry-run` prints this and stops; too small a disk is refused.
//! 2. [`run`]: restore into a fresh scratch directory with archiving off ([`crate::drill`]'s
//!    scratch machinery), start it on a free port with `--target-xid XID --target-exclusive`,
//!    promote; then per table ([`source`]): a dropped table is dumped with its indexes,
//!    constraints, defaults, comments, grants and owner (renamed first for `--as`); the rows of a
//!    table that still exists are copied to `NAME_before_XID`; PostgreSQL's own `pg_dump` of the
//!    backup's major writes the SQL. [`live`] loads it in one transaction, checks row counts and
//!    checksums against the scratch cluster, and commits only then. The scratch server is
//!    stopped and removed whatever happened ([`guard`] stops it if pitr is killed), and the
//!    undo is recorded in the repository's history.
//!
//! Foreign keys of *other* tables that pointed at a dropped table were dropped with it
//! (`DROP … CASCADE`) and are not part of the table's dump: they are not recreated (rows written
//! since may violate them); the report gives the `ALTER TABLE … ADD CONSTRAINT … NOT VALID`
//! statements to run.

mod guard;
mod live;
mod names;
mod source;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use pitr_proto::ConnParams;
use serde::Serialize;

use crate::history::HistoryRecord;
use crate::restore::{RestoreError, TimelineGoal};

pub use live::LiveDatabase;
pub use names::QualName;

/// What to undo, and where.
#[derive(Debug, Clone)]
pub struct UndoOptions {
    /// The transaction to undo.
    pub xid: u64,
    /// The tables it damaged.
    pub tables: Vec<QualName>,
    /// `--as`: the name the table (or the rows) is brought back under (one table only).
    pub as_name: Option<QualName>,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// The live cluster (`-h -p -U -d`).
    pub live: ConnParams,
    /// Where the scratch directory is made.
    pub scratch_parent: PathBuf,
    /// A given backup instead of the newest one that reaches the target.
    pub backup: Option<String>,
    /// Timeline to recover along.
    pub timeline: TimelineGoal,
    /// PostgreSQL binaries (found by the backup's major when `None`).
    pub pg_bin: Option<PathBuf>,
    /// OS user owning the scratch cluster when run as root.
    pub owner: Option<String>,
    /// Files restored in parallel.
    pub jobs: usize,
    /// The scratch server's `restore_command`.
    pub restore_command: String,
    /// Give up waiting for recovery after this long.
    pub timeout: Duration,
}

/// What happens to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The table is gone from the live cluster: it comes back whole.
    Dropped,
    /// The table is there: its rows as they were go into a new table beside it.
    Rows,
}

/// One table in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    /// The table named.
    pub table: QualName,
    /// Whether a table by that name exists in the live cluster now.
    pub exists_now: bool,
    /// What happens (when the table exists under the same OID it had; a table of that name
    /// made after the drop is found out once the scratch cluster runs, and refused without
    /// `--as`).
    pub mode: Mode,
    /// The table created in the live cluster.
    pub destination: QualName,
}

/// Everything an undo will do, decided before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct UndoPlan {
    /// The transaction.
    pub xid: u64,
    /// The recovery target, described.
    pub target: String,
    /// The backup restored.
    pub backup: String,
    /// Its PostgreSQL major.
    pub pg_major: u32,
    /// The live database restored.
    pub database: LiveDatabase,
    /// The tables.
    pub tables: Vec<TablePlan>,
    /// Bytes restored (the cluster-wide files and the database).
    pub restore_bytes: u64,
    /// Bytes a full restore of the backup would write.
    pub full_restore_bytes: u64,
    /// Databases (OIDs) left out: their relation files are sparse zeroed files (every user
    /// database but the one restored; the system databases are always restored).
    pub left_out_databases: Vec<u32>,
    /// Disk space the scratch directory needs: the restore, the WAL replayed, the dump.
    pub disk_needed: u64,
    /// Free space where the scratch directory goes.
    pub disk_free: u64,
    /// The scratch directory.
    pub scratch: PathBuf,
}

/// One table undone.
#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    /// The table named.
    pub table: QualName,
    /// What was done.
    pub mode: Mode,
    /// The table created in the live cluster.
    pub destination: QualName,
    /// Rows copied.
    pub rows: u64,
    /// md5 of the rows' text in order, equal in the scratch and the live cluster.
    pub checksum: String,
    /// Foreign keys of other tables that pointed at the dropped table and are missing now.
    pub missing_foreign_keys: Vec<String>,
}

/// What an undo did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct UndoReport {
    /// `planned` (dry run), `undone`, `refused` (nothing changed) or `failed`.
    pub outcome: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// The plan.
    pub plan: UndoPlan,
    /// The tables brought back.
    pub tables: Vec<TableResult>,
    /// Statements for the DBA to review and run (nothing of them was run).
    pub suggestions: Vec<String>,
    /// Disk space the scratch directory took once restored (allocated blocks).
    pub scratch_bytes: Option<u64>,
    /// The scratch server's port.
    pub port: Option<u16>,
    /// The scratch server's last log lines, when the undo failed (the log goes with the
    /// scratch directory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_log_tail: Vec<String>,
    /// Scratch directories of earlier, interrupted undos removed first.
    pub stale_removed: Vec<PathBuf>,
    /// The history record (not for a dry run).
    pub record: Option<HistoryRecord>,
    /// Its key in the repository.
    pub history_key: Option<String>,
}

/// Why an undo did not start, or failed.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// Options that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Refused before anything was changed.
    #[error("{0}")]
    Refused(String),
    /// A step failed.
    #[error("{0}")]
    Failed(String),
    /// Planning the restore.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Talking to PostgreSQL.
    #[error(transparent)]
    Proto(#[from] pitr_proto::ProtoError),
}

pub use steps::{plan, run};
