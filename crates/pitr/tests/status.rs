//! `pitr status` against a real primary and a real streaming standby (made with
//! `pg_basebackup -R` on a slot), PostgreSQL 14–18.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{
    as_postgres, pg_test_matrix, run_ok, scratch_dir, Cluster, ClusterOptions, PgInstall,
};
use serde_json::Value;

/// `pitr [--json] status -h … ARGS` against `c`.
fn status(c: &Cluster, user: &str, args: &[&str]) -> Run {
    let port = c.port().to_string();
    let mut all = vec![
        "status",
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
        "-U",
        user,
        "-d",
        "postgres",
    ];
    all.extend_from_slice(args);
    pitr(&all)
}

fn status_json(c: &Cluster, user: &str) -> Value {
    json(&status(c, user, &["--json"]).expect_code(0))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A primary with a streaming standby on slot `standby1`, a reserved idle slot `spare`:
/// `status --json` names both slots, the standby and the archiver on the primary, and the
/// receiver and positions on the standby; thresholds fire with exit 2 once replay is paused
/// and falls behind; a role without pg_monitor gets a report with the backlog unknown.
fn status_reports_standbys_slots_archiver_and_checks(install: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let primary = Cluster::init(
        install,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    primary.start();
    primary.psql("SELECT pg_create_physical_replication_slot('standby1')");
    primary.psql("SELECT pg_create_physical_replication_slot('spare', true)");
    primary.psql("CREATE TABLE t (id int)");
    primary.psql("CREATE ROLE mon LOGIN");

    let standby = Cluster::empty(
        install,
        ClusterOptions::default().set("cluster_name", "replica1"),
    );
    let mut bb = primary.command("pg_basebackup");
    bb.arg("-D")
        .arg(standby.datadir())
        .args(["-R", "-S", "standby1", "-X", "stream", "-c", "fast"]);
    as_postgres(&mut bb);
    run_ok(&mut bb);
    standby.write_conf();
    standby.start();
    wait_until("the standby to stream", || {
        primary.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
    });
    // Something to switch away from (the backup's end just switched segments).
    primary.psql("INSERT INTO t VALUES (0)");
    let seg = primary.switch_wal();
    assert!(primary.wait_archived(&seg, Duration::from_secs(60)));
    wait_until("the standby to report its replay position", || {
        primary.psql(
            "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn()",
        ) == "1"
    });

    // The primary.
    let p = status_json(&primary, "postgres");
    assert_eq!(p["role"], "primary", "{p}");
    let standbys = p["standbys"].as_array().unwrap();
    assert_eq!(standbys.len(), 1, "{p}");
    assert_eq!(standbys[0]["application_name"], "replica1", "{p}");
    assert_eq!(standbys[0]["client"], "local", "{p}");
    assert_eq!(standbys[0]["state"], "streaming", "{p}");
    assert_eq!(standbys[0]["sync_state"], "async", "{p}");
    assert!(standbys[0]["replay_lag_bytes"].is_u64(), "{p}");
    let slots = p["slots"].as_array().unwrap();
    let names: Vec<&str> = slots.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["spare", "standby1"], "{p}");
    assert_eq!(slots[0]["active"], false, "{p}");
    assert_eq!(slots[1]["active"], true, "{p}");
    assert_eq!(slots[0]["wal_status"], "reserved", "{p}");
    assert!(slots[0]["retained_bytes"].as_u64().unwrap() > 0, "{p}");
    let a = &p["archiver"];
    // The segment switched above, or the .backup history file archived just after it.
    assert!(
        a["last_archived_wal"].as_str().unwrap().starts_with(&seg),
        "{p}"
    );
    assert!(
        a["last_archived_age_seconds"].as_f64().unwrap() < 60.0,
        "{p}"
    );
    assert_eq!(a["failing"], false, "{p}");
    assert!(a["ready_count"].is_u64(), "{p}");
    assert_eq!(p["ok"], true, "{p}");

    // Thresholds that hold, and one that does not.
    status(
        &primary,
        "postgres",
        &[
            "--max-lag",
            "1GB",
            "--max-lag",
            "10min",
            "--max-archive-age",
            "1h",
        ],
    )
    .expect_code(0);
    std::thread::sleep(Duration::from_millis(1100));
    let run = status(&primary, "postgres", &["--max-archive-age", "1s"]).expect_code(2);
    assert!(run.stdout.contains("CRITICAL: last archived"), "{run:?}");
    assert!(
        run.stdout.contains("standby1 (physical, active)"),
        "{run:?}"
    );

    // The standby.
    let sb = status_json(&standby, "postgres");
    assert_eq!(sb["role"], "standby", "{sb}");
    let rec = &sb["recovery"];
    assert_eq!(rec["receiver_status"], "streaming", "{sb}");
    assert_eq!(rec["slot_name"], "standby1", "{sb}");
    assert!(rec["receive_lsn"].is_string(), "{sb}");

    // Replay paused while the primary writes: lag on both sides fires the check.
    standby.psql("SELECT pg_wal_replay_pause()");
    primary.psql("INSERT INTO t SELECT generate_series(1, 20000)");
    let target = primary.psql("SELECT pg_current_wal_lsn()");
    wait_until("the standby to receive the inserts", || {
        standby.psql(&format!(
            "SELECT pg_last_wal_receive_lsn() >= '{target}'::pg_lsn"
        )) == "t"
    });
    let run = status(&standby, "postgres", &["--max-lag", "64kB"]).expect_code(2);
    assert!(
        run.stdout.contains("CRITICAL: this standby: replay lag"),
        "{run:?}"
    );
    let sb = status_json(&standby, "postgres");
    assert_eq!(sb["recovery"]["replay_paused"], true, "{sb}");
    assert!(
        sb["recovery"]["replay_lag_bytes"].as_u64().unwrap() > 64 << 10,
        "{sb}"
    );
    let run = status(&primary, "postgres", &["--max-lag", "64kB"]).expect_code(2);
    assert!(
        run.stdout.contains("CRITICAL: standby \"replica1\""),
        "{run:?}"
    );
    standby.psql("SELECT pg_wal_replay_resume()");

    // A role that may not list the archive status directory still gets a report.
    let run = status(&primary, "mon", &[]).expect_code(0);
    assert!(run.stdout.contains("backlog unknown"), "{run:?}");
    let m = status_json(&primary, "mon");
    assert!(m["archiver"]["ready_count"].is_null(), "{m}");
    assert!(m["archiver"]["ready_unknown"].is_string(), "{m}");
    standby.stop();

    // Without a standby, a lag check fails.
    let run = status(&primary, "postgres", &["--max-lag", "1GB"]).expect_code(2);
    assert!(run.stdout.contains("no standby is connected"), "{run:?}");
}
pg_test_matrix!(status_reports_standbys_slots_archiver_and_checks);
