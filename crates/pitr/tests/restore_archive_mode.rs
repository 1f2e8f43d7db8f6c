//! `restore --archive-mode off|preserve` and the warning when `latest` follows a branch off a
//! timeline that went on (promise 7: a restore made to look at data never changes what the
//! production repository means).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{archiving_cluster, json, pitr, psql_port, s};
use pitr_testkit::{as_postgres, pg_test_matrix, ClusterOptions, PgInstall};
use serde_json::Value;

/// `pitr --json [-p PORT] restore --pgdata DIR ARGS --start` (exit 0).
fn restore_start(pg: &PgInstall, repo: &Path, dir: &Path, port: u16, args: &[&str]) -> Value {
    let port = port.to_string();
    let mut all = vec![
        "--repo",
        s(repo),
        "--json",
        "-p",
        &port,
        "restore",
        "--pgdata",
        s(dir),
        "--start",
        "--pg-bin",
        s(&pg.bindir),
        "--wait-timeout",
        "120",
    ];
    all.extend_from_slice(args);
    json(&pitr(&all).expect_code(0))
}

fn stop(pg: &PgInstall, dir: &Path) {
    let mut cmd = Command::new(pg.bin("pg_ctl"));
    cmd.arg("-D").arg(dir).args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn info(repo: &Path) -> Value {
    json(&pitr(&["--repo", s(repo), "--json", "info"]).expect_code(0))["clusters"][0].clone()
}

/// Waits until PostgreSQL's archiver has put `name` into timeline `tli`'s WAL directory.
fn wait_in_repo(repo: &Path, tli: u32, name: &str) {
    let p = repo.join(format!("main/wal/{tli:08X}/{name}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{name} was not archived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A promoted `--archive-mode off` restore archives nothing (no timeline 2 appears, `info` is
/// unchanged); a promoted `preserve` restore makes timeline 2, and then `info`, `restore` and
/// `restore --dry-run` warn that `latest` branched off timeline 1, which went on.
fn look_only_restores_stay_out_of_the_repository(pg: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(pg, "", ClusterOptions::default());
    let r = s(&repo);
    c.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)");
    common::pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    c.psql("INSERT INTO t VALUES (2)");
    let target = c.psql("SELECT pg_current_wal_insert_lsn()");
    c.psql("INSERT INTO t VALUES (3)");
    let closed = c.switch_wal();
    assert!(c.wait_archived(&closed, Duration::from_secs(60)));
    let before = info(&repo);

    // --archive-mode off, promoted at the target: it writes, switches WAL, archives nothing.
    let off = scratch.path().join("off");
    let rep = restore_start(
        pg,
        &repo,
        &off,
        5433,
        &[
            "--target-lsn",
            &target,
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
        ],
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(rep["start"]["timeline"], 2, "{rep}");
    assert_eq!(rep["restore"]["plan"]["archive_mode"], "off", "{rep}");
    let auto = fs::read_to_string(off.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    let q = |sql: &str| psql_port(pg, c.socket_dir(), 5433, sql);
    assert_eq!(q("SHOW archive_mode"), "off");
    assert_eq!(q("SELECT v FROM t ORDER BY v"), "1\n2");
    q("INSERT INTO t VALUES (20)");
    q("SELECT pg_switch_wal()");
    // With archive_mode off there is no archiver: nothing was or will be archived.
    assert_eq!(
        q("SELECT archived_count + failed_count FROM pg_stat_archiver"),
        "0"
    );
    stop(pg, &off);
    assert!(!repo.join("main/wal/00000002").exists());
    assert_eq!(
        info(&repo),
        before,
        "an --archive-mode off restore changed info"
    );
    let history = json(&pitr(&["--repo", r, "--json", "history"]).expect_code(0));
    assert_eq!(history["history"][0]["archive_mode"], "off", "{history}");
    let text = pitr(&["--repo", r, "history"]).expect_code(0).stdout;
    assert!(text.contains(" off "), "{text}");

    // preserve (the default), promoted: timeline 2 is archived into the repository.
    let kept = scratch.path().join("preserve");
    let rep = restore_start(
        pg,
        &repo,
        &kept,
        5434,
        &["--target-lsn", &target, "--target-action", "promote"],
    );
    assert_eq!(rep["restore"]["plan"]["archive_mode"], "preserve", "{rep}");
    assert_eq!(rep["start"]["timeline"], 2, "{rep}");
    wait_in_repo(&repo, 2, "00000002.history");
    stop(pg, &kept);
    // Production went on on timeline 1: more writes, more archived WAL.
    for v in 4..6 {
        c.psql(&format!("INSERT INTO t VALUES ({v})"));
        let closed = c.switch_wal();
        assert!(c.wait_archived(&closed, Duration::from_secs(60)));
    }

    let after = info(&repo);
    let w = &after["timeline_warnings"][0];
    assert_eq!(
        (w["latest"].clone(), w["parent"].clone()),
        (2.into(), 1.into()),
        "{after:#}"
    );
    assert_eq!(w["flag"], "--target-timeline 1", "{w:#}");
    assert_eq!(w["latest_reach"]["to"]["timeline"], 2, "{w:#}");
    assert_eq!(w["parent_reach"]["to"]["timeline"], 1, "{w:#}");
    let parent_end = w["parent_reach"]["to"]["lsn"].as_str().unwrap().to_string();
    let latest_end = w["latest_reach"]["to"]["lsn"].as_str().unwrap().to_string();
    let text = pitr(&["--repo", r, "info"]).expect_code(0).stdout;
    for needle in [
        "WARNING timeline 2",
        "branched off timeline 1",
        &format!("{latest_end} on timeline 2"),
        &format!("{parent_end} on timeline 1"),
        "--target-timeline 1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    // restore --dry-run (text and JSON) and restore itself say the same.
    let dir = scratch.path().join("again");
    let dry = pitr(&["--repo", r, "restore", "--pgdata", s(&dir), "--dry-run"]).expect_code(0);
    assert!(
        dry.stdout.contains("WARNING:") && dry.stdout.contains("--target-timeline 1"),
        "{}",
        dry.stdout
    );
    let dry = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "restore",
            "--pgdata",
            s(&dir),
            "--dry-run",
        ])
        .expect_code(0),
    );
    assert_eq!(dry["plan"]["timeline_warnings"][0]["parent"], 1, "{dry:#}");
    let run = pitr(&["--repo", r, "restore", "--pgdata", s(&dir)]).expect_code(0);
    assert!(
        run.stdout.contains("branched off timeline 1"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("--target-timeline 1"), "{}", run.stderr);
    // Following timeline 1 explicitly: no warning.
    let on1 = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "restore",
            "--pgdata",
            s(&scratch.path().join("on1")),
            "--dry-run",
            "--target-timeline",
            "1",
        ])
        .expect_code(0),
    );
    assert_eq!(on1["plan"]["timeline_warnings"], serde_json::json!([]));
    assert_eq!(on1["plan"]["choice"]["target_tli"], 1);
}
pg_test_matrix!(look_only_restores_stay_out_of_the_repository);
