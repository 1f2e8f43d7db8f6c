#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use pitr_pg::TimelineId;
use pitr_repo::{ClusterIdentity, Compression, ManifestFile, Repo};
use pitr_storage::{Fault, FaultyStorage, LocalFs, Storage};

use super::*;

const SEG: u64 = 16 << 20;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A backup of `files` (path, content) starting in WAL segment `seg`, finished at `stop`.
fn manifest(label: &str, parent: Option<&str>, seg: u64, stop: &str) -> BackupManifest {
    BackupManifest {
        label: label.into(),
        kind: if parent.is_some() {
            BackupKind::Incr
        } else {
            BackupKind::Full
        },
        parent: parent.map(str::to_string),
        pg_major: 17,
        system_id: 7,
        wal_seg_size: SEG,
        timeline: 1,
        start_lsn: Lsn(seg * SEG + 0x28).to_string(),
        stop_lsn: Lsn(seg * SEG + 0x100).to_string(),
        start_time: ts(stop),
        stop_time: ts(stop),
        backup_label: String::new(),
        tablespace_map: None,
        tablespaces: Vec::new(),
        data_checksums: true,
        dirs: Vec::new(),
        files: Vec::new(),
        pitr_version: "test".into(),
    }
}

/// F2 and everything after it.
const KEPT_FROM_F2: [&str; 4] = [
    "20261102T000000F",
    "20261102T120000I",
    "20261102T180000I",
    "20261103T000000F",
];
/// F1 and its incremental.
const F1_AND_I1: [&str; 2] = ["20261101T000000F", "20261101T120000I"];

fn labels(p: &Plan) -> (Vec<&str>, Vec<&str>) {
    (
        p.kept.iter().map(String::as_str).collect(),
        p.expired.iter().map(|e| e.label.as_str()).collect(),
    )
}

/// F1 ← I1, F2 ← I2 ← I3, F3: three fulls, one a day, incrementals in between.
fn history() -> Vec<BackupManifest> {
    vec![
        manifest("20261101T000000F", None, 2, "2026-11-01T00:00:10Z"),
        manifest(
            "20261101T120000I",
            Some("20261101T000000F"),
            4,
            "2026-11-01T12:00:10Z",
        ),
        manifest("20261102T000000F", None, 6, "2026-11-02T00:00:10Z"),
        manifest(
            "20261102T120000I",
            Some("20261102T000000F"),
            8,
            "2026-11-02T12:00:10Z",
        ),
        manifest(
            "20261102T180000I",
            Some("20261102T120000I"),
            9,
            "2026-11-02T18:00:10Z",
        ),
        manifest("20261103T000000F", None, 11, "2026-11-03T00:00:10Z"),
    ]
}

#[test]
fn retain_full_keeps_the_newest_fulls_with_their_incrementals() {
    let now = ts("2026-11-03T06:00:00Z");
    let p = plan(
        &history(),
        Policy {
            retain_full: Some(2),
            retain_days: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p), (KEPT_FROM_F2.to_vec(), F1_AND_I1.to_vec()));
    assert_eq!(p.wal_needed_from, Some(Lsn(6 * SEG + 0x28)));
    assert!(p.expired[0].reason.contains("2 newest full backups"));

    let p = plan(
        &history(),
        Policy {
            retain_full: Some(1),
            retain_days: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p).0, vec!["20261103T000000F"]);
    assert_eq!(p.expired.len(), 5);
    // More than there are: nothing goes.
    let p = plan(
        &history(),
        Policy {
            retain_full: Some(9),
            retain_days: None,
        },
        now,
    )
    .unwrap();
    assert!(p.expired.is_empty());
    assert_eq!(p.wal_needed_from, Some(Lsn(2 * SEG + 0x28)));
}

