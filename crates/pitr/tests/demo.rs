//! `pitr demo`, the README's first command, on real PostgreSQL 14–18: it must succeed, show the
//! exact rows each recovery brings back, and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use pitr_testkit::{pg_test_matrix, PgInstall};

fn check_demo_output(run: &Run) {
    let out = &run.stdout;
    for expected in [
        "rows back: 1,2,3,4,5,6\n",
        "rows back: 1,2,3,4,5,6,7\n",
        "rows back: 1,2,3,4,5,6,7,8,9\n",
        "recovery paused at the target",
        "stopped:     at restore point \"punto_laboratorio\"",
        "demo complete",
    ] {
        assert!(
            out.contains(expected),
            "demo output lacks {expected:?}:\n{out}"
        );
    }
    let work = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("work dir:"))
        .expect("the demo names its work directory")
        .trim();
    assert!(
        !Path::new(work).exists(),
        "the demo left its work directory {work} behind"
    );
}

fn demo_with_pg_bin(pg: &PgInstall) {
    let major = pg.major;
    let bindir = pg.bindir.display().to_string();
    let run = pitr(&["demo", "--pg-bin", &bindir]).expect_code(0);
    assert!(
        run.stdout.contains(&format!("PostgreSQL) {major}.")),
        "the demo did not use PostgreSQL {major}:\n{}",
        run.stdout
    );
    check_demo_output(&run);
}
pg_test_matrix!(demo_with_pg_bin);

/// The README's command exactly: no flags, binaries found on their own.
#[test]
fn demo_finds_postgresql_by_itself() {
    let run = pitr(&["demo"]).expect_code(0);
    check_demo_output(&run);
}

#[test]
fn demo_with_a_wrong_pg_bin_says_what_to_pass() {
    let run = pitr(&["demo", "--pg-bin", "/nonexistent/bin"]).expect_code(3);
    assert!(
        run.stderr.contains("/nonexistent/bin") && run.stderr.contains("--pg-bin"),
        "{}",
        run.stderr
    );
}

/// Not root: the demo runs PostgreSQL as the invoking user (here `postgres`, as a DBA would).
#[test]
fn demo_as_a_normal_user() {
    let run = pitr_as_postgres(&["demo"]).expect_code(0);
    check_demo_output(&run);
}
