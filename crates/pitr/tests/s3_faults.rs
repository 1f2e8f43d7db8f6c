//! S3 faults: the object store runs out of space (SeaweedFS on a small tmpfs, as root) under
//! archive-push and backup: each fails cleanly with a clear error, nothing half-stored is
//! visible, and a rerun once space is back succeeds and verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::SeaweedFs;
use pitr_testkit::{postgres_uid_gid, Cluster, ClusterOptions};

/// SeaweedFS with 150 MB of disk: two 64 MB segments pushed uncompressed fill it; the next
/// push and a backup fail (push within 1–125, each naming the object and the store's answer),
/// nothing of theirs is visible (archive-get exits 1, no backup listed); once the disk has
/// room again the same push and backup succeed and everything verifies.
#[test]
fn a_full_object_store_fails_push_and_backup_cleanly_and_reruns_succeed() {
    if postgres_uid_gid().is_none() {
        eprintln!("not root: cannot mount a small tmpfs; this check runs in CI as root");
        return;
    }
    let server = SeaweedFs::start_with_data_tmpfs(150);
    let pg = newest_pg();
    let env = server.env();
    let url = format!("s3://{}/full", server.bucket());
    pitr_env(&env, &["init", "--repo", &url]).expect_code(0);
    let filler = Cluster::init(
        &pg,
        ClusterOptions {
            wal_segsize_mb: Some(64),
            ..Default::default()
        },
    );
    let seg: PathBuf = fs::read_dir(filler.datadir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .min()
        .unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let push = |cluster: &str| {
        pitr_env(
            &env,
            &[
                "--repo",
                &url,
                "--cluster",
                cluster,
                "--compress",
                "none",
                "--s3-retry-timeout",
                "3",
                "archive-push",
                s(&seg),
            ],
        )
    };
    // Fill the store: the same segment under other cluster names, until a push fails.
    let mut full = None;
    for i in 0..6 {
        let r = push(&format!("fill{i}"));
        if r.code != 0 {
            full = Some((format!("fill{i}"), r));
            break;
        }
    }
    let (failed_cluster, failed) = full.expect("the store never filled up");
    assert!(
        (1..=125).contains(&failed.code)
            && failed.stderr.contains("cannot put")
            && failed.stderr.contains("out of space"),
        "push into a full store: {failed:?}"
    );
    let scratch = pitr_testkit::scratch_dir();
    let dest = scratch.path().join(&name);
    let get = |cluster: &str| {
        pitr_env(
            &env,
            &[
                "--repo",
                &url,
                "--cluster",
                cluster,
                "archive-get",
                &name,
                s(&dest),
                "--prefetch",
                "0",
            ],
        )
    };
    assert_eq!(
        get(&failed_cluster).code,
        1,
        "a failed push left something readable"
    );
    assert!(!dest.exists());

    let c = Cluster::init(
        &pg,
        ClusterOptions {
            archive_command: Some(format!(
                "'{}' --repo '{url}' archive-push %p",
                pitr_bin().display()
            )),
            ..Default::default()
        }
        .envs(&env),
    );
    c.start();
    let (sock, port) = (s(c.socket_dir()).to_string(), c.port().to_string());
    let backup = |retry: &str| {
        pitr_env(
            &env,
            &[
                "--repo",
                &url,
                "--s3-retry-timeout",
                retry,
                "backup",
                "-h",
                &sock,
                "-p",
                &port,
                "-U",
                "postgres",
            ],
        )
    };
    let b = backup("3");
    assert!(
        (1..=125).contains(&b.code) && b.stderr.contains("cannot put"),
        "backup into a full store: {b:?}"
    );
    let lab = |args: &[&str]| {
        let mut all = vec!["--repo", url.as_str()];
        all.extend_from_slice(args);
        pitr_env(&env, &all)
    };
    let info = json(&lab(&["--json", "info"]).expect_code(0));
    let listed = info["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "main")
        .map(|c| c["backups"].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    assert_eq!(listed, 0, "a backup that failed is listed: {info}");

    // Room again: the archiver's retries and the reruns succeed.
    server.resize_data(1024);
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        let r = push(&failed_cluster);
        if r.code == 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    again.expect_code(0);
    get(&failed_cluster).expect_code(0);
    assert!(fs::read(&dest).unwrap() == fs::read(&seg).unwrap());
    backup("60").expect_code(0);
    lab(&["verify"]).expect_code(0);
    lab(&["--cluster", &failed_cluster, "verify"]).expect_code(0);
    eprintln!(
        "full object store: push and backup failed cleanly (exit {} and {}), nothing listed or \
         readable, both reruns succeeded once space was back",
        failed.code, b.code
    );
}
