//! The behaviour every storage driver must show. Each driver runs [`conformance`].
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use pitr_storage::{Fault, FaultyStorage, LocalFs, PutMode, PutOutcome, Storage, StorageError};

async fn conformance(s: &dyn Storage) {
    // an empty root has no entries
    assert!(s.root_entries(2).await.unwrap().is_empty());

    // absent objects are None, not errors
    assert!(s.get("a/b").await.unwrap().is_none());
    assert!(s.head("a/b").await.unwrap().is_none());
    assert!(s.list("a/").await.unwrap().is_empty());

    // create publishes; a second create leaves the first untouched
    assert_eq!(
        s.put("a/b", Bytes::from_static(b"one"), PutMode::Create)
            .await
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.put("a/b", Bytes::from_static(b"two"), PutMode::Create)
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        s.get("a/b").await.unwrap().unwrap(),
        Bytes::from_static(b"one")
    );

    // overwrite replaces
    s.put("a/b", Bytes::from_static(b"three"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        s.get("a/b").await.unwrap().unwrap(),
        Bytes::from_static(b"three")
    );
    assert_eq!(s.head("a/b").await.unwrap().unwrap().size, 5);
    assert_eq!(
        s.get_range("a/b", 1..3).await.unwrap().unwrap(),
        Bytes::from_static(b"hr")
    );
    assert_eq!(
        s.get_range("a/b", 3..100).await.unwrap().unwrap(),
        Bytes::from_static(b"ee")
    );

    // streamed upload is invisible until finished
    let mut up = s.upload("a/c/d").await.unwrap();
    up.write(Bytes::from_static(b"hello ")).await.unwrap();
    assert!(s.head("a/c/d").await.unwrap().is_none());
    assert!(s.list("a/").await.unwrap().iter().all(|o| o.key != "a/c/d"));
    up.write(Bytes::from_static(b"world")).await.unwrap();
    assert_eq!(
        up.finish(PutMode::Create).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        s.get("a/c/d").await.unwrap().unwrap(),
        Bytes::from_static(b"hello world")
    );

    // an abandoned upload leaves nothing
    let mut up = s.upload("a/e").await.unwrap();
    up.write(Bytes::from_static(b"partial")).await.unwrap();
    drop(up);
    assert!(s.head("a/e").await.unwrap().is_none());

    // list is recursive, prefix-filtered and sorted
    s.put("ab", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let keys: Vec<String> = s
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec!["a/b".to_string(), "a/c/d".to_string()]);
    let keys: Vec<String> = s
        .list("a")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        vec!["a/b".to_string(), "a/c/d".to_string(), "ab".to_string()]
    );

    // root entries are the top-level names, as many as asked
    let mut top = s.root_entries(10).await.unwrap();
    top.sort();
    assert_eq!(top, vec!["a".to_string(), "ab".to_string()]);
    assert_eq!(s.root_entries(1).await.unwrap().len(), 1);

    // delete is idempotent
    s.delete("a/b").await.unwrap();
    s.delete("a/b").await.unwrap();
    assert!(s.get("a/b").await.unwrap().is_none());

    // malformed keys are refused
    for bad in ["", "/abs", "a//b", "../x", "a/./b"] {
        assert!(
            matches!(s.get(bad).await, Err(StorageError::InvalidKey(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn local_filesystem_driver_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalFs::open(dir.path()).unwrap();
    conformance(&s).await;
    // no temporary files are left behind
    let leftovers: Vec<_> = walkdir(dir.path())
        .into_iter()
        .filter(|p| p.contains(".pitr-tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn fault_wrapper_conforms_once_faults_are_spent() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Storage> = Arc::new(LocalFs::open(dir.path()).unwrap());
    let s = FaultyStorage::new(inner, Fault::Reads, 1);
    let err = s.get("x").await.unwrap_err();
    assert!(err.is_transient());
    conformance(&s).await;
}

#[tokio::test]
async fn prune_removes_only_directories_left_empty() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalFs::open(dir.path()).unwrap();
    for key in [
        "c/backup/x/data/base/1/1",
        "c/backup/x/data/global/2",
        "c/backup/y/data/3",
    ] {
        s.put(key, Bytes::from_static(b"v"), PutMode::Create)
            .await
            .unwrap();
    }
    s.delete("c/backup/x/data/base/1/1").await.unwrap();
    s.prune("c/backup/x/").await.unwrap();
    // base/1 and base went; global/2 still holds its file, so x stays.
    assert!(!dir.path().join("c/backup/x/data/base").exists());
    assert!(dir.path().join("c/backup/x/data/global/2").is_file());
    s.delete("c/backup/x/data/global/2").await.unwrap();
    s.prune("c/backup/x/").await.unwrap();
    assert!(!dir.path().join("c/backup/x").exists());
    assert!(dir.path().join("c/backup/y/data/3").is_file());
    // Pruning what does not exist is fine.
    s.prune("c/backup/x/").await.unwrap();

    // Temporary files of a write that died long ago go; a recent one (a write in progress)
    // stays, and keeps its directory.
    let wal = dir.path().join("c/wal/00000001");
    std::fs::create_dir_all(&wal).unwrap();
    let old = wal.join(".000000010000000000000001.pitr-tmp.1.2.3");
    let fresh = wal.join(".000000010000000000000002.pitr-tmp.1.2.4");
    for f in [&old, &fresh] {
        std::fs::write(f, b"partial").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    s.prune("c/wal/").await.unwrap();
    assert!(!old.exists());
    assert!(fresh.exists());
    std::fs::remove_file(&fresh).unwrap();
    s.prune("c/wal/").await.unwrap();
    assert!(!dir.path().join("c/wal").exists());
}

#[test]
fn opening_a_missing_root_names_it_and_suggests_init() {
    let err = LocalFs::open("/nonexistent/pitr-repo").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/pitr-repo"), "{msg}");
    assert!(msg.contains("pitr init"), "{msg}");
}

fn walkdir(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}
