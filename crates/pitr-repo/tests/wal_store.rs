//! Repository behaviour for archived WAL: duplicates, conflicts, corruption, identity.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use pitr_pg::WalFileName;
use pitr_repo::{ClusterIdentity, Compression, Repo, RepoError, WalPut};
use pitr_storage::LocalFs;

fn repo(dir: &std::path::Path) -> Repo {
    Repo::new(Arc::new(LocalFs::open(dir).unwrap()))
}

fn seg() -> WalFileName {
    WalFileName::parse("000000010000000000000003").unwrap()
}

#[tokio::test]
async fn identical_repush_is_a_duplicate_and_different_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = repo(dir.path()).cluster("main").unwrap();
    let a = vec![7u8; 1 << 20];
    let mut b = a.clone();
    b[4242] = 8;
    assert!(matches!(
        c.put_wal(&seg(), &a, Compression::Zstd(1)).await.unwrap(),
        WalPut::Stored { .. }
    ));
    // same bytes, other compression: still the same file
    assert!(matches!(
        c.put_wal(&seg(), &a, Compression::Lz4).await.unwrap(),
        WalPut::Duplicate { .. }
    ));
    let err = c
        .put_wal(&seg(), &b, Compression::Zstd(1))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RepoError::WalConflict { .. }), "{msg}");
    assert!(
        msg.contains("000000010000000000000003") && msg.contains("untouched"),
        "{msg}"
    );
    assert_eq!(c.get_wal(&seg()).await.unwrap().unwrap(), a);
}

#[tokio::test]
async fn corrupt_and_truncated_objects_are_errors_not_absence() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    let c = r.cluster("main").unwrap();
    c.put_wal(&seg(), &vec![1u8; 100_000], Compression::Zstd(1))
        .await
        .unwrap();
    let path = dir.path().join(c.wal_key(&seg()));
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    flipped[40] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        c.get_wal(&seg()).await,
        Err(RepoError::Corrupt { .. })
    ));

    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert!(matches!(
        c.get_wal(&seg()).await,
        Err(RepoError::Corrupt { .. })
    ));

    let absent = WalFileName::parse("00000002.history").unwrap();
    assert!(c.get_wal(&absent).await.unwrap().is_none());
}

#[tokio::test]
async fn first_identity_wins_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path());
    let c = r.cluster("prod").unwrap();
    assert!(c.identity().await.unwrap().is_none());
    let id = ClusterIdentity {
        system_id: 7_400_000_000_000_000_001,
        pg_major: 17,
        wal_seg_size: 16 << 20,
    };
    assert_eq!(c.register(&id).await.unwrap(), id);
    let other = ClusterIdentity {
        system_id: 1,
        ..id.clone()
    };
    assert_eq!(c.register(&other).await.unwrap(), id);
    assert_eq!(r.clusters().await.unwrap(), vec!["prod".to_string()]);
    assert!(r.marker().await.unwrap().is_some());
    assert!(r.cluster("../x").is_err());
    assert!(r.cluster("").is_err());
    // listing reports only WAL names, sorted by timeline
    c.put_wal(
        &WalFileName::parse("00000002.history").unwrap(),
        b"1\t0/3000000\tx\n",
        Compression::None,
    )
    .await
    .unwrap();
    c.put_wal(&seg(), &[0u8; 10], Compression::None)
        .await
        .unwrap();
    let names: Vec<String> = c
        .list_wal()
        .await
        .unwrap()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, vec!["000000010000000000000003", "00000002.history"]);
}
