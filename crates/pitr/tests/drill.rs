//! `pitr drill` and `pitr history` against real PostgreSQL 14–18: a drill restores the latest
//! backup to the end of archived WAL in a scratch directory, checks it, stops it, removes it and
//! records the measured recovery time; a failing check fails the drill (exit 3) with nothing left
//! running; the drill never archives into the production repository; `pitr restore` records
//! itself too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use pitr_testkit::{pg_test_matrix, ClusterOptions, PgInstall};

fn drills_restore_check_clean_up_and_are_recorded(install: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(install, "", ClusterOptions::default());
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 1234) AS i");
    pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    c.psql("INSERT INTO t SELECT generate_series(1235, 2000)");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));

    // A passing drill: every row after the backup is there; the scratch directory is gone.
    let drills = scratch.path().join("drills");
    std::fs::create_dir(&drills).unwrap();
    pitr_testkit::chown_to_postgres(&drills);
    // `pitr drill` into `drills` with the checks given, as the postgres OS user.
    let drill = |extra: &[&str], code: i32| {
        let mut args = vec![
            "--repo",
            s(&repo),
            "drill",
            "--scratch",
            s(&drills),
            "--pg-bin",
            s(&install.bindir),
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&pitr_as_postgres(&args).expect_code(code))
    };
    let r = drill(
        &["--check-sql", "SELECT count(*) = 2000 AS all_rows FROM t"],
        0,
    );
    assert_eq!(r["outcome"], "passed", "{r}");
    assert_eq!(r["checks"][0]["passed"], true, "{r}");
    assert_eq!(r["checks"][0]["result"], "{\"all_rows\":true}", "{r}");
    let rec = &r["record"];
    assert_eq!(rec["kind"], "drill");
    assert!(rec["total_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(rec["replay_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(rec["wal_replayed_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(rec["timeline"], 2, "promoted at the end of WAL: {r}");
    assert!(r["history_key"].is_string(), "{r}");
    assert_eq!(
        std::fs::read_dir(&drills).unwrap().count(),
        0,
        "scratch directory left behind"
    );

    // `pitr metrics` tells the last drill's result, time and measured RTO.
    let metric = |name: &str| -> f64 {
        let text = pitr_as_postgres(&["--repo", s(&repo), "metrics"])
            .expect_code(0)
            .stdout;
        let prefix = format!("pitr_{name}{{cluster=\"main\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("drill_last_success"), 1.0);
    let rto = metric("drill_last_rto_seconds");
    assert!(
        (rto - rec["total_seconds"].as_f64().unwrap()).abs() < 0.001,
        "{rto} {r}"
    );
    assert!(metric("drill_last_time_seconds") > 1.7e9);

    // A failing check: exit 3, the server stopped, the kept directory says where to look.
    let r = drill(
        &[
            "--check-sql",
            "SELECT count(*) = 1 AS expected_one_row FROM t",
            "--keep",
        ],
        3,
    );
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["failure"].as_str().unwrap().contains("expected_one_row"),
        "{r}"
    );
    let kept = std::path::PathBuf::from(r["kept"].as_str().unwrap());
    assert!(kept.join("pgdata/PG_VERSION").is_file(), "{r}");
    assert!(
        !kept.join("pgdata/postmaster.pid").exists(),
        "the failed drill's server still runs"
    );

    assert_eq!(
        metric("drill_last_success"),
        0.0,
        "the failed drill is the last"
    );

    // Neither drill archived its new timeline into the production repository.
    assert!(
        !repo.join("main/wal/00000002").exists(),
        "a drill archived into production"
    );
    assert!(c.try_psql("SELECT 1").is_ok(), "production still runs");

    // A real restore records itself; history lists all three, oldest first.
    let target = scratch.path().join("restored");
    pitr_as_postgres(&["--repo", s(&repo), "restore", "--pgdata", s(&target)]).expect_code(0);
    let h = json(&pitr_as_postgres(&["--repo", s(&repo), "history", "--json"]).expect_code(0));
    let kinds: Vec<(String, String)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(k, o)| (k.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("drill", "passed"),
            ("drill", "failed"),
            ("restore", "restored")
        ],
        "{h}"
    );
    let text = pitr_as_postgres(&["--repo", s(&repo), "history"]).expect_code(0);
    assert!(
        text.stdout.contains("drill") && text.stdout.contains("restore"),
        "{text:?}"
    );
}

pg_test_matrix!(drills_restore_check_clean_up_and_are_recorded);
