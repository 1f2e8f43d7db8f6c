//! Backup choice: which complete backup reaches the target, given the archived WAL and the
//! timeline histories (the rules are [`crate::restore::choose`]'s; this reads the repository
//! for them), and the checks of the target that need the archived WAL (a name or xid located
//! by decoding it, a time some archived transaction ends after).

use std::collections::{BTreeMap, BTreeSet};

use pitr_pg::{TimelineHistory, WalFileName, WalSegSize};
use pitr_repo::{BackupManifest, ClusterRepo};

use crate::restore::choose::{
    self, choose_backup, BackupPoint, BranchWarning, Choice, LocatedTarget, WalIndex, Window,
};
use crate::restore::target::{self, RecoveryTarget, TimelineGoal};
use crate::restore::{locate, RestoreError, RestoreOptions};

/// The backup chosen, and what choosing it found out.
#[derive(Debug)]
pub struct Chosen {
    /// Its manifest.
    pub manifest: BackupManifest,
    /// Why it was chosen, its timeline path and the WAL recovery needs.
    pub choice: Choice,
    /// Where a name/xid target is after it.
    pub located: Option<LocatedTarget>,
    /// The labels of every backup in the repository (to tell a missing parent).
    pub labels: BTreeSet<String>,
    /// With `--target-timeline latest`: parents the target timeline branched off that went on.
    pub branches: Vec<BranchWarning>,
}

/// Chooses the backup to restore: the one named with `--backup`, or the newest that reaches the
/// target; an unreachable target is refused with the reachable window.
pub async fn choose(cluster: &ClusterRepo, opts: &RestoreOptions) -> Result<Chosen, RestoreError> {
    let manifests = backups(cluster, opts).await?;
    let seg_bytes = match cluster.identity().await? {
        Some(id) => id.wal_seg_size,
        None => manifests.last().map(|m| m.wal_seg_size).unwrap_or_default(),
    };
    let seg_size = WalSegSize::new(seg_bytes).map_err(|e| RestoreError::BadManifest {
        label: manifests
            .last()
            .map(|m| m.label.clone())
            .unwrap_or_default(),
        reason: e.to_string(),
    })?;
    let index = wal_index(cluster, seg_size).await?;
    let labels: BTreeSet<String> = manifests.iter().map(|m| m.label.clone()).collect();
    let points = candidates(&manifests, seg_bytes, &labels, opts);
    let located = if opts.spec.target.needs_locating() {
        Some(locate_per_backup(cluster, &points, &index, opts).await?)
    } else {
        None
    };
    let choice = choose_backup(
        &points,
        &index,
        &opts.spec,
        located.as_ref(),
        opts.backup.as_deref(),
    )
    .map_err(|u| RestoreError::Unreachable(Box::new(u)))?;
    let located = located.and_then(|m| m.get(&choice.label).copied());
    if let RecoveryTarget::Time(t) = &opts.spec.target {
        check_time_reached(cluster, &index, &points, &choice, t, opts.spec.exclusive).await?;
    }
    let branches = if opts.spec.timeline == TimelineGoal::Latest {
        choose::branch_warnings(&points, &index, choice.target_tli)
    } else {
        Vec::new()
    };
    let Some(manifest) = manifests.into_iter().find(|m| m.label == choice.label) else {
        return Err(RestoreError::Internal(format!(
            "chosen backup {} vanished",
            choice.label
        )));
    };
    Ok(Chosen {
        manifest,
        choice,
        located,
        labels,
        branches,
    })
}

