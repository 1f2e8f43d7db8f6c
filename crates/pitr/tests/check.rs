//! `pitr check` against real PostgreSQL 14–18: a working setup passes with a real round trip
//! through `archive_command`; each broken setup fails on the right line with a hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pitr_testkit::{pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

struct Setup {
    _scratch: tempfile::TempDir,
    repo: PathBuf,
    c: Cluster,
}

/// A running cluster and an initialised repository; `archive_command` gets the repository's
/// path.
fn setup(install: &PgInstall, archive_command: impl FnOnce(&Path) -> Option<String>) -> Setup {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            archive_command: archive_command(&repo),
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

/// `pitr check` of the test cluster into `repo`, as the postgres OS user.
fn check(st: &Setup, repo: &Path, extra: &[&str]) -> Run {
    pitr_on(&st.c, repo, "check", extra)
}

/// The check named `name` in a JSON report, asserting its status and that its detail holds
/// `detail`.
fn expect_item<'a>(report: &'a Value, name: &str, status: &str, detail: &str) -> &'a Value {
    let it = item(report, name);
    assert_eq!(it["status"], status, "{name}: {report}");
    assert!(
        it["detail"].as_str().unwrap().contains(detail),
        "{name}: {report}"
    );
    it
}

/// The check named `name` in a JSON report.
fn item<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

