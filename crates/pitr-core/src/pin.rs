//! `pitr pin LABEL` / `pitr unpin LABEL` (and `pitr backup --keep`): backups that `expire` never
//! removes. A pin is a metadata object beside the backups ([`pitr_repo::pin`]); `expire` keeps a
//! pinned backup, its parents and the WAL from its start on, and says so.

use pitr_repo::{ClusterRepo, Pin, RepoError};
use serde::Serialize;

/// A backup that cannot be pinned or unpinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// No complete backup has that label.
    #[error(
        "cluster {cluster:?} has no backup {label:?}\nhint: `pitr info` lists the backups{known}"
    )]
    NoSuchBackup {
        /// Cluster.
        cluster: String,
        /// The label asked for.
        label: String,
        /// `: A, B` (the labels there are), or empty.
        known: String,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What `pin`/`unpin` did.
#[derive(Debug, Clone, Serialize)]
pub struct PinReport {
    /// Cluster.
    pub cluster: String,
    /// The backup.
    pub label: String,
    /// Pinned after the command.
    pub pinned: bool,
    /// The state before the command was the same (pinning a pinned backup, unpinning one that
    /// was not pinned).
    pub unchanged: bool,
    /// The pin (after `pin`).
    pub pin: Option<Pin>,
}

/// Pins backup `label`; `how` says by what (`pin`, `backup --keep`).
pub async fn pin(cluster: &ClusterRepo, label: &str, how: &str) -> Result<PinReport, PinError> {
    if cluster.manifest(label).await?.is_none() {
        let labels = cluster.backup_labels().await.unwrap_or_default();
        return Err(PinError::NoSuchBackup {
            cluster: cluster.name().to_string(),
            label: label.to_string(),
            known: if labels.is_empty() {
                String::new()
            } else {
                format!(": {}", labels.join(", "))
            },
        });
    }
    if let Some(existing) = cluster.pin(label).await? {
        return Ok(PinReport {
            cluster: cluster.name().to_string(),
            label: label.to_string(),
            pinned: true,
            unchanged: true,
            pin: Some(existing),
        });
    }
    let pin = Pin {
        label: label.to_string(),
        pinned_at: crate::history::now(),
        by: pitr_os::effective_user_name(),
        how: how.to_string(),
    };
    cluster.put_pin(&pin).await?;
    Ok(PinReport {
        cluster: cluster.name().to_string(),
        label: label.to_string(),
        pinned: true,
        unchanged: false,
        pin: Some(pin),
    })
}

/// Unpins backup `label` (the next `expire` applies the policy to it). Unpinning a label that
/// is not pinned is not an error (a backup already expired cannot be pinned anyway).
pub async fn unpin(cluster: &ClusterRepo, label: &str) -> Result<PinReport, PinError> {
    let removed = cluster.remove_pin(label).await?;
    if !removed && cluster.manifest(label).await?.is_none() {
        return Err(PinError::NoSuchBackup {
            cluster: cluster.name().to_string(),
            label: label.to_string(),
            known: String::new(),
        });
    }
    Ok(PinReport {
        cluster: cluster.name().to_string(),
        label: label.to_string(),
        pinned: false,
        unchanged: !removed,
        pin: None,
    })
}
