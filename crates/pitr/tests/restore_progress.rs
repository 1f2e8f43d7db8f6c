//! `pitr restore`'s progress where stderr is not a terminal (a log file, a pipe, journald):
//! plain `tracing` lines, without terminal codes, that add up to what the restore reports.
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
    pitr_on(&c, &repo, "backup", &[]).expect_code(0);
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