#[test]
fn a_pinned_incremental_stays_with_its_parents_and_their_wal() {
    let now = ts("2026-11-03T06:00:00Z");
    let pinned: BTreeSet<String> = ["20261102T120000I".to_string()].into();
    let p = plan_with_pins(
        &history(),
        Policy {
            retain_full: Some(1),
            retain_days: None,
        },
        &pinned,
        now,
    )
    .unwrap();
    assert_eq!(
        labels(&p).0,
        vec!["20261102T000000F", "20261102T120000I", "20261103T000000F"]
    );
    // The parent stays because of the pin too; the incremental built on the pinned one goes.
    assert_eq!(p.pinned, vec!["20261102T000000F", "20261102T120000I"]);
    assert!(p.expired.iter().any(|e| e.label == "20261102T180000I"));
    assert_eq!(p.wal_needed_from, Some(Lsn(6 * SEG + 0x28)));
    // A pin on a backup the policy keeps anyway changes nothing.
    let p = plan_with_pins(
        &history(),
        Policy {
            retain_full: Some(9),
            retain_days: None,
        },
        &pinned,
        now,
    )
    .unwrap();
    assert!(p.pinned.is_empty() && p.expired.is_empty());
}

#[test]
fn retain_days_keeps_the_window_and_the_backup_it_starts_from() {
    // The window starts 2026-11-02T10:00: I2 and after are in it; F2 is the newest before it,
    // and I1 (on F1) is not needed.
    let now = ts("2026-11-03T10:00:00Z");
    let p = plan(
        &history(),
        Policy {
            retain_full: None,
            retain_days: Some(1),
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p), (KEPT_FROM_F2.to_vec(), F1_AND_I1.to_vec()));
    // Window starting after I2: the newest before it is I2, which keeps its parent F2 too.
    let now = ts("2026-11-03T15:00:00Z");
    let p = plan(
        &history(),
        Policy {
            retain_full: None,
            retain_days: Some(1),
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p).1, F1_AND_I1.to_vec());
    assert!(labels(&p).0.contains(&"20261102T000000F"));
    // Both policies: the union of what each keeps.
    let now = ts("2026-11-10T00:00:00Z");
    let p = plan(
        &history(),
        Policy {
            retain_full: Some(2),
            retain_days: Some(1),
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p).1, F1_AND_I1.to_vec());
}

