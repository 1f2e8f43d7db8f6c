//! What pitr writes where, against a real PostgreSQL: `--json` into a closed pipe ends the output
//! without a panic (and with the command's own exit code), and log lines that land in
//! PostgreSQL's server log (archive_command's stderr) carry no ANSI colour codes; a relative
//! `--repo` works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pitr_testkit::{as_postgres, ClusterOptions};

/// Runs pitr with its stdout a pipe whose reader is already closed.
fn pitr_into_closed_pipe(args: &[&str]) -> Run {
    let mut c = Command::new(pitr_bin());
    c.args(args)
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_postgres(&mut c);
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn closed_pipes_and_server_logs_get_clean_output() {
    let install = oldest_pg();
    // -v: archive-push logs every segment into the server log
    let (_scratch, repo, c) = archiving_cluster(
        &install,
        "-v",
        ClusterOptions {
            wal_segsize_mb: Some(1),
            ..Default::default()
        },
    );
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    c.psql("DROP TABLE t");
    let seg = c.switch_wal();
    assert!(c.wait_archived(&seg, Duration::from_secs(60)));
    let r = s(&repo);

    for args in [
        vec!["--repo", r, "--json", "info"],
        vec!["--repo", r, "info"],
        vec!["--repo", r, "--json", "verify"],
        vec!["--repo", r, "verify"],
        vec![
            "--repo",
            r,
            "--json",
            "expire",
            "--retain-full",
            "1",
            "--dry-run",
        ],
        vec!["--repo", r, "expire", "--retain-full", "1", "--dry-run"],
        vec!["--repo", r, "--json", "wal", "incidents"],
        vec!["--repo", r, "wal", "incidents"],
        vec!["--repo", r, "--json", "wal", "log"],
    ] {
        let open = pitr_as_postgres(&args);
        assert!(!open.stdout.is_empty(), "{args:?}: {open:?}");
        let closed = pitr_into_closed_pipe(&args);
        assert_eq!(closed.code, open.code, "{args:?}: {closed:?}");
        assert!(!closed.stderr.contains("panicked"), "{args:?}: {closed:?}");
    }

    // The server log holds pitr's lines from archive_command, in plain text.
    let log = std::fs::read_to_string(c.log_path()).unwrap();
    assert!(
        log.contains("archived"),
        "no pitr log line in the server log:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "ANSI codes in the server log:\n{log:?}"
    );
}

/// A relative `--repo` (run from its parent directory) is a repository like any other: created,
/// then found again, and shown as its full path.
#[test]
fn a_relative_repository_path_works_from_its_parent() {
    let scratch = pitr_testkit::scratch_dir();
    let run = |args: &[&str]| {
        let o = Command::new(pitr_bin())
            .args(args)
            .current_dir(scratch.path())
            .env_remove("PITR_REPO")
            .env_remove("PITR_CONFIG")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--repo", "relrepo", "init"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(scratch.path().join("relrepo/pitr.repository").is_file());
    let (code, out, err) = run(&["--repo", "relrepo", "--json", "info"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let full = scratch.path().join("relrepo");
    assert!(out.contains(full.to_str().unwrap()), "{out}");
}
