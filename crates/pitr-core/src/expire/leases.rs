//! What running backups, restores and verifies hold (their leases, see [`pitr_repo::lease`]):
//! `expire` keeps it, with a notice, and ignores leases that lapsed (crashed holders).

use std::collections::BTreeSet;

use jiff::Timestamp;
use pitr_pg::Lsn;
use pitr_repo::{BackupManifest, ClusterRepo, FoundLease, RepoError};

/// The leases in force at one reading.
#[derive(Debug, Default)]
pub(super) struct InUse {
    /// Backup labels covered (with every ancestor of each, which an incremental needs).
    pub backups: BTreeSet<String>,
    /// The smallest LSN from which some holder needs archived WAL.
    pub wal_from: Option<Lsn>,
    /// Unexpired leases, described.
    pub holders: Vec<String>,
    /// Leases that lapsed: their holders stopped renewing them.
    pub lapsed: Vec<FoundLease>,
}

impl InUse {
    /// Who holds `label`, for a notice.
    pub fn who(&self, label: &str) -> String {
        let holders: Vec<&str> = self
            .holders
            .iter()
            .filter(|h| h.contains(label))
            .map(String::as_str)
            .collect();
        if holders.is_empty() {
            "a running command's lease".to_string()
        } else {
            holders.join("; ")
        }
    }
}

/// Reads the leases and what they cover; `manifests` gives the ancestors of leased backups.
pub(super) async fn read(
    cluster: &ClusterRepo,
    manifests: &[BackupManifest],
) -> Result<InUse, RepoError> {
    let now = Timestamp::now();
    let mut in_use = InUse::default();
    for lease in cluster.leases().await? {
        let r = &lease.record;
        if !r.holds_at(now) {
            in_use.lapsed.push(lease);
            continue;
        }
        in_use.holders.push(format!(
            "{} by {} (lease until {}) uses {:?}{}",
            r.holder,
            r.by,
            r.expires,
            r.backups,
            r.wal_from
                .as_ref()
                .map(|l| format!(" and WAL from {l}"))
                .unwrap_or_default()
        ));
        for label in &r.backups {
            let mut cur = Some(label.clone());
            while let Some(l) = cur {
                cur = manifests
                    .iter()
                    .find(|m| m.label == l)
                    .and_then(|m| m.parent.clone());
                if !in_use.backups.insert(l) {
                    break;
                }
            }
        }
        if let Some(l) = r.wal_from.as_deref().and_then(|l| l.parse::<Lsn>().ok()) {
            if in_use.wal_from.is_none_or(|w| l < w) {
                in_use.wal_from = Some(l);
            }
        }
    }
    Ok(in_use)
}
