//! Finding clusters and backups never lists every object of the repository: on S3 a listing
//! of everything is a request per 1,000 objects (100k archived segments: 100 requests), so the
//! repository uses delimiter listings (`list_dirs`) and looks each candidate up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pitr_repo::{ClusterIdentity, Repo};
use pitr_storage::{LocalFs, ObjectMeta, PutMode, PutOutcome, Storage, StorageResult, Upload};

/// A local repository that records the prefix of every full listing.
#[derive(Debug)]
struct Recording {
    inner: LocalFs,
    listed: Mutex<Vec<String>>,
}

#[async_trait]
impl Storage for Recording {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome> {
        self.inner.put(key, data, mode).await
    }
    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        self.inner.upload(key).await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.listed.lock().unwrap().push(prefix.to_string());
        self.inner.list(prefix).await
    }
    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>> {
        self.inner.root_entries(limit).await
    }
    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.inner.list_dirs(prefix).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        self.inner.delete_many(keys).await
    }
    async fn prune(&self, prefix: &str) -> StorageResult<()> {
        self.inner.prune(prefix).await
    }
}

#[tokio::test]
async fn clusters_and_backups_are_found_without_listing_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Recording {
        inner: LocalFs::open(dir.path()).unwrap(),
        listed: Mutex::new(Vec::new()),
    });
    let repo = Repo::open(storage.clone()).await.unwrap();
    let id = ClusterIdentity {
        system_id: 7,
        pg_major: 17,
        wal_seg_size: 16 << 20,
    };
    for name in ["main", "other"] {
        repo.cluster(name).unwrap().register(&id).await.unwrap();
    }
    // A directory that is not a cluster (no cluster.json) is not one.
    storage
        .put("stray/file", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let main = repo.cluster("main").unwrap();
    // Two complete backups (a manifest each) among many files, and one in progress.
    for label in ["20260101T000000F", "20260102T000000F", "20260103T000000F"] {
        for i in 0..50 {
            let key = main.backup_file_key(label, &format!("base/1/{i}"));
            storage
                .put(&key, Bytes::from_static(b"data"), PutMode::Create)
                .await
                .unwrap();
        }
        if label != "20260103T000000F" {
            storage
                .put(
                    &main.manifest_key(label),
                    Bytes::from_static(b"{}"),
                    PutMode::Create,
                )
                .await
                .unwrap();
        }
    }
    storage.listed.lock().unwrap().clear();

    assert_eq!(repo.clusters().await.unwrap(), ["main", "other"]);
    assert_eq!(
        main.backup_labels().await.unwrap(),
        ["20260101T000000F", "20260102T000000F"]
    );
    assert_eq!(
        main.backup_dirs().await.unwrap(),
        ["20260101T000000F", "20260102T000000F", "20260103T000000F"]
    );
    // The manifests here are not valid metadata: reading them is an error, which shows that
    // `backups` reads exactly the complete ones.
    assert!(main.backups().await.is_err());
    assert_eq!(
        *storage.listed.lock().unwrap(),
        Vec::<String>::new(),
        "full listings"
    );
}
