//! What a running backup holds in the repository: its label, reserved create-only, and its
//! lease (see [`pitr_repo::lease`]).

use jiff::Timestamp;
use pitr_proto::PgClient;
use pitr_repo::{BackupKind, ClusterRepo};

use super::{new_label, BackupError, Plan};

/// The lease a backup holds while it runs (see [`pitr_repo::lease`]): its own label, an
/// incremental's parent chain, and the WAL from the current position on. Taken before the
/// parent's manifest is checked again, so that an `expire` running meanwhile either sees the
/// lease or has already removed the manifest (and the backup stops here).
pub(super) async fn take_lease(
    cluster: &ClusterRepo,
    client: &PgClient,
    plan: &Plan,
    label: &str,
) -> Result<pitr_repo::Lease, BackupError> {
    let mut held = vec![label.to_string()];
    if let Some(p) = &plan.parent {
        held.push(p.label.clone());
        for h in p.files.iter().flat_map(|f| f.holders(&p.label)) {
            if !held.iter().any(|x| x == h) {
                held.push(h.to_string());
            }
        }
    }
    let wal_from = client.current_wal_lsn().await?.to_string();
    let lease = cluster
        .take_lease(
            "backup",
            held,
            Some(wal_from),
            pitr_repo::lease::DEFAULT_TTL,
        )
        .await?;
    if let Some(p) = &plan.parent {
        if cluster.manifest(&p.label).await?.is_none() {
            let _ = lease.release().await;
            return Err(BackupError::ParentExpired(p.label.clone()));
        }
    }
    Ok(lease)
}

/// A label no other backup uses, and the time it stands for.
///
/// Labels are unique to the second and reserved create-only
/// ([`ClusterRepo::reserve_label`]): of two backups started in the same second, one gets the
/// label and the other takes the next second's, never mixing files under one label.
pub(super) async fn claim_label(
    cluster: &ClusterRepo,
    kind: BackupKind,
) -> Result<(Timestamp, String), BackupError> {
    loop {
        let now = Timestamp::now();
        let label = new_label(now, kind);
        if cluster.reserve_label(&label).await? {
            return Ok((now, label));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
