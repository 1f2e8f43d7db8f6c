//! What one `archive-push` costs on S3, counted in HTTP requests on the real SeaweedFS harness,
//! opening the repository as the command does (no bucket listing, no marker HEAD): the key
//! object's GET and the cluster identity's GET, both overlapping the compression
//! (`push_opening`), then the create-only PUT; a duplicate adds a HEAD and two ranged GETs of the stored copy's
//! summary. A push that adds a request fails here instead of silently slowing every
//! archive_command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pitr_core::archive::{push_opening, ArchiveError, PushOutcome};
use pitr_repo::{Compression, Repo, RepoError};
use pitr_storage::{PutMode, S3Config, S3Credentials, S3Storage, Storage};
use pitr_testkit::SeaweedFs;

const NAME: &str = "000000010000000000000002";

fn segment(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pitr-pg/tests/fixtures/pg17-16mb")
        .join(format!("{NAME}.zst"));
    let bytes = zstd::decode_all(std::fs::File::open(&fixture).unwrap()).unwrap();
    let path = dir.join(NAME);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn config(server: &SeaweedFs, prefix: &str) -> S3Config {
    let mut cfg = S3Config::from_url(&format!("s3://{}/t/{prefix}", server.bucket())).unwrap();
    cfg.endpoint = Some(server.endpoint());
    cfg.region = Some("us-east-1".into());
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: server.secret_access_key().into(),
        session_token: None,
    });
    cfg.retry_timeout = Duration::from_secs(10);
    cfg
}

/// One push as a fresh `archive-push` process makes it (a new driver, the repository opened
/// by the push itself); returns its outcome and the HTTP requests it sent.
async fn push_counted(cfg: &S3Config, seg: &Path) -> (PushOutcome, u64) {
    let s3 = Arc::new(S3Storage::new(cfg.clone()).unwrap());
    let open = {
        let s3 = s3.clone();
        async move {
            let storage: Arc<dyn Storage> = s3;
            let repo = Repo::open_with_key_unchecked(storage, None)
                .await
                .map_err(ArchiveError::from)?;
            repo.cluster("main").map_err(ArchiveError::from)
        }
    };
    let report = push_opening(open, seg, Compression::Zstd(1)).await.unwrap();
    (report.outcome, s3.requests_sent())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_s3_costs_one_request_per_check_and_one_put() {
    let server = SeaweedFs::shared();
    let work = tempfile::tempdir().unwrap();
    let seg = segment(work.path());
    let prefix = format!("s3-push-{}", std::process::id());
    let cfg = config(server, &prefix);

    // The first push into an empty location also checks that it is empty (marker HEAD, a
    // listing) and writes the marker and the identity.
    let (outcome, first) = push_counted(&cfg, &seg).await;
    assert_eq!(outcome, PushOutcome::Stored);

    // A duplicate: key object, identity, PUT (412), then the stored copy's summary: a HEAD for
    // its size and ranged reads of its header and trailer (never the whole object).
    let (outcome, dup) = push_counted(&cfg, &seg).await;
    assert_eq!(outcome, PushOutcome::AlreadyArchived);
    assert_eq!(dup, 6, "requests of a duplicate push");

    // The usual push (repository and identity exist, the segment does not): three requests,
    // of which only the PUT waits for the compression.
    let s3 = S3Storage::new(cfg.clone()).unwrap();
    s3.delete(&format!("main/wal/00000001/{NAME}"))
        .await
        .unwrap();
    let (outcome, usual) = push_counted(&cfg, &seg).await;
    assert_eq!(outcome, PushOutcome::Stored);
    assert_eq!(usual, 3, "requests of a push");
    eprintln!("S3 requests per archive-push: first {first}, usual {usual}, duplicate {dup}");
    assert!(first > usual, "{first}");

    // Opened unchecked, a push into a location that holds something else still refuses it
    // before writing anything (no identity there proves it a repository).
    let foreign = config(server, &format!("{prefix}-foreign"));
    let s3 = S3Storage::new(foreign.clone()).unwrap();
    s3.put("PG_VERSION", "17\n".into(), PutMode::Create)
        .await
        .unwrap();
    let storage: Arc<dyn Storage> = Arc::new(s3);
    let repo = Repo::open_with_key_unchecked(storage.clone(), None)
        .await
        .unwrap();
    let open = async move { Ok::<_, ArchiveError>(repo.cluster("main").unwrap()) };
    let err = push_opening(open, &seg, Compression::Zstd(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::Repo(RepoError::NotARepository { example, .. }) if example == "PG_VERSION"
        ),
        "{err}"
    );
    let keys: Vec<String> = storage
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["PG_VERSION"]);
}
