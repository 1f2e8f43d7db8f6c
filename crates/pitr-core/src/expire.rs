//! `pitr expire`: applies the retention policy to backups and to the WAL only they needed.
//!
//! Which backups stay is decided from the manifests alone ([`plan`], pure): the newest
//! `retain_full` full backups, and/or every backup that finished in the last `retain_days` days
//! plus the newest one before (it is what recovery to the start of that window restores), then
//! every ancestor of what stays (an incremental reuses its parents' files). Pinned backups
//! (`pitr pin`, `pitr backup --keep`) always stay, with their ancestors. Archived WAL before
//! the start of the oldest backup kept is expired on every timeline: recovery from any backup
//! kept starts at or after that point. Timeline history files always stay.
//!
//! Crash safety: the expired backups' manifests are removed first (durably, newest first), which
//! makes them invisible while every backup still listed stays whole; then their objects; WAL goes
//! last. Objects of a backup whose manifest is gone are removed by the next
//! run, so a run interrupted at any point leaves a consistent repository and running expire
//! again finishes the job.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::progress::Progress;

use jiff::{SignedDuration, Timestamp};
use pitr_pg::{Lsn, SegNo, WalFileName, WalSegSize};
use pitr_repo::{BackupKind, BackupManifest, ClusterRepo, RepoError};
use serde::Serialize;

/// The retention policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Keep the newest N full backups (and their incrementals).
    pub retain_full: Option<u32>,
    /// Keep what recovery to any time in the last D days needs.
    pub retain_days: Option<u32>,
}

/// A policy or repository expire cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    /// No policy, or a policy that would remove every backup.
    #[error("{0}")]
    Usage(String),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A backup that goes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiredBackup {
    /// Label.
    pub label: String,
    /// full or incr.
    pub kind: String,
    /// When it finished.
    pub stop_time: Timestamp,
    /// Bytes it stores in the repository (its own objects).
    pub stored_bytes: u64,
    /// Why it goes.
    pub reason: String,
}

/// What the policy keeps and removes (see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Backups kept, oldest first.
    pub kept: Vec<String>,
    /// Backups removed, oldest first.
    pub expired: Vec<ExpiredBackup>,
    /// The start of the oldest backup kept: archived WAL before it is not needed.
    pub wal_needed_from: Option<Lsn>,
    /// Backups kept because they are pinned (the policy alone would have removed them).
    pub pinned: Vec<String>,
}

/// Decides which backups stay. Pure: `manifests` are the complete backups (any order), `now`
/// the current time.
pub fn plan(
    manifests: &[BackupManifest],
    policy: Policy,
    now: Timestamp,
) -> Result<Plan, ExpireError> {
    plan_with_pins(manifests, policy, &BTreeSet::new(), now)
}

/// [`plan`], keeping the backups labelled in `pinned` (and their ancestors) whatever the policy.
pub fn plan_with_pins(
    manifests: &[BackupManifest],
    policy: Policy,
    pinned: &BTreeSet<String>,
    now: Timestamp,
) -> Result<Plan, ExpireError> {
    if policy.retain_full.is_none() && policy.retain_days.is_none() {
        return Err(ExpireError::Usage(
            "no retention policy: give --retain-full N and/or --retain-days D (or retain_full / retain_days in the config file)".into(),
        ));
    }
    if policy.retain_full == Some(0) {
        return Err(ExpireError::Usage(
            "--retain-full 0 would remove every full backup, and with them every way to restore\nhint: keep at least 1 (the seeds' plan keeps 2: the newest and the one before)".into(),
        ));
    }
    let mut all: Vec<&BackupManifest> = manifests.iter().collect();
    all.sort_by(|a, b| a.label.cmp(&b.label));
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let mut why: Vec<String> = Vec::new();
    if let Some(n) = policy.retain_full {
        let fulls: Vec<&BackupManifest> = all
            .iter()
            .copied()
            .filter(|m| m.kind == BackupKind::Full)
            .collect();
        let kept_fulls: BTreeSet<&str> = fulls
            .iter()
            .rev()
            .take(n as usize)
            .map(|m| m.label.as_str())
            .collect();
        // A full backup kept keeps the incrementals built on it.
        for m in &all {
            if root_full(m, &all).is_some_and(|r| kept_fulls.contains(r)) {
                keep.insert(&m.label);
            }
        }
        why.push(if n == 1 {
            "older than the newest full backup".to_string()
        } else {
            format!("older than the {n} newest full backups")
        });
    }
    if let Some(days) = policy.retain_days {
        let cutoff = now
            .checked_sub(SignedDuration::from_hours(i64::from(days) * 24))
            .unwrap_or(Timestamp::MIN);
        let mut newest_before: Option<&BackupManifest> = None;
        for m in &all {
            if m.stop_time >= cutoff {
                keep.insert(&m.label);
            } else {
                newest_before = Some(m);
            }
        }
        // Recovery to the very start of the window restores the newest backup before it.
        if let Some(m) = newest_before {
            keep.insert(&m.label);
        }
        why.push(format!(
            "not needed to recover to any time in the last {days} days"
        ));
    }
    // Every ancestor of what stays, stays; pinned backups stay whatever the policy says.
    let by_policy: BTreeSet<&str> = closure(keep.clone(), &all);
    for m in &all {
        if pinned.contains(&m.label) {
            keep.insert(&m.label);
        }
    }
    let keep = closure(keep, &all);
    let reason = why.join(", and ");
    let mut plan = Plan {
        kept: Vec::new(),
        expired: Vec::new(),
        wal_needed_from: None,
        pinned: Vec::new(),
    };
    for m in &all {
        if keep.contains(m.label.as_str()) {
            plan.kept.push(m.label.clone());
            if !by_policy.contains(m.label.as_str()) {
                plan.pinned.push(m.label.clone());
            }
            let start = m.start();
            if plan.wal_needed_from.is_none_or(|w| start < w) {
                plan.wal_needed_from = Some(start);
            }
        } else {
            let broken = m.kind == BackupKind::Incr && root_full(m, &all).is_none();
            plan.expired.push(ExpiredBackup {
                label: m.label.clone(),
                kind: m.kind.to_string(),
                stop_time: m.stop_time,
                stored_bytes: m
                    .files
                    .iter()
                    .filter(|f| f.stored_in.is_none())
                    .map(|f| f.stored_size)
                    .sum(),
                reason: if broken {
                    "an incremental whose parent is gone: it cannot be restored".to_string()
                } else {
                    reason.clone()
                },
            });
        }
    }
    Ok(plan)
}

