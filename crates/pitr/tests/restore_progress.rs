//! Progress where stderr is not a terminal (a log file, a pipe, journald): plain `tracing`
//! lines, without terminal codes, that add up to what the command reports: `pitr restore`,
//! `pitr backup` (totals, then a line every `PITR_PROGRESS_SECONDS` with the percentage and the
//! ETA) and `pitr verify`.
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
    c.stop();

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
