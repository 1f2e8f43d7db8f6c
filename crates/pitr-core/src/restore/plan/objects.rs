//! Object checks: the chosen backup's manifest is usable, and every object its files need is in
//! the repository with the size the manifest records, before anything is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use pitr_pg::PgMajor;
use pitr_repo::{BackupManifest, ClusterRepo, ManifestFile, RepoError};

use crate::restore::layout::is_safe_rel;
use crate::restore::RestoreError;

/// Refuses a manifest that cannot be trusted: unknown version, bad LSNs, unsafe or duplicate
/// paths, files without an object or checksum, relative tablespace locations.
pub fn validate_manifest(m: &BackupManifest) -> Result<(), RestoreError> {
    let bad = |reason: String| RestoreError::BadManifest {
        label: m.label.clone(),
        reason,
    };
    PgMajor::new(m.pg_major).map_err(|e| bad(e.to_string()))?;
    if m.start_lsn.parse::<pitr_pg::Lsn>().is_err() || m.stop_lsn.parse::<pitr_pg::Lsn>().is_err() {
        return Err(bad(format!(
            "start/stop LSN {:?}/{:?} are not LSNs",
            m.start_lsn, m.stop_lsn
        )));
    }
    for d in &m.dirs {
        if !is_safe_rel(&d.path) {
            return Err(bad(format!(
                "directory path {:?} is not a safe relative path",
                d.path
            )));
        }
    }
    let mut seen = BTreeSet::new();
    for f in &m.files {
        if !is_safe_rel(&f.path) {
            return Err(bad(format!(
                "file path {:?} is not a safe relative path",
                f.path
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(bad(format!("file {:?} is listed twice", f.path)));
        }
        if let Some(b) = &f.blocks {
            let labels_ok = b
                .objects()
                .iter()
                .all(|o| !o.label.is_empty() && !o.label.contains('/') && !o.blake3.is_empty());
            // An empty BLAKE3: the backup read only the pages WAL summaries named (it has a
            // delta of its own or inherited one); restore checks objects and pages instead.
            if (f.blake3.is_empty() && b.deltas.is_empty())
                || b.block_size == 0
                || f.size % u64::from(b.block_size) != 0
                || !labels_ok
            {
                return Err(bad(format!(
                    "block file {:?} has a bad page size, checksum or layer",
                    f.path
                )));
            }
        } else if f.size > 0 && (f.blake3.is_empty() || f.stored_size == 0) {
            return Err(bad(format!(
                "file {:?} has {} bytes but no stored object or checksum",
                f.path, f.size
            )));
        }
        if f.bundle.is_some() && (f.blocks.is_some() || f.size == 0) {
            return Err(bad(format!(
                "file {:?} is bundled but empty or a block file",
                f.path
            )));
        }
        if let Some(src) = &f.stored_in {
            if src.is_empty() || src.contains('/') {
                return Err(bad(format!("file {:?} is stored in {src:?}", f.path)));
            }
        }
    }
    for t in &m.tablespaces {
        if !Path::new(&t.location).is_absolute() {
            return Err(bad(format!(
                "tablespace {} location {:?} is not absolute",
                t.oid, t.location
            )));
        }
    }
    Ok(())
}

/// Checks, before anything is written, that every object the backup's files need is in the
/// repository with the size the manifest records, and every bundle long enough to hold its
/// members (one listing per backup that holds them: the backup itself and, for an
/// incremental, the backups it reuses files from).
pub async fn check_objects(
    cluster: &ClusterRepo,
    m: &BackupManifest,
    labels: &BTreeSet<String>,
) -> Result<(), RestoreError> {
    check_chain(cluster, m, labels).await?;
    // Per holder: each file, the key of its object, and the size that object must have (its
    // own object: exactly its stored size; a bundle: at least the member's end).
    type Needed<'a> = Vec<(&'a ManifestFile, String, u64, bool)>;
    let mut by_holder: BTreeMap<&str, Needed<'_>> = BTreeMap::new();
    for f in &m.files {
        for o in f.objects(&m.label) {
            let (least, exact) = match o.bundle {
                Some(b) => (b.offset.saturating_add(o.stored_size), false),
                None => (o.stored_size, true),
            };
            by_holder.entry(o.label).or_default().push((
                f,
                cluster.object_key(&o, &f.path),
                least,
                exact,
            ));
        }
    }
    let storage = cluster.repo().storage();
    for (holder, files) in by_holder {
        let present: HashMap<String, u64> = storage
            .list(&cluster.backup_prefix(holder))
            .await
            .map_err(RepoError::Storage)?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let missing: Vec<(&ManifestFile, String)> = files
            .iter()
            .filter(|(_, key, least, exact)| match present.get(key) {
                Some(size) if *exact => size != least,
                Some(size) => size < least,
                None => true,
            })
            .map(|(f, key, _, _)| (*f, key.clone()))
            .collect();
        if let Some((f, key)) = missing.first() {
            return Err(RestoreError::MissingObjects {
                label: m.label.clone(),
                holder: holder.to_string(),
                repo: cluster.repo().location(),
                count: missing.len(),
                needed: files.len(),
                key: key.clone(),
                path: f.path.clone(),
                gone: if labels.contains(holder) {
                    String::new()
                } else {
                    format!(": backup {holder} is gone from the repository")
                },
            });
        }
    }
    Ok(())
}

/// Checks an incremental backup's chain before anything is written: every ancestor up to its
/// full backup is in the repository, with a manifest that reads back verified and belongs to
/// the same cluster.
async fn check_chain(
    cluster: &ClusterRepo,
    m: &BackupManifest,
    labels: &BTreeSet<String>,
) -> Result<(), RestoreError> {
    let mut cur = m.parent.clone();
    let mut seen = BTreeSet::new();
    while let Some(label) = cur {
        let broken = |why: String| RestoreError::BrokenChain {
            label: m.label.clone(),
            parent: label.clone(),
            repo: cluster.repo().location(),
            why,
        };
        if !seen.insert(label.clone()) {
            return Err(broken("appears twice in it (a loop)".into()));
        }
        if !labels.contains(&label) {
            return Err(broken("is gone from the repository".into()));
        }
        let p = cluster
            .manifest(&label)
            .await?
            .ok_or_else(|| broken("has no manifest".into()))?;
        if p.system_id != m.system_id || p.pg_major != m.pg_major {
            return Err(broken("belongs to another cluster".into()));
        }
        cur = p.parent;
    }
    Ok(())
}