/// The cluster's complete backups; refuses a cluster without any, and a `--backup` label that
/// names none of them.
async fn backups(
    cluster: &ClusterRepo,
    opts: &RestoreOptions,
) -> Result<Vec<BackupManifest>, RestoreError> {
    let manifests = cluster.backups().await?;
    if manifests.is_empty() {
        return Err(RestoreError::NoBackups {
            cluster: cluster.name().to_string(),
            repo: cluster.repo().location(),
        });
    }
    if let Some(label) = &opts.backup {
        if !manifests.iter().any(|m| &m.label == label) {
            return Err(RestoreError::BackupNotFound {
                label: label.clone(),
                cluster: cluster.name().to_string(),
                available: manifests
                    .iter()
                    .map(|m| m.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(manifests)
}

/// The backups choice may pick from: those of the cluster's segment size, except an
/// incremental whose parent is gone (it cannot be restored: choose another, unless it was named,
/// and then the object check says what is missing).
fn candidates(
    manifests: &[BackupManifest],
    seg_bytes: u64,
    labels: &BTreeSet<String>,
    opts: &RestoreOptions,
) -> Vec<BackupPoint> {
    manifests
        .iter()
        .filter(|m| m.wal_seg_size == seg_bytes)
        .filter(|m| {
            let gone = m
                .files
                .iter()
                .flat_map(|f| f.holders(&m.label))
                .find(|holder| !labels.contains(*holder))
                .map(str::to_string);
            if let Some(holder) = gone {
                if opts.backup.as_deref() != Some(m.label.as_str()) {
                    tracing::warn!(
                        "backup {} is not considered: backup {holder}, which holds some of its files, is gone",
                        m.label
                    );
                    return false;
                }
            }
            true
        })
        .map(BackupPoint::of)
        .collect()
}

/// The cluster's recovery window (see [`choose::recovery_window`]) for `manifests`, its
/// complete backups, and the timelines `latest` (from the newest backup) branched off that went
/// on ([`choose::branch_warnings`]); `None` when it has no backups or no identity.
pub async fn recovery_window(
    cluster: &ClusterRepo,
    manifests: &[BackupManifest],
) -> Result<Option<(Window, Vec<BranchWarning>)>, RestoreError> {
    let Some(id) = cluster.identity().await? else {
        return Ok(None);
    };
    let Ok(seg_size) = WalSegSize::new(id.wal_seg_size) else {
        return Ok(None);
    };
    if manifests.is_empty() {
        return Ok(None);
    }
    let index = wal_index(cluster, seg_size).await?;
    let points: Vec<BackupPoint> = manifests
        .iter()
        .filter(|m| m.wal_seg_size == id.wal_seg_size)
        .map(BackupPoint::of)
        .collect();
    let window = choose::recovery_window(&points, &index);
    let branches = match choose::newest_first(&points).first() {
        Some(newest) => choose::branch_warnings(&points, &index, index.latest_from(newest.tli)),
        None => Vec::new(),
    };
    Ok(Some((window, branches)))
}

async fn wal_index(cluster: &ClusterRepo, seg_size: WalSegSize) -> Result<WalIndex, RestoreError> {
    let mut index = WalIndex::new(seg_size);
    for e in cluster.list_wal().await? {
        if let WalFileName::History { tli } = e.name {
            let Some(bytes) = cluster.get_wal(&e.name).await? else {
                continue;
            };
            let h =
                TimelineHistory::parse(tli, &bytes).map_err(|source| RestoreError::BadHistory {
                    name: e.name.to_string(),
                    repo: cluster.repo().location(),
                    source,
                })?;
            index.add_history(h);
        } else {
            index.add_file(&e.name);
        }
    }
    Ok(index)
}

/// Finds a name/xid target after each backup, newest first (the order choice tries them),
/// until one is found after a backup became consistent: that backup will be chosen, and
/// older ones need no search.
async fn locate_per_backup(
    cluster: &ClusterRepo,
    points: &[BackupPoint],
    index: &WalIndex,
    opts: &RestoreOptions,
) -> Result<BTreeMap<String, LocatedTarget>, RestoreError> {
    let mut out = BTreeMap::new();
    for b in choose::newest_first(points) {
        if opts.backup.as_ref().is_some_and(|f| *f != b.label) {
            continue;
        }
        let Ok(r) = choose::reach_from(b, &opts.spec, index) else {
            continue;
        };
        if r.end < b.stop {
            continue;
        }
        let found =
            locate::first_on_path(cluster, index, &r.path, b.start, &opts.spec.target).await?;
        if let Some(loc) = found {
            out.insert(b.label.clone(), loc);
            if loc.lsn >= b.stop {
                break;
            }
        }
    }
    Ok(out)
}

/// Refuses a time target that no archived transaction ends after: PostgreSQL stops only before
/// a commit or abort later than the target (at or later, with `--target-exclusive`).
async fn check_time_reached(
    cluster: &ClusterRepo,
    index: &WalIndex,
    points: &[BackupPoint],
    choice: &Choice,
    t: &target::TargetTime,
    exclusive: bool,
) -> Result<(), RestoreError> {
    let Some(b) = points.iter().find(|p| p.label == choice.label) else {
        return Ok(());
    };
    let last = locate::last_transaction_on_path(cluster, index, &choice.path, b.start).await?;
    let last_time = last.and_then(|l| l.time);
    let reached = last_time.is_some_and(|lt| if exclusive { lt >= t.at } else { lt > t.at });
    if reached {
        return Ok(());
    }
    Err(RestoreError::TimeNotReached {
        target: RecoveryTarget::Time(t.clone()).to_string(),
        label: b.label.clone(),
        from: choose::show_time(b.stop_time),
        last: match (last, last_time) {
            (Some(l), Some(lt)) => format!(
                "{} (the last archived transaction, at {} on timeline {})",
                choose::show_time(lt),
                l.lsn,
                l.tli
            ),
            _ => format!(
                "its consistency point {} (no transaction was archived after it)",
                b.stop
            ),
        },
    })
}
