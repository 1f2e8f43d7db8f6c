//! Why a scan failed.

use pitr_pg::wal::WalError;
use pitr_pg::Lsn;
use pitr_repo::RepoError;

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum WalScanError {
    /// Repository problem (including a segment whose checksum does not match).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Nothing archived for the cluster.
    #[error("cluster {cluster:?} has no archived WAL in {repo}\nhint: check --repo and --cluster, and that archive_command runs `pitr archive-push %p`")]
    NoWal {
        /// Cluster name.
        cluster: String,
        /// Repository location.
        repo: String,
    },
    /// The timeline asked for has no archived WAL.
    #[error("timeline {tli} has no archived WAL (archived timelines: {available})")]
    NoTimeline {
        /// Timeline asked for.
        tli: u32,
        /// Timelines that have WAL.
        available: String,
    },
    /// `--from` / `--to` cannot be parsed.
    #[error("invalid {flag} {input:?}: {reason}\nhint: give an LSN (0/4031F10), a WAL segment name (000000010000000000000004) or a time ('2025-07-10 12:36:52+02')")]
    Bound {
        /// Which flag.
        flag: &'static str,
        /// What was given.
        input: String,
        /// Why it is not valid.
        reason: String,
    },
    /// `--from` is after `--to`.
    #[error("--from {from} is after --to {to}")]
    EmptyRange {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// No archived segment in the range.
    #[error("no archived WAL of timeline {tli} between {from} and {to}")]
    NothingInRange {
        /// Timeline.
        tli: u32,
        /// Range start.
        from: String,
        /// Range end.
        to: String,
    },
    /// The WAL is damaged in the middle (valid WAL continues after the bad spot).
    #[error("archived WAL is damaged at {lsn} (segment {segment}): {source}")]
    Damaged {
        /// Where.
        lsn: Lsn,
        /// Segment being decoded.
        segment: String,
        /// The decoder's error.
        source: WalError,
    },
    /// The history file of the timeline is unreadable.
    #[error("timeline history {name}: {reason}")]
    History {
        /// File name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl WalScanError {
    /// True for errors in the options rather than in the data.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WalScanError::Bound { .. }
                | WalScanError::EmptyRange { .. }
                | WalScanError::NoTimeline { .. }
        )
    }

    /// True when stored data failed verification.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            WalScanError::Damaged { .. } | WalScanError::Repo(RepoError::Corrupt { .. })
        )
    }
}