/// Archiving through pitr into the repository: every check passes and the switched segment is
/// found in the repository; `--no-switch` reads only.
fn a_working_setup_passes_with_a_real_round_trip(install: &PgInstall) {
    let major = install.major;
    let st = setup(install, |repo| Some(archive_command(repo, "")));
    let repo = st.repo.clone();

    let report = json(&check(&st, &repo, &["--json"]).expect_code(0));
    assert_eq!(report["ok"], true, "{report}");
    for name in [
        "server",
        "wal_level",
        "archive_mode",
        "archive_command",
        "repository",
        "archiver",
        "repository access",
        "archive round trip",
    ] {
        assert_eq!(item(&report, name)["status"], "ok", "{name}: {report}");
    }
    let seg = report["archived_segment"].as_str().unwrap().to_string();
    assert!(
        repo.join("main/wal").join(&seg[..8]).join(&seg).is_file(),
        "{seg} is not in the repository"
    );
    assert!(item(&report, "server")["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("PostgreSQL {major}")));

    // Read-only: no switch, so no new segment.
    let report = json(&check(&st, &repo, &["--json", "--no-switch"]).expect_code(0));
    assert_eq!(item(&report, "archive round trip")["status"], "skipped");
    assert!(report["archived_segment"].is_null());
    // …and says so, rather than "works".
    let run = check(&st, &repo, &["--no-switch"]).expect_code(0);
    assert!(
        run.stdout.contains("was not proven: no WAL was switched")
            && !run.stdout.contains("archiving into this repository works"),
        "{}",
        run.stdout
    );

    // The text report, for people.
    let run = check(&st, &repo, &[]).expect_code(0);
    assert!(
        run.stdout.contains("archive round trip")
            && run.stdout.contains("archiving into this repository works"),
        "{}",
        run.stdout
    );
}
pg_test_matrix!(a_working_setup_passes_with_a_real_round_trip);

/// Broken setups, each failing (exit 3) on its own line with a hint, and never a silent pass.
#[test]
fn broken_setups_fail_on_the_right_line() {
    let install = newest_pg();

    // Archiving off.
    let st = setup(&install, |_| None);
    let run = check(&st, &st.repo, &["--json"]).expect_code(3);
    let report = json(&run);
    assert_eq!(report["ok"], false);
    let mode = item(&report, "archive_mode");
    assert_eq!(mode["status"], "failed", "{report}");
    assert!(mode["hint"].as_str().unwrap().contains("archive_mode = on"));
    assert_eq!(item(&report, "archive round trip")["status"], "skipped");
    drop(st);

    // An archive_command that discards the WAL: a warning about the command, and the round
    // trip times out.
    let st = setup(&install, |_| Some("true".into()));
    let report = json(&check(&st, &st.repo, &["--json", "--archive-timeout", "3"]).expect_code(3));
    expect_item(
        &report,
        "archive_command",
        "warning",
        "does not call pitr archive-push",
    );
    let rt = expect_item(
        &report,
        "archive round trip",
        "failed",
        "did not reach the repository within 3s",
    );
    assert!(rt["hint"].as_str().unwrap().contains("archive-push %p"));
    assert!(
        rt["detail"]
            .as_str()
            .unwrap()
            .contains("reports no failure"),
        "{report}"
    );
    assert!(
        rt["hint"].as_str().unwrap().contains("server log"),
        "{report}"
    );

    // A failing archive_command: after the round trip, pg_stat_archiver shows the failure.
    st.c.append_conf(&[("archive_command", "false")]);
    st.c.psql("SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = json(&check(&st, &st.repo, &["--json", "--archive-timeout", "4"]).expect_code(3));
    let rt = item(&report, "archive round trip");
    assert!(
        rt["detail"]
            .as_str()
            .unwrap()
            .contains("pg_stat_archiver: archive_command failed on 0000"),
        "{report}"
    );
    let report = json(&check(&st, &st.repo, &["--json", "--no-switch"]).expect_code(3));
    expect_item(&report, "archiver", "failed", "archive_command is failing");
    drop(st);

    // A repository the server's OS user cannot write (made by root): --no-switch says so
    // instead of "works".
    if pitr_os::is_root() {
        let scratch = scratch_dir();
        let roots = scratch.path().join("roots");
        pitr(&["init", "--repo", s(&roots)]).expect_code(0);
        let st = setup(&install, |_| Some(archive_command(&roots, "")));
        let run = check(&st, &roots, &["--no-switch"]).expect_code(3);
        assert!(
            run.stdout.contains("repository access")
                && run.stdout.contains("cannot write in")
                && run.stdout.contains("does NOT work"),
            "{}",
            run.stdout
        );
        // The access line is a real write as the server's OS user, so ACLs count both ways:
        // granted by an ACL on root's 0755 directories (the mode bits would say no) ...
        let setfacl = |args: &[&str]| {
            let out = Command::new("setfacl")
                .args(args)
                .arg(&roots)
                .output()
                .expect("setfacl (Debian package acl, installed by scripts/install-test-deps.sh)");
            assert!(out.status.success(), "setfacl {args:?}: {out:?}");
        };
        setfacl(&["-R", "-m", "u:postgres:rwX"]);
        let report = json(&check(&st, &roots, &["--json", "--no-switch"]));
        expect_item(
            &report,
            "repository access",
            "ok",
            "created and removed a file in",
        );
        // ... and refused by one on 0777 directories (the mode bits would say yes).
        setfacl(&["-R", "-b"]);
        let chmod = Command::new("chmod")
            .args(["-R", "0777"])
            .arg(&roots)
            .status()
            .unwrap();
        assert!(chmod.success());
        setfacl(&["-R", "-m", "u:postgres:r-x"]);
        let report = json(&check(&st, &roots, &["--json", "--no-switch"]));
        expect_item(&report, "repository access", "failed", "Permission denied");
        drop(st);
    }

    // pitr archiving into another repository than the one checked.
    let scratch = scratch_dir();
    let elsewhere = scratch.path().join("elsewhere");
    pitr_as_postgres(&["init", "--repo", s(&elsewhere)]).expect_code(0);
    let st = setup(&install, |_| Some(archive_command(&elsewhere, "")));
    let report = json(&check(&st, &st.repo, &["--json", "--archive-timeout", "3"]).expect_code(3));
    expect_item(
        &report,
        "archive_command",
        "warning",
        &format!("archives into {}", elsewhere.display()),
    );
    assert_eq!(item(&report, "archive round trip")["status"], "failed");

    // The repository's cluster belongs to another server: refused before any switch.
    let other = Cluster::init(&install, ClusterOptions::default());
    let seg = other.datadir().join("pg_wal/000000010000000000000001");
    pitr_as_postgres(&["--repo", s(&st.repo), "archive-push", s(&seg)]).expect_code(0);
    let report = json(&check(&st, &st.repo, &["--json"]).expect_code(3));
    expect_item(&report, "repository", "failed", "belongs to another server");
    assert_eq!(item(&report, "archive round trip")["status"], "skipped");

    // No server at all: an error naming where it tried, not a report.
    st.c.stop();
    let run = check(&st, &st.repo, &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(s(st.c.socket_dir())), "{}", run.stderr);
}
