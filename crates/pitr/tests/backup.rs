//! `pitr backup` against real PostgreSQL 14–18.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;
use pitr_testkit::{pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};

struct Setup {
    _scratch: tempfile::TempDir,
    repo: PathBuf,
    c: Cluster,
}

fn setup(install: &PgInstall, checksums: bool) -> Setup {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            data_checksums: checksums,
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    Setup {
        _scratch: scratch,
        repo,
        c,
    }
}

/// `pitr backup` connected to the test cluster, as the postgres OS user.
fn backup(st: &Setup, extra: &[&str]) -> Run {
    pitr_on(&st.c, &st.repo, "backup", extra)
}

fn info(repo: &Path) -> serde_json::Value {
    serde_json::from_str(
        &pitr(&["--repo", s(repo), "info", "--json"])
            .expect_code(0)
            .stdout,
    )
    .unwrap()
}

/// A full backup taken while pgbench writes, with data checksums on: every file is stored and
/// verifiable, the WAL it needs is archived, and no page is reported corrupt.
fn backup_under_write_load(install: &PgInstall) {
    let st = setup(install, true);
    st.c.pgbench_init(5);
    let load = {
        let env = st.c.env();
        let pgbench = st.c.install().bin("pgbench");
        thread::spawn(move || {
            std::process::Command::new(pgbench)
                .envs(env)
                .args(["-n", "-c", "2", "-T", "4"])
                .output()
                .unwrap()
        })
    };
    thread::sleep(Duration::from_millis(300));
    let run = backup(&st, &[]).expect_code(0);
    let label = run.stdout.trim().to_string();
    assert!(label.ends_with('F') && label.len() == 16, "{run:?}");
    assert!(load.join().unwrap().status.success());

    let v = info(&st.repo);
    let b = &v["clusters"][0]["backups"][0];
    assert_eq!(b["label"], label.as_str());
    assert_eq!(b["checksum_failures"], 0, "{b}");
    assert!(b["files"].as_u64().unwrap() > 500, "{b}");
    assert!(
        b["size"].as_u64().unwrap() > 60 << 20,
        "pgbench scale 5 is ~80 MB: {b}"
    );
    let verify = pitr(&["--repo", s(&st.repo), "verify"]).expect_code(0);
    assert!(verify.stdout.contains("everything verified"), "{verify:?}");

    // What pg_basebackup leaves out is not in the backup.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(st.repo.join("main/backup").join(&label).join("backup.json")).unwrap(),
    )
    .unwrap();
    let files: Vec<&str> = manifest["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"global/pg_control") && files.contains(&"PG_VERSION"));
    for excluded in ["postmaster.pid", "postmaster.opts", "backup_label"] {
        assert!(
            !files.contains(&excluded),
            "{excluded} must not be backed up"
        );
    }
    assert!(
        !files.iter().any(|f| f.starts_with("pg_wal/")),
        "pg_wal contents must not be backed up"
    );
    let label_text = manifest["body"]["backup_label"].as_str().unwrap();
    assert!(
        label_text.contains("START WAL LOCATION") && label_text.contains(&label),
        "{label_text}"
    );
}
pg_test_matrix!(backup_under_write_load);

#[test]
fn incremental_backup_copies_only_changed_files() {
    let st = setup(&newest_pg(), false);
    st.c.psql(
        "CREATE TABLE big AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 200000) g",
    );
    st.c.psql("VACUUM (FREEZE) big");
    st.c.psql("CHECKPOINT");
    // Files modified in the second the parent backup starts are never trusted as unchanged.
    thread::sleep(Duration::from_millis(2100));
    backup(&st, &[]).expect_code(0);
    // Make sure the next changes land in a later second than the full backup's start.
    thread::sleep(Duration::from_millis(1500));
    st.c.psql("CREATE TABLE small AS SELECT 1 AS x");
    let run = backup(&st, &["--type", "incr", "--json"]).expect_code(0);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["kind"], "incr");
    assert!(r["parent"].as_str().unwrap().ends_with('F'));
    let (files, copied) = (
        r["files"].as_u64().unwrap(),
        r["files_copied"].as_u64().unwrap(),
    );
    assert!(
        copied < files / 2,
        "an incremental backup should reuse most files: {copied} of {files} copied"
    );
    assert!(
        r["stored_size"].as_u64().unwrap() < r["size"].as_u64().unwrap() / 4,
        "the big table must not be stored again: {r}"
    );
    pitr(&["--repo", s(&st.repo), "verify"]).expect_code(0);
}

#[test]
fn corrupt_data_pages_are_reported_in_the_backup() {
    let st = setup(&oldest_pg(), true);
    st.c.psql(
        "CREATE TABLE victim AS SELECT g, repeat('v', 100) AS pad FROM generate_series(1, 10000) g",
    );
    let relpath = st.c.psql("SELECT pg_relation_filepath('victim')");
    st.c.psql("CHECKPOINT");
    st.c.stop();
    // Damage block 3's tuple data (not its header) on disk.
    let file = st.c.datadir().join(&relpath);
    let mut bytes = fs::read(&file).unwrap();
    let at = 3 * 8192 + 4000;
    bytes[at] ^= 0xFF;
    bytes[at + 1] ^= 0xFF;
    fs::write(&file, &bytes).unwrap();
    st.c.start();
    let run = backup(&st, &["--json"]).expect_code(0);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let failures = r["checksum_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r}");
    assert_eq!(failures[0][0], relpath.as_str());
    assert_eq!(failures[0][1], serde_json::json!([3]));
    assert_eq!(
        info(&st.repo)["clusters"][0]["backups"][0]["checksum_failures"],
        1
    );
}

#[test]
fn backup_refuses_what_it_cannot_use() {
    let install = oldest_pg();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);

    // archiving off: a backup could never be restored
    let off = Cluster::init(&install, ClusterOptions::default());
    off.start();
    let port = off.port().to_string();
    let r = pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "backup",
        "-h",
        s(off.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
    ])
    .expect_code(3);
    assert!(
        r.stderr.contains("archive_mode") && r.stderr.contains("archive-push %p"),
        "{r:?}"
    );

    // archive_command that never reaches the repository: bounded wait, then a clear error
    let broken = Cluster::init(
        &install,
        ClusterOptions {
            archive_command: Some("/bin/false".into()),
            ..Default::default()
        },
    );
    broken.start();
    let port = broken.port().to_string();
    let r = pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "backup",
        "-h",
        s(broken.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
        "--archive-timeout",
        "3",
    ])
    .expect_code(3);
    assert!(
        r.stderr.contains("did not reach the repository") && r.stderr.contains("archive_command"),
        "{r:?}"
    );
    assert!(
        info(&repo)["clusters"][0]["backups"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no manifest may be published"
    );

    // another cluster in the same repository cluster name: refused
    let other = Cluster::init(
        &install,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "--cluster other")),
            ..Default::default()
        },
    );
    other.start();
    let port = other.port().to_string();
    let r = pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "backup",
        "-h",
        s(other.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
    ])
    .expect_code(4);
    assert!(r.stderr.contains("system identifier"), "{r:?}");

    // unreachable server
    let r = pitr(&[
        "--repo",
        s(&repo),
        "backup",
        "-h",
        "/nonexistent-socket-dir",
        "-p",
        "5999",
        "-U",
        "postgres",
    ])
    .expect_code(3);
    assert!(r.stderr.contains("/nonexistent-socket-dir"), "{r:?}");
}
