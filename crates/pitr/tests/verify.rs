//! `pitr verify` against a real PostgreSQL: it sees every kind of damage, in the objects and in
//! the recovery window: a flipped byte in a segment and in a backup file, a truncated object, a
//! segment missing in the middle of the window (with the targets it makes unreachable), a
//! missing history file, a broken incremental chain. Each exits 5 and names the object; the
//! repository repaired, it passes again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::ClusterOptions;
use serde_json::Value;

fn verify_json(repo: &Path, code: i32) -> Value {
    json(&pitr(&["--repo", s(repo), "--json", "verify"]).expect_code(code))
}

/// The problems verify reports, as "object: problem" lines.
fn problems(repo: &Path) -> Vec<String> {
    let v = verify_json(repo, 5);
    let list: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["object"].as_str().unwrap(),
                p["problem"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!list.is_empty());
    // The text output says the same, and never "everything verified".
    let text = pitr(&["--repo", s(repo), "verify"]).expect_code(5);
    assert!(!text.stdout.contains("everything verified"), "{text:?}");
    list
}

/// Moves `p` away while `f` runs, then puts it back.
fn without(p: &Path, f: impl FnOnce()) {
    let aside = PathBuf::from(format!("{}.aside", p.display()));
    fs::rename(p, &aside).unwrap();
    f();
    fs::rename(&aside, p).unwrap();
}

/// Replaces the content of `p` while `f` runs, then restores it.
fn damaged(p: &Path, damage: impl FnOnce(&mut Vec<u8>), f: impl FnOnce()) {
    let good = fs::read(p).unwrap();
    let mut bad = good.clone();
    damage(&mut bad);
    fs::write(p, &bad).unwrap();
    f();
    fs::write(p, &good).unwrap();
}

fn wait_for(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{p:?} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn verify_sees_every_gap_and_every_damaged_object() {
    let install = oldest_pg();
    let (scratch, repo, c) = archiving_cluster(
        &install,
        "",
        ClusterOptions {
            wal_segsize_mb: Some(1),
            ..Default::default()
        },
    );
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    let full = pitr_on(&c, &repo, "backup", &[])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    // Segments between the two backups: one of them will go missing.
    for _ in 0..4 {
        c.psql("INSERT INTO t SELECT g FROM generate_series(1, 5000) g");
        c.switch_wal();
    }
    let incr = pitr_on(&c, &repo, "backup", &["--type", "incr"])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    c.psql("INSERT INTO t SELECT g FROM generate_series(1, 5000) g");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    // A timeline 2: a restore of the end of WAL, promoted, archiving into the same repository.
    let restored = scratch.path().join("restored");
    pitr(&[
        "--repo",
        s(&repo),
        "restore",
        "--pgdata",
        s(&restored),
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .expect_code(0);
    let wal1 = repo.join("main/wal/00000001");
    let wal2 = repo.join("main/wal/00000002");
    let history = wal2.join("00000002.history");
    wait_for(&history);
    psql_port(
        &install,
        c.socket_dir(),
        c.port(),
        "CREATE TABLE on_two AS SELECT 1",
    );
    let seg2 = psql_port(
        &install,
        c.socket_dir(),
        c.port(),
        "SELECT pg_walfile_name(pg_switch_wal())",
    );
    wait_for(&wal2.join(&seg2));
    let mut stop = std::process::Command::new(install.bin("pg_ctl"));
    stop.arg("-D")
        .arg(&restored)
        .args(["-m", "fast", "-w", "stop"]);
    pitr_testkit::as_postgres(&mut stop);
    assert!(stop.output().unwrap().status.success());

    let ok = verify_json(&repo, 0);
    assert!(ok["problems"].as_array().unwrap().is_empty(), "{ok:#}");

    // A segment in the middle of the window, between the two backups.
    let mut segs: Vec<String> = fs::read_dir(&wal1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    let full_m = json(&pitr(&["--repo", s(&repo), "--json", "info"]).expect_code(0));
    let backups = full_m["clusters"][0]["backups"].as_array().unwrap().clone();
    let stop_of_full = backups[0]["stop_lsn"].as_str().unwrap().to_string();
    let start_of_incr = backups[1]["start_lsn"].as_str().unwrap().to_string();
    let seg_of = |lsn: &str| -> u64 {
        let (hi, lo) = lsn.split_once('/').unwrap();
        ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) >> 20
    };
    let middle = (seg_of(&stop_of_full) + seg_of(&start_of_incr)) / 2;
    assert!(middle > seg_of(&stop_of_full) && middle < seg_of(&start_of_incr));
    let name = format!("00000001{:08X}{:08X}", middle >> 12, middle & 0xFFF);
    assert!(segs.contains(&name), "{name} not in {segs:?}");
    without(&wal1.join(&name), || {
        let p = problems(&repo);
        assert_eq!(p.len(), 1, "{p:#?}");
        eprintln!("verify reports: {}", p[0]);
        assert!(
            p[0].starts_with("WAL timeline 1: no WAL between")
                && p[0].contains(&name)
                && p[0].contains(&full)
                && p[0].contains(&format!("backup {incr}")),
            "{p:#?}"
        );
        // info shows the same hole
        let info = json(&pitr(&["--repo", s(&repo), "--json", "info"]).expect_code(0));
        assert_eq!(
            info["clusters"][0]["timelines"][0]["gaps"][0][0],
            name.as_str(),
            "{info:#}"
        );
    });

    // The history file of timeline 2.
    without(&history, || {
        let p = problems(&repo);
        assert!(
            p.iter()
                .any(|l| l.starts_with("WAL timeline 2: 00000002.history is not archived")),
            "{p:#?}"
        );
    });

    // The incremental's parent.
    let full_manifest = repo.join(format!("main/backup/{full}/backup.json"));
    without(&full_manifest, || {
        let p = problems(&repo);
        assert!(
            p.iter()
                .any(|l| l.starts_with(&format!("backup {incr}:")) && l.contains(&full)),
            "{p:#?}"
        );
    });

    // A flipped byte in a segment, in a backup file; a truncated object.
    let seg_obj = wal2.join(&seg2);
    damaged(
        &seg_obj,
        |b| {
            let m = b.len() / 2;
            b[m] ^= 1
        },
        || {
            let p = problems(&repo);
            assert!(p.iter().any(|l| l.contains(&seg2)), "{p:#?}");
        },
    );
    // PG_VERSION is a few bytes: bundled, a frame inside a bundle object. A flipped byte in
    // it is reported with the file's name.
    let (bundle, at) = bundled_at(&repo, &full, "PG_VERSION").expect("PG_VERSION is bundled");
    damaged(
        &bundle,
        |b| {
            let m = at.end - 3;
            b[m] ^= 1
        },
        || {
            let p = problems(&repo);
            assert!(p.iter().any(|l| l.contains("PG_VERSION")), "{p:#?}");
        },
    );
    damaged(
        &seg_obj,
        |b| b.truncate(b.len() / 3),
        || {
            let p = problems(&repo);
            assert!(p.iter().any(|l| l.contains(&seg2)), "{p:#?}");
        },
    );

    // Repaired: verified again.
    verify_json(&repo, 0);
}
