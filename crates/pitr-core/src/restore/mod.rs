//! `pitr restore`: choose the base backup that reaches the recovery target, restore it into a
//! data directory (verified, in parallel, optionally reusing matching files), and configure
//! PostgreSQL's recovery.
//!
//! Two steps, as in every pitr command: [`plan()`] ([`plan`](mod@plan) module) reads the
//! repository and the target directories and decides everything without changing anything
//! (`--dry-run` prints it); a target the repository cannot reach, or a directory that may not
//! be written, is refused there, before anything is touched. [`execute()`]
//! ([`execute`](mod@execute) module) carries the plan out, step by step, and returns a
//! [`RestoreReport`]. [`start`] optionally starts the restored server and waits for recovery to
//! end.
//!
//! Shared by both: [`target`] (what the user asked for), [`choose`] and [`locate`] (the pure
//! rules of backup choice, and finding a name or xid in the archived WAL), [`layout`] (where
//! manifest paths land), [`conf`] (PostgreSQL configuration files) and [`error`].

pub mod choose;
pub mod conf;
pub mod error;
pub mod execute;
pub mod layout;
pub mod locate;
pub mod plan;
pub mod port;
pub mod start;
pub mod target;

use std::fmt;
use std::path::PathBuf;

use serde::Serializer;

pub use choose::{
    choose_backup, BackupPoint, Choice, LocatedTarget, PathStep, Rejection, Unreachable, WalIndex,
    Window,
};
pub use error::{ErrorClass, RestoreError};
pub use execute::{execute, RestoreReport};
pub use plan::backup::recovery_window;
pub use plan::dirs::DirState;
pub use plan::owner::OsUser;
pub use plan::{plan, BackupSummary, DirAction, RestorePlan, Setting, TablespacePlan};
pub use target::{RecoveryTarget, TargetAction, TargetError, TargetSpec, TimelineGoal};

pub(crate) fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn ser_opt_display<T: fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory to restore into.
    pub pgdata: PathBuf,
    /// Recovery target, timeline and action.
    pub spec: TargetSpec,
    /// Restore this backup instead of choosing one (still validated against the target).
    pub backup: Option<String>,
    /// Reuse files in `pgdata` whose size and checksum match; remove files not in the backup.
    pub delta: bool,
    /// Delete the contents of `pgdata` (and of tablespace directories) first.
    pub force: bool,
    /// Write `standby.signal` instead of `recovery.signal`.
    pub standby: bool,
    /// Tablespace OID → directory to restore it to (default: its original location).
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// OS user to own the restored files when running as root (default: owner of `pgdata`, or
    /// of its parent).
    pub owner: Option<String>,
    /// Files restored in parallel.
    pub jobs: usize,
    /// The `restore_command` to configure (see [`conf::restore_command`]).
    pub restore_command: String,
}

/// Receives progress while files are restored (see [`crate::progress::Progress`]).
pub use crate::progress::Progress;
