//! Progress where stderr is not a terminal (a log file, a pipe, journald): plain `tracing`
//! lines, without terminal codes, that add up to what the command reports: `pitr restore`,
//! `pitr backup` (totals, then a line every `PITR_PROGRESS_SECONDS` with the percentage and the
//! ETA), `pitr verify`, and the replay of `restore --start` (logged without `-v`).
//!
//! Progress does not depend on the PostgreSQL version: this runs on one, the newest selected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use indicatif::HumanBytes;
use pitr_testkit::ClusterOptions;

#[test]
fn restore_progress_in_a_log_is_plain_text_that_adds_up() {
    let install = newest_pg();
    let (scratch, repo, c) = archiving_cluster(&install, "", ClusterOptions::default());
    backup_and_verify_log_progress(&c, &repo);
    // WAL after the backup for `--start` to replay: a few segments, then a target inside the last.
    for _ in 0..3 {
        c.psql("INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
        c.psql("SELECT pg_switch_wal()");
    }
    c.psql("INSERT INTO filler VALUES (0, 'target')");
    let target = c.psql("SELECT pg_current_wal_insert_lsn()");
    c.psql("SELECT pg_switch_wal()");
    c.stop();
    replay_progress_is_logged_without_v(&install, &repo, &scratch.path().join("replayed"), &target);

    let dest = scratch.path().join("restored");
    // -v: progress lines are info; stderr is a pipe here, as in a log.
    let run = pitr(&[
        "--repo",
        s(&repo),
        "--json",
        "-v",
        "restore",
        "--pgdata",
        s(&dest),
        "--target-immediate",
    ])
    .expect_code(0);
    assert!(
        !run.stderr.contains('\x1b'),
        "terminal codes in non-terminal output:\n{:?}",
        run.stderr
    );
    let report = &json(&run)["restore"];
    let files = report["plan"]["backup"]["files"].as_u64().unwrap();
    let bytes = report["plan"]["backup"]["bytes"].as_u64().unwrap();
    assert_eq!(
        report["files_restored"].as_u64().unwrap(),
        files,
        "{report}"
    );
    assert_eq!(report["bytes_written"].as_u64().unwrap(), bytes, "{report}");
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" INFO restore: "))
        .collect();
    let first = format!("restore: {files} files, {} to restore", HumanBytes(bytes));
    let last = format!("restore: {files}/{files} files, {} in ", HumanBytes(bytes));
    assert!(
        progress.first().is_some_and(|l| l.ends_with(&first)),
        "no start line {first:?}:\n{}",
        run.stderr
    );
    assert!(
        progress.last().is_some_and(|l| l.contains(&last)),
        "no end line {last:?}:\n{}",
        run.stderr
    );
}

/// `restore --start` to `target` (shut down there) logs the replay's progress without `-v`: lines
/// `replay: k/n segments, …` that end with every segment of the span replayed.
fn replay_progress_is_logged_without_v(
    install: &pitr_testkit::PgInstall,
    repo: &std::path::Path,
    dest: &std::path::Path,
    target: &str,
) {
    let mut cmd = std::process::Command::new(pitr_bin());
    cmd.args([
        "--repo",
        s(repo),
        "--json",
        "restore",
        "--pgdata",
        s(dest),
        "--target-lsn",
        target,
        "--target-action",
        "shutdown",
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .env("PITR_PROGRESS_SECONDS", "0")
    .env_remove("PITR_REPO")
    .env_remove("PITR_CONFIG");
    let o = cmd.output().unwrap();
    let run = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
    .expect_code(0);
    assert_eq!(
        json(&run)["start"]["outcome"],
        "shut-down",
        "{}",
        run.stdout
    );
    // The start's log names each line's process, so that only recovery's own FATAL fails it.
    let server_log = std::fs::read_to_string(dest.join("log/pitr-start.log")).unwrap();
    assert!(
        server_log.contains("<startup> LOG:  redo starts at"),
        "no backend type in the start's log:\n{server_log}"
    );
    let lines = progress_lines(&run, "replay");
    assert!(
        lines.len() >= 2,
        "no replay progress without -v:\n{}",
        run.stderr
    );
    let counts = |l: &str| -> (u64, u64) {
        let rest = &l[l.find("replay: ").unwrap() + "replay: ".len()..];
        let (done, rest) = rest.split_once('/').unwrap();
        let total = rest.split(' ').next().unwrap();
        (done.parse().unwrap(), total.parse().unwrap())
    };
    let (done, total) = counts(lines.last().unwrap());
    assert!(
        total >= 4,
        "the span holds the segments switched after the backup: {lines:?}"
    );
    assert_eq!(done, total, "replay ended short of its span: {lines:?}");
    assert!(
        lines.last().unwrap().contains(" segments, ") && lines.last().unwrap().contains(" in "),
        "{lines:?}"
    );
}

/// `pitr ARGS` as the postgres OS user with progress lines every 50 ms.
fn pitr_progress(args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(pitr_bin());
    cmd.args(args)
        .env("PITR_PROGRESS_SECONDS", "0.05")
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG");
    pitr_testkit::as_postgres(&mut cmd);
    let o = cmd.output().unwrap();
    let run = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains('\x1b'),
        "terminal codes in non-terminal output:\n{:?}",
        run.stderr
    );
    run.expect_code(0)
}

/// The lines of `step`'s progress in `run`'s log.
fn progress_lines<'a>(run: &'a Run, step: &str) -> Vec<&'a str> {
    let tag = format!(" INFO {step}: ");
    run.stderr.lines().filter(|l| l.contains(&tag)).collect()
}

fn backup_and_verify_log_progress(c: &pitr_testkit::Cluster, repo: &std::path::Path) {
    // Enough data that the copy takes several progress intervals.
    c.psql("CREATE TABLE filler AS SELECT g, md5(g::text) AS m FROM generate_series(1, 300000) g");
    let port = c.port().to_string();
    let run = pitr_progress(&[
        "--repo",
        s(repo),
        "-v",
        "--json",
        "backup",
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
        "-j",
        "1",
    ]);
    let report = json(&run);
    let copied = report["files_copied"].as_u64().unwrap();
    let lines = progress_lines(&run, "backup");
    assert!(
        lines.first().is_some_and(
            |l| l.contains(&format!("backup: {copied} files, ")) && l.ends_with(" to back up")
        ),
        "no start line with the totals:\n{}",
        run.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("%)") && l.contains(", ETA ")),
        "no line with the percentage and the ETA:\n{}",
        run.stderr
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains(&format!("backup: {copied}/{copied} files, "))),
        "no end line:\n{}",
        run.stderr
    );

    let run = pitr_progress(&["--repo", s(repo), "-v", "--json", "verify"]);
    let report = json(&run);
    let objects = report["wal_files"].as_u64().unwrap() + report["backup_files"].as_u64().unwrap();
    let lines = progress_lines(&run, "verify");
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains(&format!("verify: {objects} objects, "))),
        "no start line:\n{}",
        run.stderr
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains(&format!("verify: {objects}/{objects} objects, "))),
        "no end line:\n{}",
        run.stderr
    );
}