#[test]
fn incrementals_without_their_parent_go_and_bad_policies_are_refused() {
    let mut h = history();
    h.remove(0); // F1 gone by hand: I1 cannot be restored
    let now = ts("2026-11-03T06:00:00Z");
    let p = plan(
        &h,
        Policy {
            retain_full: Some(5),
            retain_days: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(labels(&p).1, vec!["20261101T120000I"]);
    assert!(p.expired[0].reason.contains("parent is gone"));

    assert!(matches!(
        plan(&h, Policy::default(), now),
        Err(ExpireError::Usage(m)) if m.contains("--retain-full")
    ));
    assert!(matches!(
        plan(
            &h,
            Policy {
                retain_full: Some(0),
                retain_days: None
            },
            now
        ),
        Err(ExpireError::Usage(_))
    ));
    // No backups: nothing to do, and no WAL cutoff (WAL alone is never expired).
    let p = plan(
        &[],
        Policy {
            retain_full: Some(1),
            retain_days: None,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        (p.kept.len(), p.expired.len(), p.wal_needed_from),
        (0, 0, None)
    );
}

/// A repository on disk holding `history()`: every backup with one file of its own (and the
/// incrementals reusing their full backup's `base/1/1`), WAL segments 1..=12 on timeline 1,
/// segments 10..=12 and a history file on timeline 2, and the backup history files.
async fn repository(dir: &std::path::Path) -> ClusterRepo {
    let storage: Arc<dyn Storage> = Arc::new(LocalFs::create(dir).unwrap());
    let cluster = Repo::new(storage.clone()).cluster("main").unwrap();
    cluster
        .register(&ClusterIdentity {
            system_id: 7,
            pg_major: 17,
            wal_seg_size: SEG,
        })
        .await
        .unwrap();
    for mut m in history() {
        let own = format!("base/1/{}", m.label);
        for (path, holder) in [(own.as_str(), None), ("base/1/1", m.parent.as_deref())] {
            let holder = match (m.kind, holder) {
                (BackupKind::Full, _) | (_, None) => None,
                // Incrementals reuse the full backup's copy (the root of their chain).
                (BackupKind::Incr, Some(_)) => Some(
                    history()
                        .iter()
                        .filter(|o| o.kind == BackupKind::Full && o.label < m.label)
                        .map(|o| o.label.clone())
                        .next_back()
                        .unwrap(),
                ),
            };
            let content = format!("{} {path}", m.label).into_bytes();
            let (obj, sum) = pitr_repo::frame::encode(&content, Compression::Zstd(1)).unwrap();
            if holder.is_none() {
                storage
                    .put(
                        &cluster.backup_file_key(&m.label, path),
                        obj.clone().into(),
                        pitr_storage::PutMode::Create,
                    )
                    .await
                    .unwrap();
            }
            m.files.push(ManifestFile {
                path: path.into(),
                size: content.len() as u64,
                mode: 0o600,
                mtime: 0,
                blake3: sum.checksum.to_string(),
                stored_size: obj.len() as u64,
                stored_in: holder,
                checksum_failures: Vec::new(),
                blocks: None,
                bundle: None,
            });
        }
        cluster.put_manifest(&m).await.unwrap();
        let start_seg = WalFileName::segment(
            TimelineId(1),
            SegNo(m.start().0 / SEG),
            WalSegSize::new(SEG).unwrap(),
        );
        let backup_file = WalFileName::parse(&format!("{start_seg}.00000028.backup")).unwrap();
        cluster
            .put_wal(&backup_file, b"START WAL LOCATION", Compression::None)
            .await
            .unwrap();
    }
    let size = WalSegSize::new(SEG).unwrap();
    for (tli, segs) in [(1, 1..=12u64), (2, 10..=12)] {
        for seg in segs {
            let name = WalFileName::segment(TimelineId(tli), SegNo(seg), size);
            cluster
                .put_wal(&name, format!("{name}").as_bytes(), Compression::None)
                .await
                .unwrap();
        }
    }
    cluster
        .put_wal(
            &WalFileName::History { tli: TimelineId(2) },
            b"1\t0/A000000\tno recovery target specified\n",
            Compression::None,
        )
        .await
        .unwrap();
    cluster
}

/// Every key under the repository, sorted.
async fn keys(storage: &dyn Storage) -> Vec<String> {
    storage
        .list("main/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Every object the manifests still listed need is in `present`.
async fn assert_listed_backups_whole(cluster: &ClusterRepo, present: &[String], when: &str) {
    for m in cluster.backups().await.unwrap() {
        for f in &m.files {
            let key = cluster.backup_file_key(f.stored_in.as_deref().unwrap_or(&m.label), &f.path);
            assert!(present.contains(&key), "{when}: {key} missing");
        }
    }
}

const KEEP_TWO: Policy = Policy {
    retain_full: Some(2),
    retain_days: None,
};

#[tokio::test]
async fn expires_backups_and_the_wal_only_they_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = repository(tmp.path()).await;
    let before = keys(cluster.repo().storage().as_ref()).await;

    let dry = expire(&cluster, KEEP_TWO, true).await.unwrap();
    assert_eq!(
        keys(cluster.repo().storage().as_ref()).await,
        before,
        "dry run changed nothing"
    );
    let real = expire(&cluster, KEEP_TWO, false).await.unwrap();
    assert_eq!(
        (
            dry.expired.len(),
            dry.wal_files,
            dry.wal_kept_from.as_deref()
        ),
        (
            real.expired.len(),
            real.wal_files,
            real.wal_kept_from.as_deref()
        )
    );
    // Segments 1..=5 of timeline 1 and the backup history files of F1 (2) and I1 (4) go;
    // from segment 6 (F2's start) on, and timeline 2 and its history, stay.
    assert_eq!(real.wal_files, 7);
    assert_eq!(
        real.wal_kept_from.as_deref(),
        Some("000000010000000000000006")
    );
    let after = keys(cluster.repo().storage().as_ref()).await;
    assert!(after.iter().all(|k| !k.contains("20261101T")), "{after:#?}");
    for kept in [
        "000000010000000000000006",
        "00000002.history",
        "00000002000000000000000A",
    ] {
        assert!(
            after.iter().any(|k| k.ends_with(kept)),
            "{kept} missing: {after:#?}"
        );
    }
    assert!(!after
        .iter()
        .any(|k| k.ends_with("000000010000000000000005")));
    // The backups that stay are whole: every object their manifests name is there.
    assert_listed_backups_whole(&cluster, &after, "after expire").await;
    // No empty directory is left behind.
    assert!(!tmp.path().join("main/backup/20261101T000000F").exists());
    // Again: nothing more to do.
    let again = expire(&cluster, KEEP_TWO, false).await.unwrap();
    assert_eq!((again.expired.len(), again.wal_files), (0, 0));
}

/// Interrupted after any number of deletions, expire leaves a repository whose backups are all
/// whole, and the next run ends where an uninterrupted run ends.
#[tokio::test]
async fn an_interrupted_expire_is_finished_by_the_next_run() {
    let reference = {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = repository(tmp.path()).await;
        expire(&cluster, KEEP_TWO, false).await.unwrap();
        keys(cluster.repo().storage().as_ref()).await
    };
    let mut interrupted_runs = 0;
    for successes in 0.. {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = repository(tmp.path()).await;
        let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::failing_after(
            cluster.repo().storage().clone(),
            Fault::Writes,
            successes,
        ));
        let broken = Repo::new(faulty).cluster("main").unwrap();
        if expire(&broken, KEEP_TWO, false).await.is_ok() {
            break; // enough successes for a whole run: every interruption point was tried
        }
        interrupted_runs += 1;
        // Whatever is visible is whole.
        let present = keys(cluster.repo().storage().as_ref()).await;
        assert_listed_backups_whole(&cluster, &present, &format!("after {successes}")).await;
        expire(&cluster, KEEP_TWO, false).await.unwrap();
        assert_eq!(
            keys(cluster.repo().storage().as_ref()).await,
            reference,
            "interrupted after {successes} deletions"
        );
    }
    // Interruption points: each manifest deletion, then per expired backup one batch of its
    // objects and a prune, then one batch of WAL and a prune (deletions are batched).
    assert!(interrupted_runs > 5, "{interrupted_runs}");
}

const F1: &str = "20261101T000000F";
const I1: &str = "20261101T120000I";

/// A backup (or restore) holding a lease on I1 keeps it, its parent F1 and the WAL from its
/// start, with a notice; once released, the next expire removes them.
#[tokio::test]
async fn expire_leaves_what_an_unexpired_lease_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = repository(tmp.path()).await;
    let lease = cluster
        .take_lease(
            "restore",
            vec![I1.to_string()],
            Some(Lsn(4 * SEG + 0x28).to_string()),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let r = expire(&cluster, KEEP_TWO, false).await.unwrap();
    assert!(r.expired.is_empty(), "{r:#?}");
    assert!(r.kept.contains(&F1.to_string()) && r.kept.contains(&I1.to_string()));
    assert_eq!(r.in_use.len(), 2, "{r:#?}");
    assert!(r
        .in_use
        .iter()
        .any(|n| n.contains(I1) && n.contains("restore by")));
    assert_eq!(r.wal_kept_from.as_deref(), Some("000000010000000000000002"));
    let present = keys(cluster.repo().storage().as_ref()).await;
    assert_listed_backups_whole(&cluster, &present, "with the lease").await;
    assert_eq!(cluster.backups().await.unwrap().len(), 6);
    lease.release().await.unwrap();
    let r = expire(&cluster, KEEP_TWO, false).await.unwrap();
    assert_eq!(r.expired.len(), 2, "{r:#?}");
    assert!(r.in_use.is_empty());
    assert!(cluster.leases().await.unwrap().is_empty());
}

/// A lease whose holder stopped renewing it (crashed) is ignored, and removed.
#[tokio::test]
async fn expire_ignores_and_removes_a_lapsed_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = repository(tmp.path()).await;
    // A zero lifetime and no renewal: lapsed at once, as a crashed holder's lease.
    let lapsed = cluster
        .take_lease(
            "backup",
            vec![F1.to_string()],
            None,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    let key = lapsed.key().to_string();
    drop(lapsed);
    let r = expire(&cluster, KEEP_TWO, false).await.unwrap();
    assert_eq!(r.expired.len(), 2, "{r:#?}");
    assert_eq!(r.lapsed_leases.len(), 1, "{r:#?}");
    assert!(r.lapsed_leases[0].starts_with(&key), "{r:#?}");
    assert!(cluster.leases().await.unwrap().is_empty());
}

/// Storage that takes a lease on a backup the moment expire deletes that backup's manifest: a
/// restore that chose it a moment earlier and leases it now.
struct LeaseOnManifestDelete {
    inner: Arc<dyn Storage>,
    cluster: ClusterRepo,
    leases: tokio::sync::Mutex<Vec<pitr_repo::Lease>>,
}

impl std::fmt::Debug for LeaseOnManifestDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseOnManifestDelete")
    }
}

#[async_trait::async_trait]
impl Storage for LeaseOnManifestDelete {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(
        &self,
        key: &str,
        data: bytes::Bytes,
        mode: pitr_storage::PutMode,
    ) -> pitr_storage::StorageResult<pitr_storage::PutOutcome> {
        self.inner.put(key, data, mode).await
    }
    async fn upload(
        &self,
        key: &str,
    ) -> pitr_storage::StorageResult<Box<dyn pitr_storage::Upload>> {
        self.inner.upload(key).await
    }
    async fn get(&self, key: &str) -> pitr_storage::StorageResult<Option<bytes::Bytes>> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> pitr_storage::StorageResult<Option<bytes::Bytes>> {
        self.inner.get_range(key, range).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> pitr_storage::StorageResult<Option<pitr_storage::ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> pitr_storage::StorageResult<Vec<pitr_storage::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn root_entries(&self, limit: usize) -> pitr_storage::StorageResult<Vec<String>> {
        self.inner.root_entries(limit).await
    }
    async fn list_dirs(&self, prefix: &str) -> pitr_storage::StorageResult<Vec<String>> {
        self.inner.list_dirs(prefix).await
    }
    async fn delete(&self, key: &str) -> pitr_storage::StorageResult<()> {
        self.inner.delete(key).await?;
        if key == self.cluster.manifest_key(I1) {
            let l = self
                .cluster
                .take_lease(
                    "restore",
                    vec![I1.to_string()],
                    None,
                    std::time::Duration::from_secs(60),
                )
                .await
                .unwrap();
            self.leases.lock().await.push(l);
        }
        Ok(())
    }
    async fn delete_many(&self, keys: &[String]) -> pitr_storage::StorageResult<()> {
        self.inner.delete_many(keys).await
    }
    async fn prune(&self, prefix: &str) -> pitr_storage::StorageResult<()> {
        self.inner.prune(prefix).await
    }
}

/// A lease taken while expire runs, after its first reading of the leases (just as it deletes
/// the manifest): expire sees it on its second reading, puts the manifest back and keeps the
/// backup whole.
#[tokio::test]
async fn a_lease_taken_while_expire_removes_manifests_gets_its_backup_back() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = repository(tmp.path()).await;
    let watched: Arc<dyn Storage> = Arc::new(LeaseOnManifestDelete {
        inner: cluster.repo().storage().clone(),
        cluster: cluster.clone(),
        leases: tokio::sync::Mutex::new(Vec::new()),
    });
    let through = Repo::new(watched).cluster("main").unwrap();
    let r = expire(&through, KEEP_TWO, false).await.unwrap();
    assert_eq!(
        r.expired
            .iter()
            .map(|e| e.label.as_str())
            .collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "{r:#?}"
    );
    assert!(r.in_use.iter().any(|n| n.contains(I1)), "{r:#?}");
    let labels: Vec<String> = cluster
        .backups()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.label)
        .collect();
    assert!(
        labels.contains(&I1.to_string()) && labels.contains(&F1.to_string()),
        "{labels:?}"
    );
    let present = keys(cluster.repo().storage().as_ref()).await;
    assert_listed_backups_whole(&cluster, &present, "after expire").await;
}

/// Two expires at once both finish, and leave what one alone leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_expires_at_once_both_finish() {
    let reference = {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = repository(tmp.path()).await;
        expire(&cluster, KEEP_TWO, false).await.unwrap();
        keys(cluster.repo().storage().as_ref()).await
    };
    for _ in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = repository(tmp.path()).await;
        let (a, b) = tokio::join!(
            expire(&cluster, KEEP_TWO, false),
            expire(&cluster, KEEP_TWO, false)
        );
        a.unwrap();
        b.unwrap();
        let present = keys(cluster.repo().storage().as_ref()).await;
        assert_eq!(present, reference);
        assert_listed_backups_whole(&cluster, &present, "after two expires").await;
    }
}
