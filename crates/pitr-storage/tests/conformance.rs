//! The behaviour every storage driver must show. Each case runs against the local filesystem
//! driver and the S3 driver (on a real SeaweedFS started by pitr-testkit), with the same test
//! body: `case::local` and `case::s3`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use pitr_storage::{
    Fault, FaultyStorage, LocalFs, PutMode, PutOutcome, RemoteFailure, S3Config, S3Credentials,
    S3Storage, Storage, StorageError, MIN_PART_SIZE,
};
use pitr_testkit::{SeaweedFs, SeaweedOptions};

/// Runs each named case against both drivers.
macro_rules! both_drivers {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn local() {
                    let dir = tempfile::tempdir().unwrap();
                    let s = pitr_storage::LocalFs::open(dir.path()).unwrap();
                    super::$case(&s).await;
                    super::assert_no_local_leftovers(dir.path());
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn s3() {
                    let server = pitr_testkit::SeaweedFs::shared();
                    let s = pitr_storage::S3Storage::open(super::s3_config(server, stringify!($case)))
                        .await
                        .unwrap();
                    super::$case(&s).await;
                }
            }
        )+
    };
}

both_drivers!(
    basic_operations,
    concurrent_creates_have_exactly_one_winner,
    upload_create_never_overwrites,
    ranged_reads,
    listing_pages_past_1000_keys,
    list_dirs_gives_immediate_subdirectories,
    delete_many_removes_present_and_ignores_absent,
);

/// A config for a fresh prefix of the server's bucket, with the smallest part size (so that
/// multipart uploads happen at test sizes) and a short retry budget.
fn s3_config(server: &SeaweedFs, test: &str) -> S3Config {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "{test}-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut cfg = S3Config::from_url(&format!("s3://{}/t/{prefix}", server.bucket())).unwrap();
    cfg.endpoint = Some(server.endpoint());
    cfg.region = Some("us-east-1".into());
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: server.secret_access_key().into(),
        session_token: None,
    });
    cfg.part_size = MIN_PART_SIZE;
    cfg.retry_timeout = Duration::from_secs(10);
    cfg
}

