//! `pitr standby create|promote|rejoin` against real servers, PostgreSQL 14–18: standbys made
//! from the primary and from the repository stream new rows within seconds; promote reports
//! the new timeline and takes writes (and refuses a primary or a stopped server); the old
//! primary rejoins by a --delta restore (no data checksums) or by pg_rewind (checksums), and
//! then receives the new primary's rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{pg_test_matrix, Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

/// `pitr --repo REPO standby SUB -h/-p/-U of `server` ARGS… --pg-bin BIN` as postgres.
fn standby(server: &Cluster, repo: &std::path::Path, sub: &str, args: &[&str]) -> Run {
    let bindir = server.install().bindir.display().to_string();
    let mut all = vec![sub];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--pg-bin", &bindir]);
    pitr_on(server, repo, "standby", &all)
}

/// `--set unix_socket_directories=…` so that the node listens on its own socket directory.
fn own_socket(c: &Cluster) -> String {
    format!("unix_socket_directories={}", c.socket_dir().display())
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    wait_or(what, secs, &mut f, String::new)
}

fn wait_or(what: &str, secs: u64, f: &mut impl FnMut() -> bool, diag: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(c: &Cluster) -> String {
    c.try_psql("SELECT count(*) FROM t").unwrap_or_else(|e| e)
}

/// The end of the log a node started by pitr writes (for failure messages).
fn start_log(c: &Cluster) -> String {
    let text = std::fs::read_to_string(c.datadir().join("log/pitr-start.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Starts a standby of `primary` in a fresh directory (from the primary, or the repository
/// with `--from-repo`), checks the report and returns it.
fn create_started(primary: &Cluster, repo: &std::path::Path, extra: &[&str]) -> (Cluster, Value) {
    let node = Cluster::empty(primary.install(), ClusterOptions::default());
    let sock = own_socket(&node);
    let mut args = vec![
        "--pgdata",
        s(node.datadir()),
        "--start",
        "--set",
        &sock,
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = json(&standby(primary, repo, "create", &args).expect_code(0));
    assert!(r["started"]["streaming_at"].is_string(), "{r}");
    assert!(node.datadir().join("standby.signal").exists());
    (node, r)
}

/// The whole cycle without data checksums: create from the primary (with a slot) and from the
/// repository, refusals, promote, rejoin of the old primary by a --delta restore.
fn create_promote_and_rejoin_by_restore(install: &PgInstall) {
    let opts = ClusterOptions {
        no_data_checksums: true,
        ..Default::default()
    };
    let (scratch, repo, primary) = archiving_cluster(install, "", opts);
    primary.psql("CREATE TABLE t (id int)");
    primary.psql("INSERT INTO t VALUES (1)");
    pitr_on(&primary, &repo, "backup", &[]).expect_code(0);

    let (s1, r) = create_started(&primary, &repo, &["--slot", "s1"]);
    assert_eq!(r["source"], "primary", "{r}");
    assert_eq!(r["slot_created"], true, "{r}");
    assert!(r["settings"]["restore_command"]
        .as_str()
        .unwrap()
        .contains("archive-get"));
    let active = primary.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 's1'");
    assert_eq!(active, "t");
    primary.psql("INSERT INTO t VALUES (2)");
    wait_for("row 2 on the standby made from the primary", 15, || {
        count(&s1) == "2"
    });

    let (s2, r) = create_started(&primary, &repo, &["--from-repo"]);
    assert_eq!(r["source"], "repository", "{r}");
    assert!(r["restored_backup"].is_string(), "{r}");
    primary.psql("INSERT INTO t VALUES (3)");
    wait_for("row 3 on the standby made from the repository", 15, || {
        count(&s2) == "3"
    });

    // Refusals: a non-empty directory, promoting a primary or a stopped server, rejoining a
    // running one.
    let e = standby(&primary, &repo, "create", &["--pgdata", s(s1.datadir())]).expect_code(4);
    assert!(e.stderr.contains("is running"), "{}", e.stderr);
    let e = standby(
        &primary,
        &repo,
        "promote",
        &["--pgdata", s(primary.datadir())],
    )
    .expect_code(4);
    assert!(e.stderr.contains("not a standby"), "{}", e.stderr);
    s2.stop();
    let e = standby(&primary, &repo, "promote", &["--pgdata", s(s2.datadir())]).expect_code(4);
    assert!(
        e.stderr.contains("no PostgreSQL server is running"),
        "{}",
        e.stderr
    );
    let e = standby(&primary, &repo, "create", &["--pgdata", s(s2.datadir())]).expect_code(4);
    assert!(e.stderr.contains("not empty"), "{}", e.stderr);
    if pitr_testkit::postgres_uid_gid().is_some() {
        // Run as postgres into a directory root owns: refused, naming both users.
        let root_owned = scratch.path().join("root-owned");
        std::fs::create_dir(&root_owned).unwrap();
        let e = standby(&primary, &repo, "create", &["--pgdata", s(&root_owned)]).expect_code(4);
        assert!(e.stderr.contains("belongs to OS user root"), "{}", e.stderr);
    }
    let e = standby(&s1, &repo, "rejoin", &["--pgdata", s(primary.datadir())]).expect_code(4);
    assert!(e.stderr.contains("is running"), "{}", e.stderr);

    let p = json(
        &standby(
            &s1,
            &repo,
            "promote",
            &["--pgdata", s(s1.datadir()), "--json"],
        )
        .expect_code(0),
    );
    assert_eq!(p["timeline"], 2, "{p}");
    assert_eq!(p["previous_timeline"], 1, "{p}");
    s1.psql("INSERT INTO t VALUES (4)");

    primary.stop();
    let sock = own_socket(&primary);
    let args = [
        "--pgdata",
        s(primary.datadir()),
        "--slot",
        "old_primary",
        "--start",
        "--set",
        &sock,
        "--json",
    ];
    let j = json(&standby(&s1, &repo, "rejoin", &args).expect_code(0));
    assert_eq!(j["plan"]["method"], "restore", "{j}");
    assert_eq!(j["timeline"], 2, "{j}");
    assert!(j["restored_backup"].is_string(), "{j}");
    s1.psql("INSERT INTO t VALUES (5)");
    wait_or(
        "row 5 from the new primary on the rejoined node",
        15,
        &mut || count(&primary) == "5",
        || format!("count: {}\nlog:\n{}", count(&primary), start_log(&primary)),
    );
    assert_eq!(primary.psql("SELECT pg_is_in_recovery()"), "t");
}

/// With data checksums the old primary is rewound: a row it wrote after the failover
/// (diverging) is gone, and the new primary's rows reach it.
fn rejoin_by_rewind_with_checksums(install: &PgInstall) {
    let opts = ClusterOptions {
        data_checksums: true,
        ..Default::default()
    };
    let (_scratch, repo, primary) = archiving_cluster(install, "", opts);
    primary.psql("CREATE TABLE t (id int)");
    primary.psql("INSERT INTO t VALUES (1)");
    let (s1, _) = create_started(&primary, &repo, &[]);
    wait_for("row 1 on the standby", 15, || count(&s1) == "1");
    let p = json(
        &standby(
            &s1,
            &repo,
            "promote",
            &["--pgdata", s(s1.datadir()), "--json"],
        )
        .expect_code(0),
    );
    assert_eq!(p["timeline"], 2, "{p}");
    // The old primary goes on alone for a moment: its history diverges.
    primary.psql("INSERT INTO t VALUES (100)");
    primary.stop();
    s1.psql("INSERT INTO t VALUES (2)");

    let sock = own_socket(&primary);
    let args = [
        "--pgdata",
        s(primary.datadir()),
        "--start",
        "--set",
        &sock,
        "--json",
    ];
    let j = json(&standby(&s1, &repo, "rejoin", &args).expect_code(0));
    assert_eq!(j["plan"]["method"], "rewind", "{j}");
    s1.psql("INSERT INTO t VALUES (3)");
    wait_or(
        "row 3 from the new primary on the rewound node",
        15,
        &mut || count(&primary) == "3",
        || format!("count: {}\nlog:\n{}", count(&primary), start_log(&primary)),
    );
    assert_eq!(primary.psql("SELECT count(*) FROM t WHERE id = 100"), "0");
}

pg_test_matrix!(
    create_promote_and_rejoin_by_restore,
    rejoin_by_rewind_with_checksums
);
