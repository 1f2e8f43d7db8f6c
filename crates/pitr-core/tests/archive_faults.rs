//! archive-push and archive-get over storage that fails (`FaultyStorage`): a push whose writes
//! fail after any number of successes leaves the segment absent or whole and a retry stores it;
//! transient read failures are retried; reads that keep failing are an error, never "absent"
//! (which would end PostgreSQL's recovery early). The segment is a real 16 MB one written by
//! PostgreSQL 17 (pitr-pg's fixture).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pitr_core::archive::{get, push, GetOutcome, PushOutcome};
use pitr_repo::{ClusterRepo, Compression, Repo};
use pitr_storage::{Fault, FaultyStorage, LocalFs, Storage};

const NAME: &str = "000000010000000000000002";

fn segment(dir: &Path) -> (PathBuf, Vec<u8>) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pitr-pg/tests/fixtures/pg17-16mb")
        .join(format!("{NAME}.zst"));
    let bytes = zstd::decode_all(std::fs::File::open(&fixture).unwrap()).unwrap();
    let path = dir.join(NAME);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn cluster(storage: Arc<dyn Storage>) -> ClusterRepo {
    Repo::new(storage).cluster("main").unwrap()
}

/// What the healthy repository serves for the segment: None when absent.
async fn served(healthy: &ClusterRepo, dir: &Path) -> Option<Vec<u8>> {
    let dest = dir.join("served");
    let _ = std::fs::remove_file(&dest);
    match get(healthy, NAME, &dest, None).await.unwrap() {
        GetOutcome::NotFound => None,
        GetOutcome::Restored { .. } => Some(std::fs::read(&dest).unwrap()),
    }
}

#[tokio::test]
async fn a_push_failing_after_any_write_leaves_the_segment_absent_or_whole() {
    let work = tempfile::tempdir().unwrap();
    let (seg, original) = segment(work.path());
    let mut failed_pushes = 0;
    for successes in 0.. {
        let repo_dir = work.path().join(format!("repo{successes}"));
        let local: Arc<dyn Storage> = Arc::new(LocalFs::create(&repo_dir).unwrap());
        let healthy = cluster(local.clone());
        let faulty = cluster(Arc::new(FaultyStorage::failing_after(
            local,
            Fault::Writes,
            successes,
        )));
        let attempt = push(&faulty, &seg, Compression::Zstd(1)).await;
        let after = served(&healthy, work.path()).await;
        if attempt.is_ok() {
            assert_eq!(after.as_deref(), Some(&original[..]));
            break; // enough writes for a whole push: every failure point was tried
        }
        failed_pushes += 1;
        assert!(
            after.is_none() || after.as_deref() == Some(&original[..]),
            "a push failing after {successes} writes left a different segment"
        );
        // The archiver's retry, once storage is back.
        let retry = push(&healthy, &seg, Compression::Zstd(1)).await.unwrap();
        assert!(matches!(
            retry.outcome,
            PushOutcome::Stored | PushOutcome::AlreadyArchived
        ));
        assert_eq!(
            served(&healthy, work.path()).await.as_deref(),
            Some(&original[..])
        );
    }
    eprintln!(
        "archive-push over failing storage: failed after each of {failed_pushes} write points, 0 half-visible, {failed_pushes}/{failed_pushes} finished by a retry"
    );
    assert!(failed_pushes >= 2, "{failed_pushes}");
}

#[tokio::test]
async fn transient_read_failures_are_retried_and_lasting_ones_are_errors_not_absence() {
    let work = tempfile::tempdir().unwrap();
    let (seg, original) = segment(work.path());
    let local: Arc<dyn Storage> = Arc::new(LocalFs::create(work.path().join("repo")).unwrap());
    push(&cluster(local.clone()), &seg, Compression::Zstd(1))
        .await
        .unwrap();
    let dest = work.path().join("dest");

    // Two failures: within the retries.
    let flaky = cluster(Arc::new(FaultyStorage::new(local.clone(), Fault::Reads, 2)));
    let got = get(&flaky, NAME, &dest, None).await.unwrap();
    assert!(matches!(got, GetOutcome::Restored { .. }));
    assert_eq!(std::fs::read(&dest).unwrap(), original);
    std::fs::remove_file(&dest).unwrap();

    // Failing for good: an error (archive-get exits above 125), nothing at the destination.
    let down = cluster(Arc::new(FaultyStorage::new(local, Fault::Reads, u32::MAX)));
    let err = get(&down, NAME, &dest, None)
        .await
        .expect_err("reads that keep failing must not succeed");
    assert!(!dest.exists(), "{err}");
    // And a segment that does not exist is still an error while storage cannot be read.
    let err = get(&down, "000000010000000000000009", &dest, None)
        .await
        .expect_err("absence cannot be known while reads fail");
    assert!(!dest.exists(), "{err}");
}