/// `keep` with every ancestor of what it holds (an incremental needs its parents' files).
fn closure<'a>(mut keep: BTreeSet<&'a str>, all: &[&'a BackupManifest]) -> BTreeSet<&'a str> {
    let mut frontier: Vec<&str> = keep.iter().copied().collect();
    while let Some(label) = frontier.pop() {
        let parent = all
            .iter()
            .find(|m| m.label == label)
            .and_then(|m| m.parent.as_deref());
        if let Some(p) = parent {
            if all.iter().any(|m| m.label == p) && keep.insert(p) {
                frontier.push(p);
            }
        }
    }
    keep
}

/// The full backup an incremental chain starts from (itself for a full backup); `None` when a
/// parent is missing.
fn root_full<'a>(m: &'a BackupManifest, all: &[&'a BackupManifest]) -> Option<&'a str> {
    let mut cur = m;
    for _ in 0..=all.len() {
        if cur.kind == BackupKind::Full {
            return Some(&cur.label);
        }
        let parent = cur.parent.as_deref()?;
        cur = all.iter().find(|o| o.label == parent)?;
    }
    None
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    /// Cluster.
    pub cluster: String,
    /// Nothing was removed.
    pub dry_run: bool,
    /// The policy applied.
    pub policy: Policy,
    /// Backups kept, oldest first.
    pub kept: Vec<String>,
    /// Backups removed.
    pub expired: Vec<ExpiredBackup>,
    /// Backups kept only because they are pinned (`pitr unpin` lets them go).
    pub pinned: Vec<String>,
    /// The first WAL segment kept (the one holding the start of the oldest backup kept).
    pub wal_kept_from: Option<String>,
    /// WAL files removed (segments, partial segments, backup history files).
    pub wal_files: u64,
    /// Their stored bytes.
    pub wal_bytes: u64,
    /// Leftovers of backups removed by an interrupted run (objects without a manifest).
    pub leftovers: Vec<String>,
    /// What was left alone because a running backup, restore or verify holds a lease on it.
    pub in_use: Vec<String>,
    /// Leases that lapsed (their holders stopped renewing them: crashed): ignored, and removed.
    pub lapsed_leases: Vec<String>,
}

/// Applies `policy` to the cluster's backups and archived WAL, leaving alone what an unexpired
/// lease covers (see [`leases`]).
///
/// Leases are read twice: before anything is removed, and again once the expired backups'
/// manifests are gone. A backup or restore takes its lease *before* it checks that the
/// manifests it relies on still exist; so a lease taken after the second reading belongs to a
/// command that will find those manifests gone and stop, and a lease taken before it is seen
/// here: the manifest is put back and the backup kept.
pub async fn expire(
    cluster: &ClusterRepo,
    policy: Policy,
    dry_run: bool,
) -> Result<ExpireReport, ExpireError> {
    expire_with_progress(cluster, policy, dry_run, None).await
}

/// [`expire`], telling `progress` about each backup removed (totals: the backups to remove and
/// their stored bytes; the WAL goes in batches at the end).
pub async fn expire_with_progress(
    cluster: &ClusterRepo,
    policy: Policy,
    dry_run: bool,
    progress: Option<Arc<dyn Progress>>,
) -> Result<ExpireReport, ExpireError> {
    let progress = progress.filter(|_| !dry_run);
    let manifests = cluster.backups().await?;
    let mut report = ExpireReport {
        cluster: cluster.name().to_string(),
        dry_run,
        policy,
        kept: Vec::new(),
        expired: Vec::new(),
        pinned: Vec::new(),
        wal_kept_from: None,
        wal_files: 0,
        wal_bytes: 0,
        leftovers: Vec::new(),
        in_use: Vec::new(),
        lapsed_leases: Vec::new(),
    };
    let pinned: BTreeSet<String> = cluster.pins().await?.into_iter().map(|p| p.label).collect();
    let mut plan = plan_with_pins(&manifests, policy, &pinned, Timestamp::now())?;
    report.pinned = plan.pinned.clone();
    let first = leases::read(cluster, &manifests).await?;
    spare(&mut plan, &manifests, &first, &mut report);
    let storage = cluster.repo().storage().clone();
    crate::pause::point("expire-before-removal").await;

    // 1. Expired backups: every manifest first, newest first (an incremental disappears before
    //    the backups it reuses files from), so that a backup still listed is always whole; then
    //    the leases again (a command that leased one meanwhile gets it back); then the objects.
    let mut in_use = first;
    if !dry_run {
        for e in plan.expired.iter().rev() {
            storage
                .delete(&cluster.manifest_key(&e.label))
                .await
                .map_err(RepoError::from)?;
        }
        in_use = leases::read(cluster, &manifests).await?;
        let leased: Vec<String> = plan
            .expired
            .iter()
            .filter(|e| in_use.backups.contains(&e.label))
            .map(|e| e.label.clone())
            .collect();
        for label in &leased {
            if let Some(m) = manifests.iter().find(|m| &m.label == label) {
                cluster.put_manifest(m).await?;
            }
        }
        spare(&mut plan, &manifests, &in_use, &mut report);
        if let Some(p) = &progress {
            p.start(
                plan.expired.len() as u64,
                plan.expired.iter().map(|e| e.stored_bytes).sum(),
            );
        }
        for e in &plan.expired {
            remove_prefix(cluster, &cluster.backup_prefix(&e.label)).await?;
            if let Some(p) = &progress {
                p.advance(e.stored_bytes);
                p.file_done();
            }
        }
    }
    report.kept = plan.kept.clone();
    report.expired = plan.expired.clone();

    // 2. Objects of backups without a manifest that are older than the oldest backup kept: left
    //    by an interrupted expire (a backup in progress is newer than every complete one, or
    //    holds a lease).
    if let Some(oldest_kept) = plan.kept.first() {
        for label in leftover_labels(cluster, oldest_kept).await? {
            if plan.expired.iter().any(|e| e.label == label) {
                continue;
            }
            if in_use.backups.contains(&label) {
                report.in_use.push(format!(
                    "objects of backup {label} (no manifest yet): held by {}",
                    in_use.who(&label)
                ));
                continue;
            }
            if !dry_run {
                remove_prefix(cluster, &cluster.backup_prefix(&label)).await?;
            }
            report.leftovers.push(label);
        }
    }
    for lapsed in &in_use.lapsed {
        report.lapsed_leases.push(format!(
            "{} ({} by {}, lapsed at {})",
            lapsed.key, lapsed.record.holder, lapsed.record.by, lapsed.record.expires
        ));
        if !dry_run {
            cluster.remove_lease(&lapsed.key).await?;
        }
    }

    // 3. WAL before the oldest backup kept (and before what a lease needs), on every timeline.
    let Some(mut from) = plan.wal_needed_from else {
        if let Some(p) = &progress {
            p.finish();
        }
        return Ok(report);
    };
    if let Some(w) = in_use.wal_from.filter(|w| *w < from) {
        report.in_use.push(format!(
            "archived WAL from {w} on: needed by a running command ({})",
            in_use.holders.join("; ")
        ));
        from = w;
    }
    expire_wal(cluster, &manifests, &plan, from, dry_run, &mut report).await?;
    if let Some(p) = &progress {
        p.finish();
    }
    Ok(report)
}

/// Moves the expired backups an unexpired lease covers to the kept ones, with a notice.
fn spare(
    plan: &mut Plan,
    manifests: &[BackupManifest],
    in_use: &leases::InUse,
    report: &mut ExpireReport,
) {
    let (spared, expired): (Vec<ExpiredBackup>, Vec<ExpiredBackup>) = plan
        .expired
        .drain(..)
        .partition(|e| in_use.backups.contains(&e.label));
    plan.expired = expired;
    for e in spared {
        report.in_use.push(format!(
            "backup {} is not expired this time: held by {}",
            e.label,
            in_use.who(&e.label)
        ));
        plan.kept.push(e.label);
    }
    plan.kept.sort();
    plan.wal_needed_from = manifests
        .iter()
        .filter(|m| plan.kept.contains(&m.label))
        .map(|m| m.start())
        .min();
}

/// Removes the archived WAL before `from` on every timeline (history files stay).
async fn expire_wal(
    cluster: &ClusterRepo,
    manifests: &[BackupManifest],
    plan: &Plan,
    from: Lsn,
    dry_run: bool,
    report: &mut ExpireReport,
) -> Result<(), ExpireError> {
    let storage = cluster.repo().storage().clone();
    let seg_size = match cluster.identity().await? {
        Some(id) => WalSegSize::new(id.wal_seg_size).ok(),
        None => None,
    };
    let Some(seg_size) = seg_size.or_else(|| {
        manifests
            .first()
            .and_then(|m| WalSegSize::new(m.wal_seg_size).ok())
    }) else {
        return Ok(());
    };
    let first_kept: SegNo = seg_size.segno_of(from);
    if let Some(oldest) = manifests
        .iter()
        .filter(|m| plan.kept.contains(&m.label))
        .min_by_key(|m| m.start())
    {
        report.wal_kept_from =
            Some(WalFileName::segment(oldest.tli(), first_kept, seg_size).to_string());
    }
    let mut doomed = Vec::new();
    let wal = cluster.list_wal().await?;
    for e in &wal {
        let Some(segno) = e.name.segno(seg_size) else {
            continue; // timeline history files stay
        };
        if segno >= first_kept {
            continue;
        }
        report.wal_files += 1;
        report.wal_bytes += e.stored_len;
        doomed.push(cluster.wal_key(&e.name));
    }
    // Streamed `.partial`s go with the WAL before the oldest kept backup, and once the complete
    // segment is stored (archive-get serves that one first; a running stream deletes its own).
    let complete: std::collections::HashSet<String> =
        wal.iter().map(|e| e.name.to_string()).collect();
    for p in cluster.stream_partials().await? {
        let old = p.segment.segno(seg_size).is_some_and(|n| n < first_kept);
        if old || complete.contains(&p.segment.to_string()) {
            report.wal_files += 1;
            report.wal_bytes += p.stored_len;
            doomed.push(p.key);
        }
    }
    if !dry_run {
        // Batched (one request per 1,000 keys on S3); any order is safe: no kept backup needs them.
        storage
            .delete_many(&doomed)
            .await
            .map_err(RepoError::from)?;
        for dir in ["wal", "stream"] {
            storage
                .prune(&format!("{}/{dir}/", cluster.name()))
                .await
                .map_err(RepoError::from)?;
        }
    }
    Ok(())
}

/// Removes every object under `prefix`, then the directories left empty.
async fn remove_prefix(cluster: &ClusterRepo, prefix: &str) -> Result<(), ExpireError> {
    let storage = cluster.repo().storage();
    let keys: Vec<String> = storage
        .list(prefix)
        .await
        .map_err(RepoError::from)?
        .into_iter()
        .map(|o| o.key)
        .collect();
    storage.delete_many(&keys).await.map_err(RepoError::from)?;
    storage.prune(prefix).await.map_err(RepoError::from)?;
    Ok(())
}

/// Labels under `backup/` that have objects but no manifest and sort before `before`: one
/// delimiter listing of the backups, then, for those without a manifest, a listing of that
/// backup's own objects (a directory emptied moments ago may still be listed on an object store).
async fn leftover_labels(cluster: &ClusterRepo, before: &str) -> Result<Vec<String>, ExpireError> {
    let storage = cluster.repo().storage();
    let mut out = Vec::new();
    for label in cluster.backup_dirs().await? {
        if label.as_str() >= before {
            continue;
        }
        let manifest = storage
            .head(&cluster.manifest_key(&label))
            .await
            .map_err(RepoError::from)?;
        if manifest.is_some() {
            continue;
        }
        let objects = storage
            .list(&cluster.backup_prefix(&label))
            .await
            .map_err(RepoError::from)?;
        if !objects.is_empty() {
            out.push(label);
        }
    }
    Ok(out)
}

mod leases;

#[cfg(test)]
mod tests;
