//! `pitr verify`: re-reads every object of a cluster and checks it against its checksum, and
//! checks that the whole recovery window can be replayed ([`window`]): each backup's WAL (start
//! to consistency point), every timeline's WAL to its end with no hole, the history files and
//! the incremental chains. A check that cannot run is a problem, never "verified". The streamed
//! `.partial` objects of `pitr stream` are checked like archived WAL.

mod bundled;
mod window;

use std::collections::BTreeMap;

use std::sync::Arc;

use crate::progress::Progress;
use pitr_pg::{Lsn, WalFileName, WalSegSize};
use pitr_repo::frame;
use pitr_repo::{ClusterRepo, RepoError, RepoResult};
use serde::Serialize;
use tokio::sync::Semaphore;

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object or backup concerned.
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Cluster name.
    pub cluster: String,
    /// WAL files checked.
    pub wal_files: usize,
    /// Backups checked.
    pub backups: usize,
    /// Backup files checked.
    pub backup_files: usize,
    /// Bytes decompressed and hashed.
    pub bytes_checked: u64,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

/// One check of verify's: an object against its manifest entry (or none: WAL), or the members
/// of one bundle.
enum Check {
    Object(String, Option<(u64, String)>),
    Bundle(String, Vec<bundled::Member>),
}

async fn check_object(
    cluster: &ClusterRepo,
    key: String,
    expect: Option<(u64, String)>,
) -> (u64, Option<Problem>) {
    let problem = |p: String| {
        Some(Problem {
            object: key.clone(),
            problem: p,
        })
    };
    // A `.partial` is replaced as streaming goes on: one whole (atomic) read. Everything else
    // is written once and decoded in bounded pieces, whatever its size.
    let decoded = if key.ends_with(".partial") {
        match cluster.repo().storage().get(&key).await {
            Ok(Some(obj)) => frame::decode_into(&obj, &mut std::io::sink())
                .map(Some)
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("cannot read: {e}")),
        }
    } else {
        match cluster.decode_object(&key, std::io::sink()).await.1 {
            Ok(s) => Ok(s),
            Err(RepoError::Corrupt { source, .. }) => Err(source.to_string()),
            Err(e) => Err(format!("cannot read: {e}")),
        }
    };
    match decoded {
        Ok(Some(s)) => match expect {
            Some((len, sum)) if len != s.len || sum != s.checksum.to_string() => (
                s.len,
                problem(format!("content differs from the backup manifest (manifest: {len} bytes, blake3 {sum}; object: {} bytes, blake3 {})", s.len, s.checksum)),
            ),
            _ => (s.len, None),
        },
        Ok(None) => (0, problem("missing".into())),
        Err(e) => (0, problem(e)),
    }
}

/// What keeps part of the recovery window out of reach, from the listing and the manifests
/// alone (no object is read): holes in each timeline's WAL, missing history files, broken
/// incremental chains. `verify` reports these with the object checks; `info` shows them too.
pub fn window_problems(
    wal: &[pitr_repo::WalEntry],
    backups: &[pitr_repo::BackupManifest],
) -> Vec<Problem> {
    let mut out = window::wal_holes(wal, backups);
    out.extend(window::missing_histories(wal, backups));
    out.extend(window::broken_chains(backups));
    out
}

/// Verifies everything stored for `cluster`, `jobs` objects at a time.
///
/// Holds a lease on every backup and all archived WAL while it runs, so that an `expire`
/// running meanwhile does not remove objects under its feet (which would read as damage).
pub async fn verify(cluster: &ClusterRepo, jobs: usize) -> RepoResult<VerifyReport> {
    verify_with_progress(cluster, jobs, None).await
}

/// [`verify`], telling `progress` about each object checked (totals: the objects, and their
/// original bytes as the manifests and the WAL segment size give them).
pub async fn verify_with_progress(
    cluster: &ClusterRepo,
    jobs: usize,
    progress: Option<Arc<dyn Progress>>,
) -> RepoResult<VerifyReport> {
    let labels = cluster.backup_labels().await?;
    // A repository this user may only read cannot take a lease: verify all the same.
    let lease = match cluster
        .take_lease(
            "verify",
            labels,
            Some(Lsn(0).to_string()),
            pitr_repo::lease::DEFAULT_TTL,
        )
        .await
    {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("verifying without a lease (an expire running meanwhile may remove what is being checked): {e}");
            None
        }
    };
    let report = verify_leased(cluster, jobs, progress).await;
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!("cannot remove verify's lease (it lapses by itself): {e}");
        }
    }
    report
}

