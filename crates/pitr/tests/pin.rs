//! `pitr pin` / `pitr unpin`, `pitr backup --keep` and `pitr backup --expire` against real
//! PostgreSQL 14–18: a pinned backup, its parents and the WAL from its start survive expire (the
//! repository still verifies and the pinned backup restores); unpinned, the next expire removes
//! it; `backup --expire` applies the retention policy right after a successful backup, and a
//! policy expire would refuse is refused before the backup is taken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pitr_testkit::{pg_test_matrix, ClusterOptions, PgInstall};
use serde_json::{json as j, Value};

fn labels(info: &Value) -> Vec<String> {
    info["clusters"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect()
}

/// The name of the 1 MB timeline-1 segment holding `lsn` (`X/X`).
fn segment_of(lsn: &Value) -> String {
    let (hi, lo) = lsn.as_str().unwrap().split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let segno = lsn >> 20;
    format!("00000001{:08X}{:08X}", segno / 4096, segno % 4096)
}

fn pinned_backups_survive_expire_until_unpinned(install: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(
        install,
        "",
        ClusterOptions {
            wal_segsize_mb: Some(1),
            ..Default::default()
        },
    );
    let r = s(&repo);
    let info = || json(&pitr(&["--repo", r, "--json", "info"]).expect_code(0));
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i");
    // A: pinned as it is taken.
    let a = json(&pitr_on(&c, &repo, "backup", &["--keep", "--json"]).expect_code(0));
    let pinned = a["label"].as_str().unwrap().to_string();
    assert_eq!(a["pin"]["pinned"], true, "{a}");
    assert_eq!(a["pin"]["pin"]["how"], "backup --keep", "{a}");
    c.psql("INSERT INTO t SELECT generate_series(1001, 2000)");
    c.switch_wal();
    let middle = pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    let middle = middle.stdout.trim().to_string();
    c.psql("INSERT INTO t SELECT generate_series(2001, 3000)");
    c.switch_wal();

    // A policy expire refuses is refused before a backup is taken.
    let refused = pitr_on(&c, &repo, "backup", &["--expire", "--retain-full", "0"]).expect_code(2);
    assert!(refused.stderr.contains("at least 1"), "{}", refused.stderr);
    assert_eq!(labels(&info()), [pinned.clone(), middle.clone()]);

    // backup --expire --retain-full 1: the new backup is taken, then the policy applied; the
    // middle backup goes, the pinned one stays with all the WAL from its start.
    let run = pitr_on(
        &c,
        &repo,
        "backup",
        &["--expire", "--retain-full", "1", "--json"],
    )
    .expect_code(0);
    let out = json(&run);
    let newest = out["label"].as_str().unwrap().to_string();
    assert_eq!(
        out["expire"]["expired"][0]["label"],
        middle.as_str(),
        "{out}"
    );
    assert_eq!(out["expire"]["expired"].as_array().unwrap().len(), 1);
    assert_eq!(out["expire"]["pinned"], j!([pinned.as_str()]), "{out}");
    // WAL is kept from the segment holding the pinned backup's start.
    assert_eq!(
        out["expire"]["wal_kept_from"],
        segment_of(&a["start_lsn"]),
        "{out}"
    );
    let after = info();
    assert_eq!(labels(&after), [pinned.clone(), newest.clone()]);
    assert_eq!(after["clusters"][0]["backups"][0]["pinned"], true);
    assert_eq!(after["clusters"][0]["backups"][1]["pinned"], false);
    assert_eq!(
        after["clusters"][0]["timelines"][0]["first"],
        segment_of(&a["start_lsn"])
    );
    let text = pitr(&["--repo", r, "info"]).expect_code(0).stdout;
    let line = text.lines().find(|l| l.contains(&pinned)).unwrap();
    assert!(line.ends_with("pinned"), "{text}");
    // Text: expire says it kept the pinned backup, and why.
    let said = pitr(&["--repo", r, "expire", "--retain-full", "1"]).expect_code(0);
    assert!(
        said.stdout
            .contains(&format!("kept backup {pinned}: pinned")),
        "{}",
        said.stdout
    );
    pitr(&["--repo", r, "verify"]).expect_code(0);

    // Pinning is idempotent; an unknown label is refused with the labels there are.
    let again = pitr(&["--repo", r, "pin", &pinned]).expect_code(0);
    assert!(again.stdout.contains("already pinned"), "{}", again.stdout);
    let unknown = pitr(&["--repo", r, "pin", "20000101T000000Z"]).expect_code(2);
    assert!(
        unknown.stderr.contains("no backup \"20000101T000000Z\"")
            && unknown.stderr.contains(&newest),
        "{}",
        unknown.stderr
    );

    // The pinned backup restores to its consistency point through the WAL that stayed.
    let dest = scratch.path().join("restored");
    let restored = json(
        &pitr_as_postgres(&[
            "--repo",
            r,
            "--json",
            "restore",
            "--pgdata",
            s(&dest),
            "--backup",
            &pinned,
            "--target-immediate",
        ])
        .expect_code(0),
    );
    assert_eq!(
        restored["restore"]["plan"]["backup"]["label"],
        pinned.as_str(),
        "{restored}"
    );

    // Unpinned, the next expire removes it and the WAL only it needed.
    let un = pitr(&["--repo", r, "unpin", &pinned]).expect_code(0);
    assert!(un.stdout.contains("unpinned backup"), "{}", un.stdout);
    let done = json(&pitr(&["--repo", r, "--json", "expire", "--retain-full", "1"]).expect_code(0));
    assert_eq!(done["expired"][0]["label"], pinned.as_str(), "{done}");
    assert_eq!(done["pinned"], j!([]), "{done}");
    assert!(done["wal_files"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(labels(&info()), [newest]);
    pitr(&["--repo", r, "verify"]).expect_code(0);
    let gone = pitr(&["--repo", r, "unpin", &pinned]).expect_code(2);
    assert!(gone.stderr.contains("no backup"), "{}", gone.stderr);
}
pg_test_matrix!(pinned_backups_survive_expire_until_unpinned);