fn assert_no_local_leftovers(root: &std::path::Path) {
    let leftovers: Vec<_> = walkdir(root)
        .into_iter()
        .filter(|p| p.contains(".pitr-tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn keys(objects: Vec<pitr_storage::ObjectMeta>) -> Vec<String> {
    objects.into_iter().map(|o| o.key).collect()
}

/// `n` bytes that differ with `seed`.
fn payload(seed: u8, n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

async fn basic_operations(s: &dyn Storage) {
    // an empty root has no entries
    assert!(s.root_entries(2).await.unwrap().is_empty());

    // absent objects are None, not errors
    assert!(s.get("a/b").await.unwrap().is_none());
    assert!(s.get_range("a/b", 0..4).await.unwrap().is_none());
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

    // an empty object is an object
    s.put("a/empty", Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(s.get("a/empty").await.unwrap().unwrap(), Bytes::new());
    assert_eq!(s.head("a/empty").await.unwrap().unwrap().size, 0);
    s.delete("a/empty").await.unwrap();

    // list is recursive, prefix-filtered (on a raw prefix too) and sorted
    s.put("ab", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(keys(s.list("a/").await.unwrap()), vec!["a/b", "a/c/d"]);
    assert_eq!(keys(s.list("a").await.unwrap()), vec!["a/b", "a/c/d", "ab"]);
    assert_eq!(keys(s.list("a/c").await.unwrap()), vec!["a/c/d"]);
    let all = s.list("").await.unwrap();
    assert_eq!(keys(all.clone()), vec!["a/b", "a/c/d", "ab"]);
    assert_eq!(all[1].size, 11);

    // root entries are the top-level names, as many as asked
    let mut top = s.root_entries(10).await.unwrap();
    top.sort();
    assert_eq!(top, vec!["a".to_string(), "ab".to_string()]);
    assert_eq!(s.root_entries(1).await.unwrap().len(), 1);

    // delete is idempotent, and deleting what never existed is fine
    s.delete("a/b").await.unwrap();
    s.delete("a/b").await.unwrap();
    s.delete("never/was").await.unwrap();
    assert!(s.get("a/b").await.unwrap().is_none());

    // malformed keys are refused
    for bad in ["", "/abs", "a//b", "../x", "a/./b"] {
        assert!(
            matches!(s.get(bad).await, Err(StorageError::InvalidKey(_))),
            "{bad:?}"
        );
    }
    for bad in ["a", "/a/", "a//"] {
        assert!(
            matches!(s.list_dirs(bad).await, Err(StorageError::InvalidKey(_))),
            "{bad:?}"
        );
    }
}

/// Many writers race to create each key with different contents: exactly one is told
/// `Written` and the stored object is exactly its content.
async fn concurrent_creates_have_exactly_one_winner(s: &dyn Storage) {
    const KEYS: usize = 20;
    const RACERS: u8 = 16;
    for k in 0..KEYS {
        let key = format!("race/{k:02}");
        let results: Vec<(u8, PutOutcome)> = stream::iter(0..RACERS)
            .map(|r| {
                let key = key.clone();
                async move {
                    let out = s
                        .put(&key, payload(r, 64 * 1024), PutMode::Create)
                        .await
                        .unwrap();
                    (r, out)
                }
            })
            .buffer_unordered(RACERS as usize)
            .collect()
            .await;
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, o)| *o == PutOutcome::Written)
            .map(|(r, _)| *r)
            .collect();
        assert_eq!(winners.len(), 1, "{key}: winners {winners:?}");
        assert_eq!(
            s.get(&key).await.unwrap().unwrap(),
            payload(winners[0], 64 * 1024),
            "{key}: stored content is not the winner's"
        );
    }
}

/// Writes `data` through a streamed upload in 1 MiB chunks and finishes it with `mode`.
async fn upload_in_chunks(s: &dyn Storage, key: &str, data: &Bytes, mode: PutMode) -> PutOutcome {
    let mut up = s.upload(key).await.unwrap();
    for chunk in data.chunks(1 << 20) {
        up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    up.finish(mode).await.unwrap()
}

/// `Upload::finish(Create)` never replaces an existing object, small (one PUT on S3) or large
/// (a multipart upload on S3: 12 MiB with 5 MiB parts), and `Overwrite` does.
async fn upload_create_never_overwrites(s: &dyn Storage) {
    for (key, size) in [("up/small", 1000), ("up/large", 12 << 20)] {
        let first = payload(1, size);
        let second = payload(2, size + 7);
        assert_eq!(
            upload_in_chunks(s, key, &first, PutMode::Create).await,
            PutOutcome::Written
        );
        assert_eq!(
            upload_in_chunks(s, key, &second, PutMode::Create).await,
            PutOutcome::AlreadyExists,
            "{key}"
        );
        assert_eq!(s.get(key).await.unwrap().unwrap(), first, "{key}");
        // a put(Create) over an object made by an upload is refused too
        assert_eq!(
            s.put(key, second.clone(), PutMode::Create).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(
            upload_in_chunks(s, key, &second, PutMode::Overwrite).await,
            PutOutcome::Written
        );
        assert_eq!(s.get(key).await.unwrap().unwrap(), second, "{key}");
        assert_eq!(
            s.head(key).await.unwrap().unwrap().size,
            second.len() as u64
        );
    }
    // a large upload is invisible until finished, and leaves nothing when dropped
    let mut up = s.upload("up/dropped").await.unwrap();
    for seed in 0..12u8 {
        up.write(payload(seed, 1 << 20)).await.unwrap();
    }
    assert!(s.head("up/dropped").await.unwrap().is_none());
    assert_eq!(
        keys(s.list("up/").await.unwrap()),
        vec!["up/large", "up/small"]
    );
    drop(up);
    assert!(s.head("up/dropped").await.unwrap().is_none());
    assert_eq!(
        keys(s.list("").await.unwrap()),
        vec!["up/large", "up/small"]
    );
}

/// Four large uploads (multipart on S3) race to create each of two keys with `Create`.
/// Always: at least one is told `Written`, those told `AlreadyExists` are not what is stored,
/// and the stored object is one winner's content, whole. With `exclusive`: exactly one winner.
async fn racing_large_upload_creates(s: &dyn Storage, exclusive: bool) {
    const RACERS: u8 = 4;
    let size = |r: u8| (11 << 20) + usize::from(r);
    for k in 0..2 {
        let key = format!("bigrace/{k}");
        let results: Vec<(u8, PutOutcome)> = stream::iter(0..RACERS)
            .map(|r| {
                let key = key.clone();
                async move {
                    let data = payload(r, size(r));
                    (r, upload_in_chunks(s, &key, &data, PutMode::Create).await)
                }
            })
            .buffer_unordered(RACERS as usize)
            .collect()
            .await;
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, o)| *o == PutOutcome::Written)
            .map(|(r, _)| *r)
            .collect();
        if exclusive {
            assert_eq!(winners.len(), 1, "{key}: winners {winners:?}");
        }
        let stored = s.get(&key).await.unwrap().unwrap();
        let stored_by: Vec<u8> = (0..RACERS)
            .filter(|r| stored == payload(*r, size(*r)))
            .collect();
        assert_eq!(
            stored_by.len(),
            1,
            "{key}: stored object is no racer's whole content"
        );
        assert!(
            winners.contains(&stored_by[0]),
            "{key}: stored racer {} was told AlreadyExists (winners {winners:?})",
            stored_by[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_large_upload_creates_have_one_winner_locally() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalFs::open(dir.path()).unwrap();
    racing_large_upload_creates(&s, true).await;
    assert_no_local_leftovers(dir.path());
}

/// On S3, `finish(Create)` of a multipart upload is a `CompleteMultipartUpload` with
/// `If-None-Match: *`: exclusive on AWS S3, but SeaweedFS 4.48 checks the condition outside
/// its per-object lock, so two racing completions can both succeed (4 of 16 four-way races
/// had two winners). What must hold anyway: no torn or mixed object, and no racer told `AlreadyExists`
/// is what got stored. (Exclusive creation on every store is `put(Create)`: see the
/// crate docs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_large_upload_creates_store_one_whole_object_on_s3() {
    let server = SeaweedFs::shared();
    let s = S3Storage::open(s3_config(server, "bigrace")).await.unwrap();
    racing_large_upload_creates(&s, false).await;
}

async fn ranged_reads(s: &dyn Storage) {
    let data = payload(9, 300_000);
    s.put("r/obj", data.clone(), PutMode::Create).await.unwrap();
    let cases = [
        (0, 1),
        (1, 3),
        (0, 300_000),
        (123_456, 234_567),
        (299_999, 300_000),
    ];
    for (a, b) in cases {
        assert_eq!(
            s.get_range("r/obj", a..b).await.unwrap().unwrap(),
            data.slice(a as usize..b as usize),
            "{a}..{b}"
        );
    }
    // clamped to the end
    assert_eq!(
        s.get_range("r/obj", 299_990..400_000)
            .await
            .unwrap()
            .unwrap(),
        data.slice(299_990..)
    );
    // starting at or beyond the end, or empty: nothing, but the object exists
    for (a, b) in [(300_000, 300_010), (500_000, 600_000), (10, 10)] {
        assert_eq!(
            s.get_range("r/obj", a..b).await.unwrap(),
            Some(Bytes::new()),
            "{a}..{b}"
        );
    }
    assert!(s.get_range("r/none", 10..10).await.unwrap().is_none());
    s.put("r/empty", Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        s.get_range("r/empty", 0..10).await.unwrap(),
        Some(Bytes::new())
    );
}

/// 1,100 keys in 1,100 directories: listing and directory listing both follow pages.
async fn listing_pages_past_1000_keys(s: &dyn Storage) {
    const N: usize = 1100;
    stream::iter(0..N)
        .for_each_concurrent(32, |i| async move {
            let key = format!("many/{i:04}/x");
            s.put(&key, Bytes::from(i.to_string()), PutMode::Create)
                .await
                .unwrap();
        })
        .await;
    s.put("many-other", Bytes::from_static(b"o"), PutMode::Create)
        .await
        .unwrap();
    let listed = keys(s.list("many/").await.unwrap());
    let expected: Vec<String> = (0..N).map(|i| format!("many/{i:04}/x")).collect();
    assert_eq!(listed, expected);
    let dirs = s.list_dirs("many/").await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("{i:04}")).collect();
    assert_eq!(dirs, expected);
    assert_eq!(s.list("many").await.unwrap().len(), N + 1);
}

async fn list_dirs_gives_immediate_subdirectories(s: &dyn Storage) {
    for key in [
        "c1/cluster.json",
        "c1/backup/20240101T000000/manifest",
        "c1/backup/20240101T000000/data/base/1/1",
        "c1/backup/20240202T000000/data/global/2",
        "c1/wal/00000001/000000010000000000000001",
        "c2/cluster.json",
        "top-level-file",
    ] {
        s.put(key, Bytes::from_static(b"v"), PutMode::Create)
            .await
            .unwrap();
    }
    assert_eq!(s.list_dirs("").await.unwrap(), vec!["c1", "c2"]);
    assert_eq!(s.list_dirs("c1/").await.unwrap(), vec!["backup", "wal"]);
    assert_eq!(
        s.list_dirs("c1/backup/").await.unwrap(),
        vec!["20240101T000000", "20240202T000000"]
    );
    assert!(s.list_dirs("c2/").await.unwrap().is_empty());
    assert!(s.list_dirs("nothing/").await.unwrap().is_empty());
    // an object is not a directory
    assert!(s.list_dirs("top-level-file/").await.unwrap().is_empty());
    // a directory whose objects are all gone may linger a while (SeaweedFS), holding nothing
    s.delete("c1/wal/00000001/000000010000000000000001")
        .await
        .unwrap();
    let dirs = s.list_dirs("c1/").await.unwrap();
    assert!(dirs == ["backup"] || dirs == ["backup", "wal"], "{dirs:?}");
    assert!(s.list("c1/wal/").await.unwrap().is_empty());
}

async fn delete_many_removes_present_and_ignores_absent(s: &dyn Storage) {
    let present: Vec<String> = (0..1500).map(|i| format!("del/{}/{i}", i % 7)).collect();
    stream::iter(present.iter())
        .for_each_concurrent(32, |k| async move {
            s.put(k, Bytes::from_static(b"d"), PutMode::Create)
                .await
                .unwrap();
        })
        .await;
    s.put("keep/me", Bytes::from_static(b"k"), PutMode::Create)
        .await
        .unwrap();
    let mut doomed = present.clone();
    doomed.push("del/absent".into());
    doomed.push("never/existed".into());
    s.delete_many(&doomed).await.unwrap();
    assert!(s.list("del/").await.unwrap().is_empty());
    assert_eq!(keys(s.list("").await.unwrap()), vec!["keep/me"]);
    s.delete_many(&[]).await.unwrap();
    assert!(matches!(
        s.delete_many(&["ok".to_string(), "bad//key".to_string()])
            .await,
        Err(StorageError::InvalidKey(_))
    ));
}

#[tokio::test]
async fn fault_wrapper_conforms_once_faults_are_spent() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Storage> = Arc::new(LocalFs::open(dir.path()).unwrap());
    let s = FaultyStorage::new(inner, Fault::Reads, 1);
    let err = s.get("x").await.unwrap_err();
    assert!(err.is_transient());
    basic_operations(&s).await;
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

#[tokio::test]
async fn local_list_dirs_skips_directories_without_objects() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalFs::open(dir.path()).unwrap();
    s.put("c/full/x/y", Bytes::from_static(b"v"), PutMode::Create)
        .await
        .unwrap();
    std::fs::create_dir_all(dir.path().join("c/empty/deeper")).unwrap();
    std::fs::write(dir.path().join("c/.pending.pitr-tmp.1.2.3"), b"t").unwrap();
    std::fs::create_dir_all(dir.path().join("c/only-tmp")).unwrap();
    std::fs::write(dir.path().join("c/only-tmp/.x.pitr-tmp.1.2.3"), b"t").unwrap();
    assert_eq!(s.list_dirs("c/").await.unwrap(), vec!["full"]);
}

#[test]
fn opening_a_missing_root_names_it_and_suggests_init() {
    let err = LocalFs::open("/nonexistent/pitr-repo").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/pitr-repo"), "{msg}");
    assert!(msg.contains("pitr init"), "{msg}");
}

/// The failure class of `r`'s error; panics on success.
fn failure_of<T: std::fmt::Debug>(r: Result<T, StorageError>) -> (RemoteFailure, String) {
    match r {
        Err(e @ StorageError::Remote { .. }) => (e.remote_failure().unwrap(), e.to_string()),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_an_auth_error_not_absence() {
    let server = SeaweedFs::shared();
    let good = S3Storage::open(s3_config(server, "wrong-secret"))
        .await
        .unwrap();
    good.put("k", Bytes::from_static(b"v"), PutMode::Create)
        .await
        .unwrap();
    let mut cfg = good.config().clone();
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: "not-the-secret".into(),
        session_token: None,
    });
    let (failure, msg) = failure_of(S3Storage::open(cfg.clone()).await);
    assert_eq!(failure, RemoteFailure::Auth, "{msg}");
    assert!(
        msg.contains(&cfg.url()) && msg.contains("AWS_SECRET_ACCESS_KEY"),
        "{msg}"
    );
    assert!(msg.contains(&server.endpoint()), "{msg}");
    let bad = S3Storage::new(cfg).unwrap();
    for (op, r) in [
        ("get k", bad.get("k").await.map(|_| ())),
        ("get absent", bad.get("absent").await.map(|_| ())),
        ("get_range", bad.get_range("k", 0..1).await.map(|_| ())),
        ("head", bad.head("k").await.map(|_| ())),
        ("list", bad.list("").await.map(|_| ())),
        ("list_dirs", bad.list_dirs("").await.map(|_| ())),
        (
            "put",
            bad.put("n", Bytes::new(), PutMode::Create)
                .await
                .map(|_| ()),
        ),
        ("delete", bad.delete("k").await),
        ("delete_many", bad.delete_many(&["k".into()]).await),
    ] {
        let (failure, msg) = failure_of(r);
        assert_eq!(failure, RemoteFailure::Auth, "{op}: {msg}");
        assert!(!failure.is_transient());
    }
    // an unknown access key is refused the same way
    let mut cfg = good.config().clone();
    cfg.credentials = Some(S3Credentials {
        access_key_id: "NOSUCHKEY".into(),
        secret_access_key: "x".into(),
        session_token: None,
    });
    let (failure, msg) = failure_of(S3Storage::open(cfg).await);
    assert_eq!(failure, RemoteFailure::Auth, "{msg}");
    // nothing was changed by the refused requests
    assert_eq!(
        good.get("k").await.unwrap().unwrap(),
        Bytes::from_static(b"v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_is_reported_not_absent() {
    let server = SeaweedFs::shared();
    let mut cfg = s3_config(server, "no-bucket");
    cfg.bucket = "pitr-no-such-bucket".into();
    let (failure, msg) = failure_of(S3Storage::open(cfg.clone()).await);
    assert_eq!(failure, RemoteFailure::NoBucket, "{msg}");
    assert!(
        msg.contains("s3://pitr-no-such-bucket/") && msg.contains("hint:"),
        "{msg}"
    );
    let s = S3Storage::new(cfg).unwrap();
    for (op, r) in [
        ("get", s.get("k").await.map(|_| ())),
        ("get_range", s.get_range("k", 0..4).await.map(|_| ())),
        ("list", s.list("").await.map(|_| ())),
        ("list_dirs", s.list_dirs("").await.map(|_| ())),
    ] {
        let (failure, msg) = failure_of(r);
        assert_eq!(failure, RemoteFailure::NoBucket, "{op}: {msg}");
    }
    assert!(s.put("k", Bytes::new(), PutMode::Create).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_server_is_unreachable_not_absent_and_data_survives_a_restart() {
    let mut server = SeaweedFs::start();
    let mut cfg = s3_config(&server, "stopped");
    cfg.retry_timeout = Duration::from_secs(2);
    let s = S3Storage::open(cfg).await.unwrap();
    s.put("wal/1", payload(1, 100_000), PutMode::Create)
        .await
        .unwrap();
    server.stop();
    for (op, r) in [
        ("get", s.get("wal/1").await.map(|_| ())),
        ("get absent", s.get("wal/2").await.map(|_| ())),
        ("head", s.head("wal/1").await.map(|_| ())),
        ("list", s.list("").await.map(|_| ())),
        (
            "put",
            s.put("wal/2", Bytes::new(), PutMode::Create)
                .await
                .map(|_| ()),
        ),
    ] {
        let started = Instant::now();
        let (failure, msg) = failure_of(r);
        assert_eq!(failure, RemoteFailure::Unreachable, "{op}: {msg}");
        assert!(failure.is_transient());
        assert!(msg.contains("--s3-endpoint"), "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{op} took too long"
        );
    }
    // an upload to a stopped server fails and publishes nothing
    let mut up = s.upload("wal/3").await.unwrap();
    let big = up.write(payload(3, 6 << 20)).await;
    assert_eq!(failure_of(big).0, RemoteFailure::Unreachable);
    assert!(up.finish(PutMode::Create).await.is_err());
    server.restart();
    // Right after a restart SeaweedFS may answer 500 until its volume server has registered
    // again: the default retry budget (a minute) rides that out, 2 s may not.
    let mut cfg = s.config().clone();
    cfg.retry_timeout = Duration::from_secs(30);
    let s = S3Storage::new(cfg).unwrap();
    assert_eq!(
        s.get("wal/1").await.unwrap().unwrap(),
        payload(1, 100_000),
        "acknowledged data must survive a restart"
    );
    assert!(s.head("wal/3").await.unwrap().is_none());
    // the failed create can be retried once the server is back
    assert_eq!(
        s.put("wal/2", Bytes::from_static(b"2"), PutMode::Create)
            .await
            .unwrap(),
        PutOutcome::Written
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_https_needs_a_trusted_certificate() {
    let server = SeaweedFs::start_with(SeaweedOptions { https: true });
    let mut cfg = s3_config(&server, "tls");
    cfg.endpoint = server.https_endpoint();
    cfg.retry_timeout = Duration::from_secs(2);
    // the self-signed certificate is not among the system's roots
    let (failure, msg) = failure_of(S3Storage::open(cfg.clone()).await);
    assert_eq!(failure, RemoteFailure::Tls, "{msg}");
    assert!(msg.contains("--s3-ca-file"), "{msg}");
    // trusted as a private CA, it works
    cfg.ca_file = server.ca_file();
    let s = S3Storage::open(cfg.clone()).await.unwrap();
    s.put("k", Bytes::from_static(b"tls"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        s.get("k").await.unwrap().unwrap(),
        Bytes::from_static(b"tls")
    );
    // a CA file that is not one is a configuration error naming the file
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not a certificate").unwrap();
    cfg.ca_file = Some(junk.path().to_path_buf());
    let (failure, msg) = failure_of(S3Storage::new(cfg));
    assert_eq!(failure, RemoteFailure::Config, "{msg}");
    assert!(msg.contains(&junk.path().display().to_string()), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_repositories_under_different_prefixes_do_not_see_each_other() {
    let server = SeaweedFs::shared();
    let a = S3Storage::open(s3_config(server, "iso")).await.unwrap();
    let b = S3Storage::open(s3_config(server, "iso")).await.unwrap();
    a.put("x/1", Bytes::from_static(b"a"), PutMode::Create)
        .await
        .unwrap();
    assert!(b.get("x/1").await.unwrap().is_none());
    assert!(b.list("").await.unwrap().is_empty());
    assert!(b.list_dirs("").await.unwrap().is_empty());
    assert_eq!(keys(a.list("").await.unwrap()), vec!["x/1"]);
    assert!(a.location().starts_with("s3://pitr-test/t/iso-"));
}

/// The multipart uploads in progress in the server's bucket, from the filer's listing of
/// `.uploads/` (one entry per upload).
fn uploads_in_progress(server: &SeaweedFs) -> usize {
    use std::io::{Read, Write};
    let addr = server.filer_endpoint().replace("http://", "");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /buckets/{}/.uploads/ HTTP/1.0\r\nAccept: application/json\r\n\r\n",
        server.bucket()
    );
    conn.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply.matches("\"FullPath\"").count()
}

/// Waits up to 10 s for the bucket to have no multipart upload in progress.
async fn assert_uploads_aborted(server: &SeaweedFs, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while uploads_in_progress(server) > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: multipart upload not aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_dropped_failed_or_refused_uploads_abort_their_parts() {
    let server = SeaweedFs::start();
    let s = S3Storage::open(s3_config(&server, "abort")).await.unwrap();
    // in progress: parts are stored, as an upload (the oracle sees it)
    let mut up = s.upload("big").await.unwrap();
    up.write(payload(1, 12 << 20)).await.unwrap();
    assert_eq!(uploads_in_progress(&server), 1);
    drop(up);
    assert_uploads_aborted(&server, "dropped upload").await;
    // refused by finish(Create): the parts go too
    s.put("big", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let out = upload_in_chunks(&s, "big", &payload(2, 12 << 20), PutMode::Create).await;
    assert_eq!(out, PutOutcome::AlreadyExists);
    assert_uploads_aborted(&server, "refused upload").await;
    assert_eq!(
        s.get("big").await.unwrap().unwrap(),
        Bytes::from_static(b"first")
    );
    // completed: nothing left in progress either
    upload_in_chunks(&s, "big", &payload(3, 12 << 20), PutMode::Overwrite).await;
    assert_uploads_aborted(&server, "completed upload").await;
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

both_drivers!(modified_is_the_time_of_the_last_write);

/// `modified` (the archive time `pitr metrics` reports): about now after a write, `None` for an
/// absent key.
async fn modified_is_the_time_of_the_last_write(s: &dyn Storage) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    s.put("m/k", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap();
    let at = s
        .modified("m/k")
        .await
        .unwrap()
        .expect("a time for an object just written");
    let after = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    assert!(at >= before && at <= after, "{at:?}");
    assert!(s.modified("m/absent").await.unwrap().is_none());
    s.delete("m/k").await.unwrap();
}