async fn verify_leased(
    cluster: &ClusterRepo,
    jobs: usize,
    progress: Option<Arc<dyn Progress>>,
) -> RepoResult<VerifyReport> {
    let wal = cluster.list_wal().await?;
    let backups = cluster.backups().await?;
    let mut report = VerifyReport {
        cluster: cluster.name().to_string(),
        wal_files: wal.len(),
        backups: backups.len(),
        backup_files: 0,
        bytes_checked: 0,
        problems: Vec::new(),
    };
    let mut work: Vec<(String, Option<(u64, String)>)> = wal
        .iter()
        .map(|e| (cluster.wal_key(&e.name), None))
        .collect();
    // The segments `pitr stream` is receiving: checked too (a running stream may replace or
    // delete one meanwhile, so a `.partial` gone missing is not a problem).
    let partials: Vec<String> = cluster
        .stream_partials()
        .await?
        .into_iter()
        .map(|p| p.key)
        .collect();
    report.wal_files += partials.len();
    work.extend(partials.iter().map(|k| (k.clone(), None)));
    // Bundled files by bundle, each member once (an incremental lists its parent's too).
    let mut bundles: BTreeMap<String, BTreeMap<u64, bundled::Member>> = BTreeMap::new();
    for b in &backups {
        for f in b.files.iter().filter(|f| f.size > 0) {
            // Each object the file needs (a block file's base and deltas) is checked against
            // the length and checksum its manifest records.
            for o in f.objects(&b.label) {
                let key = cluster.object_key(&o, &f.path);
                match o.bundle {
                    Some(at) => {
                        bundles.entry(key).or_default().insert(
                            at.offset,
                            bundled::Member {
                                path: f.path.clone(),
                                offset: at.offset,
                                stored_size: o.stored_size,
                                size: o.size,
                                blake3: o.blake3.to_string(),
                            },
                        );
                    }
                    None => work.push((key, Some((o.size, o.blake3.to_string())))),
                }
            }
            report.backup_files += 1;
        }
        // The WAL from the backup's start to its consistency point must be archived.
        if let Ok(seg_size) = WalSegSize::new(b.wal_seg_size) {
            let (first, last) = (
                seg_size.segno_of(b.start()),
                seg_size.segno_of(Lsn(b.stop().0.saturating_sub(1))),
            );
            let mut n = first;
            while n <= last {
                let name = WalFileName::segment(b.tli(), n, seg_size);
                if !wal.iter().any(|e| e.name == name) {
                    report.problems.push(Problem {
                        object: format!("backup {}", b.label),
                        problem: format!("WAL segment {name} needed to make the backup consistent is not archived"),
                    });
                }
                n = n.next();
            }
        }
    }
    report.problems.extend(window::wal_holes(&wal, &backups));
    report
        .problems
        .extend(window::missing_histories(&wal, &backups));
    report.problems.extend(window::broken_chains(&backups));
    if let Some(p) = &progress {
        let seg = match cluster.identity().await {
            Ok(Some(id)) => id.wal_seg_size,
            _ => backups.first().map_or(0, |b| b.wal_seg_size),
        };
        let wal_bytes: u64 = wal
            .iter()
            .filter(|e| matches!(e.name, WalFileName::Segment { .. }))
            .map(|_| seg)
            .sum();
        let backup_bytes: u64 = work
            .iter()
            .filter_map(|(_, e)| e.as_ref())
            .map(|e| e.0)
            .sum();
        let members = bundles.values().flat_map(|m| m.values());
        let (bundled, bundled_bytes) = members.fold((0, 0), |(n, b), m| (n + 1, b + m.size));
        p.start(
            (work.len() + bundled) as u64,
            wal_bytes + backup_bytes + bundled_bytes,
        );
    }
    let work = work
        .into_iter()
        .map(|(key, expect)| Check::Object(key, expect))
        .chain(
            bundles
                .into_iter()
                .map(|(key, m)| Check::Bundle(key, m.into_values().collect())),
        );
    let sem = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut keys = std::collections::HashMap::new();
    for check in work {
        let key = match &check {
            Check::Object(key, _) | Check::Bundle(key, _) => key.clone(),
        };
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(Problem {
                    object: key,
                    problem: format!("not checked: {e}"),
                });
                continue;
            }
        };
        let cluster = cluster.clone();
        let handle = tasks.spawn(async move {
            let r = match check {
                Check::Object(key, expect) => {
                    let (bytes, problem) = check_object(&cluster, key, expect).await;
                    (bytes, problem.into_iter().collect(), 1)
                }
                Check::Bundle(key, members) => {
                    let files = members.len();
                    let (bytes, problems) = bundled::check_bundle(&cluster, &key, members).await;
                    (bytes, problems, files)
                }
            };
            drop(permit);
            r
        });
        keys.insert(handle.id(), key);
    }
    while let Some(r) = tasks.join_next_with_id().await {
        match r {
            Ok((_, (bytes, problems, files))) => {
                if let Some(p) = &progress {
                    p.advance(bytes);
                    for _ in 0..files {
                        p.file_done();
                    }
                }
                report.bytes_checked += bytes;
                report.problems.extend(problems);
            }
            // A check that failed or panicked verified nothing: its object is not "verified".
            Err(e) => report.problems.push(Problem {
                object: keys
                    .get(&e.id())
                    .cloned()
                    .unwrap_or_else(|| "an object".into()),
                problem: format!("the check did not complete: {e}"),
            }),
        }
    }
    report
        .problems
        .retain(|p| !(p.problem == "missing" && partials.contains(&p.object)));
    if let Some(p) = &progress {
        p.finish();
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}
