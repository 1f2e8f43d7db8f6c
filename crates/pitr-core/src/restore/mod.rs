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
mod replay;
pub mod start;
pub mod target;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

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
pub use replay::{replay_span, ReplayProgress};
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
    /// Whether the restored server archives (`--archive-mode`).
    pub archive_mode: ArchiveMode,
}

/// `--archive-mode`: whether the restored server archives WAL as the original did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveMode {
    /// The archiving settings are left as the backup has them: right when the restored cluster
    /// replaces the original (it archives its new timeline into the repository).
    #[default]
    Preserve,
    /// `archive_mode = off` (and `archive_command`, `archive_library` cleared): for a restore
    /// made only to look at data, which must never archive a new timeline into the repository.
    Off,
}

impl ArchiveMode {
    /// The settings written into `postgresql.auto.conf` for this mode on PostgreSQL `major`.
    pub fn settings(self, major: u32) -> Vec<(&'static str, String)> {
        match self {
            ArchiveMode::Preserve => Vec::new(),
            ArchiveMode::Off => {
                let mut s = vec![
                    ("archive_mode", "off".to_string()),
                    ("archive_command", String::new()),
                ];
                // archive_library exists from PostgreSQL 15 on; an unknown name would stop
                // an older server from starting.
                if major >= 15 {
                    s.push(("archive_library", String::new()));
                }
                s
            }
        }
    }
}

impl fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveMode::Preserve => "preserve",
            ArchiveMode::Off => "off",
        })
    }
}

impl std::str::FromStr for ArchiveMode {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<ArchiveMode, TargetError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "preserve" => Ok(ArchiveMode::Preserve),
            "off" => Ok(ArchiveMode::Off),
            _ => Err(TargetError::ArchiveMode {
                input: s.to_string(),
            }),
        }
    }
}

/// Receives progress while files are restored (see [`crate::progress::Progress`]).
pub use crate::progress::Progress;
