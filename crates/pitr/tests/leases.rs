//! Concurrency on a real server: `expire` while a backup runs, a backup started while `expire`
//! runs, two expires at once. The commands are held at exact steps with the documented pause
//! points (`PITR_PAUSE_AT`/`PITR_PAUSE_FILE`, see `pitr_core::pause`), never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{archiving_cluster, json, pitr, pitr_as_postgres, pitr_bin, s};
use pitr_testkit::{as_postgres, create_postgres_dir, pg_test_matrix, ClusterOptions, PgInstall};

/// `pitr ARGS` as postgres, started in the background, held at pause `point` (the file
/// `pause` exists until the test removes it).
fn paused(args: &[&str], point: &str, pause: &Path) -> Child {
    std::fs::write(pause, "").unwrap();
    let mut c = Command::new(pitr_bin());
    c.args(args)
        .env_remove("PITR_REPO")
        .env("PITR_PAUSE_AT", point)
        .env("PITR_PAUSE_FILE", pause)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_postgres(&mut c);
    let mut child = c.spawn().unwrap();
    let reached = PathBuf::from(format!("{}.reached", pause.display()));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !reached.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} ended ({st}) before pause point {point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "{point} not reached");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Removes the pause file and waits for the command; returns its stdout (exit 0 required).
fn resume(child: Child, pause: &Path) -> String {
    std::fs::remove_file(pause).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn labels(repo: &Path) -> Vec<String> {
    let info = json(&pitr(&["--repo", s(repo), "--json", "info"]).expect_code(0));
    info["clusters"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect()
}

fn verify(repo: &Path) {
    let v = pitr(&["--repo", s(repo), "verify"]);
    assert_eq!(v.code, 0, "verify: {v:?}");
}

/// Expire during a running backup keeps its objects and its WAL (its lease), and the backup
/// then completes and restores; a backup started while expire runs is untouched; two expires at
/// once both finish; after each, the repository verifies.
fn expire_and_backups_at_once(pg: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(pg, "", ClusterOptions::default());
    let r = s(&repo);
    let pauses = create_postgres_dir(&scratch.path().join("pauses"));
    let port = c.port().to_string();
    let sock = s(c.socket_dir()).to_string();
    let backup_args = vec![
        "--repo", r, "backup", "-h", &sock, "-p", &port, "-U", "postgres",
    ];
    let backup = || {
        pitr_as_postgres(&backup_args)
            .expect_code(0)
            .stdout
            .trim()
            .to_string()
    };
    c.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)");
    let a = backup();
    c.psql("INSERT INTO t VALUES (2)");

    // 1. Backup B, held between its copy and its manifest, while C completes and expire keeps
    //    only the newest full backup (C): B's objects and the WAL from B's start must stay.
    let pause_b = pauses.join("b");
    let b_run = paused(&backup_args, "backup-before-manifest", &pause_b);
    c.psql("INSERT INTO t VALUES (3)");
    let c_label = backup();
    let rep = json(&pitr(&["--repo", r, "--json", "expire", "--retain-full", "1"]).expect_code(0));
    let expired: Vec<&str> = rep["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect();
    assert_eq!(expired, vec![a.as_str()], "{rep:#}");
    let in_use = rep["in_use"].to_string();
    assert!(in_use.contains("backup by"), "{rep:#}");
    let b = resume(b_run, &pause_b).trim().to_string();
    assert!(b < c_label, "{b} {c_label}");
    assert_eq!(labels(&repo), vec![b.clone(), c_label.clone()]);
    verify(&repo);
    // B restores, with the rows it saw (archiving off: this copy only looks).
    let dir = scratch.path().join("restored-b");
    let restored = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "-p",
            "5433",
            "restore",
            "--pgdata",
            s(&dir),
            "--backup",
            &b,
            "--target-immediate",
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
            "--start",
            "--pg-bin",
            s(&pg.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(restored["start"]["outcome"], "promoted", "{restored:#}");
    let rows = common::psql_port(pg, c.socket_dir(), 5433, "SELECT count(*) FROM t");
    assert!(rows == "2" || rows == "3", "{rows}");
    let mut stop = Command::new(pg.bin("pg_ctl"));
    stop.arg("-D").arg(&dir).args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut stop);
    assert!(stop.status().unwrap().success());

    // 2. Expire held after reading the leases, before removing anything; backup D runs from
    //    start to end meanwhile; expire then removes B and leaves D whole.
    let pause_e = pauses.join("e");
    let e_run = paused(
        &["--repo", r, "--json", "expire", "--retain-full", "1"],
        "expire-before-removal",
        &pause_e,
    );
    c.psql("INSERT INTO t VALUES (4)");
    let d = backup();
    let out = resume(e_run, &pause_e);
    assert!(out.contains(&b), "{out}");
    assert_eq!(labels(&repo), vec![c_label.clone(), d.clone()]);
    verify(&repo);

    // 3. Two expires at once: both finish, C goes, D stays, the repository verifies.
    let spawn = || {
        let mut cmd = Command::new(pitr_bin());
        cmd.args(["--repo", r, "expire", "--retain-full", "1"])
            .env_remove("PITR_REPO")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        as_postgres(&mut cmd);
        cmd.spawn().unwrap()
    };
    let (x, y) = (spawn(), spawn());
    for child in [x, y] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(labels(&repo), vec![d.clone()]);
    verify(&repo);
    // No lease is left behind by the commands that finished.
    let leases = repo.join("main/lease");
    let left: Vec<_> = std::fs::read_dir(&leases)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
pg_test_matrix!(expire_and_backups_at_once);
