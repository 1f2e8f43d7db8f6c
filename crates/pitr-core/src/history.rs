//! What the repository's history records: every `pitr restore` and every `pitr drill`, with
//! when, by whom, from which backup, to which target, and how long it took. Stored through
//! [`pitr_repo::ClusterRepo::record_history`].

use serde::{Deserialize, Serialize};

/// One restore or drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// `restore` or `drill`.
    pub kind: String,
    /// When it started (RFC 3339, UTC).
    pub at: String,
    /// The OS user that ran it.
    pub by: String,
    /// The backup restored.
    pub backup: String,
    /// The recovery target, described.
    pub target: String,
    /// The data directory restored into (a drill's is removed afterwards unless kept).
    pub directory: String,
    /// `passed` / `failed` (drill), `restored` / `started` (restore).
    pub outcome: String,
    /// Where recovery stopped (LSN), when the server was started.
    pub stopped_at: Option<String>,
    /// The timeline the server ended on, when started.
    pub timeline: Option<u32>,
    /// Seconds spent restoring files.
    pub restore_seconds: f64,
    /// Seconds from server start to the end of recovery, when started.
    pub replay_seconds: Option<f64>,
    /// Restore plus replay: the measured recovery time (RTO) of a drill.
    pub total_seconds: f64,
    /// WAL replayed from the backup's start to where recovery stopped, in bytes.
    pub wal_replayed_bytes: Option<u64>,
    /// What failed, or what the checks returned.
    pub detail: Option<String>,
    /// `--archive-mode` of the restored server (`off` or `preserve`; absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_mode: Option<String>,
}

/// Now, as history records write it.
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}
