//! Exit codes PostgreSQL acts on: `archive-get` exits 1 only when the repository does not have
//! the file, and above 125 for every other failure (a malformed command line, a broken config
//! file, a runtime that cannot start), so that recovery stops instead of ending early;
//! `archive-push` failures stay within 1–125, so that the archiver retries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::Command;

use common::*;
use pitr_testkit::scratch_dir;

const SEGMENT: &str = "000000010000000000000001";

/// Runs pitr under `ulimit -n 4`: too few file descriptors for the async runtime's poller.
fn pitr_without_descriptors(args: &[&str]) -> Run {
    let mut script = format!("ulimit -n 4; exec '{}'", pitr_bin().display());
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .output()
        .unwrap();
    let r = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(r.stderr.contains("async runtime"), "{r:?}");
    r
}

#[test]
fn archive_get_usage_errors_are_fatal_and_archive_push_ones_are_not() {
    let scratch = scratch_dir();
    let dest = scratch.path().join("dest");
    // missing arguments, an unknown option, an unknown option before the command
    for args in [
        vec!["archive-get"],
        vec!["archive-get", SEGMENT],
        vec!["archive-get", "--no-such-option", SEGMENT, s(&dest)],
        vec!["--no-such-option", "archive-get", SEGMENT, s(&dest)],
        vec!["archive-get", SEGMENT, s(&dest), "extra"],
    ] {
        let r = pitr(&args).expect_code(255);
        assert!(r.stderr.contains("error"), "{args:?}: {r:?}");
    }
    // help is not a failure
    pitr(&["archive-get", "--help"]).expect_code(0);
    // archive-push: a usage error is a plain (retryable) failure
    pitr(&["archive-push"]).expect_code(2);
    pitr(&["archive-push", "--no-such-option", "x"]).expect_code(2);
    // other commands keep exit 2
    pitr(&["info", "--no-such-option"]).expect_code(2);
}

#[test]
fn archive_get_with_a_broken_config_file_is_fatal() {
    let scratch = scratch_dir();
    let dest = scratch.path().join("dest");
    let bad = scratch.path().join("pitr.toml");
    fs::write(&bad, "repo = [\n").unwrap();
    let unknown = scratch.path().join("unknown.toml");
    fs::write(&unknown, "repository = \"/srv/repo\"\n").unwrap();
    let missing = scratch.path().join("missing.toml");
    for cfg in [&bad, &unknown, &missing] {
        let r = pitr(&["--config", s(cfg), "archive-get", SEGMENT, s(&dest)]).expect_code(255);
        assert!(r.stderr.contains(s(cfg)), "{r:?}");
        let r = pitr(&["--config", s(cfg), "archive-push", s(&dest)]);
        assert!((1..=125).contains(&r.code), "archive-push: {r:?}");
        assert!(r.stderr.contains(s(cfg)), "{r:?}");
    }
    assert!(!dest.exists());
}

#[test]
fn archive_get_without_a_runtime_is_fatal_and_archive_push_retries() {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr(&["init", "--repo", s(&repo)]).expect_code(0);
    let dest = scratch.path().join("dest");
    let get = pitr_without_descriptors(&["--repo", s(&repo), "archive-get", SEGMENT, s(&dest)]);
    assert_eq!(get.code, 255, "{get:?}");
    assert!(get.stderr.contains("ulimit"), "{get:?}");
    let wal = scratch.path().join(SEGMENT);
    fs::write(&wal, vec![0u8; 1 << 20]).unwrap();
    let push = pitr_without_descriptors(&["--repo", s(&repo), "archive-push", s(&wal)]);
    assert!((1..=125).contains(&push.code), "{push:?}");
    assert!(!dest.exists());
}

#[test]
fn archive_get_exits_1_only_for_absence() {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr(&["init", "--repo", s(&repo)]).expect_code(0);
    let dest = scratch.path().join("dest");
    pitr(&["--repo", s(&repo), "archive-get", SEGMENT, s(&dest)]).expect_code(1);
    pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        "00000002.history",
        s(&dest),
    ])
    .expect_code(1);
    // no repository given, a repository that does not exist: fatal
    pitr(&["archive-get", SEGMENT, s(&dest)]).expect_code(255);
    let gone = scratch.path().join("gone");
    pitr(&["--repo", s(&gone), "archive-get", SEGMENT, s(&dest)]).expect_code(255);
    // the same failures in archive-push are retryable
    let r = pitr(&["archive-push", s(&dest)]);
    assert!((1..=125).contains(&r.code), "{r:?}");
}
