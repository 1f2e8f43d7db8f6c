//! The harness against every installed PostgreSQL major: what other crates' integration tests
//! rely on (a server that starts, answers SQL, switches and archives WAL, stops and cleans up).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pitr_testkit::{
    as_postgres, create_postgres_dir, pg_test_matrix, run_ok, scratch_dir, Cluster, ClusterOptions,
    PgInstall,
};

const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

fn is_wal_segment_name(name: &str) -> bool {
    name.len() == 24
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The full cycle every pitr integration test builds on.
fn cluster_runs_sql_archives_wal_and_stops(pg: &PgInstall) {
    let archive = scratch_dir();
    let opts = ClusterOptions {
        archive_command: Some(format!("cp %p {}/%f", archive.path().display())),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::init(pg, opts);
    cluster.start();
    assert!(cluster.is_running());

    let version: u32 = cluster
        .psql("SHOW server_version_num")
        .parse()
        .expect("a number");
    assert_eq!(version / 10000, pg.major, "server runs the requested major");

    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    cluster.psql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g");
    assert_eq!(
        cluster.psql("SELECT count(*), max(v) FROM t WHERE id > 0"),
        "100|row 99"
    );

    let wal = cluster.switch_wal();
    assert!(is_wal_segment_name(&wal), "switch_wal returned {wal:?}");
    assert!(
        cluster.wait_archived(&wal, ARCHIVE_TIMEOUT),
        "{wal} archived in time"
    );
    let archived = archive.path().join(&wal);
    let len = fs::metadata(&archived)
        .unwrap_or_else(|e| panic!("{} not in the archive: {e}", archived.display()))
        .len();
    assert_eq!(
        len,
        16 * 1024 * 1024,
        "archived segment has the default size"
    );

    let controldata = cluster.controldata();
    let from_tool = controldata
        .iter()
        .find(|(k, _)| k == "Database system identifier")
        .map(|(_, v)| v.clone())
        .expect("pg_controldata prints the system identifier");
    assert_eq!(cluster.system_id().to_string(), from_tool);

    cluster.stop();
    assert!(!cluster.is_running());
    assert!(!cluster.datadir().join("postmaster.pid").exists());
    cluster.stop(); // a second stop is a no-op
}

/// Options reach initdb and postgresql.conf; settings survive a restart.
fn options_reach_initdb_and_config(pg: &PgInstall) {
    let archive = scratch_dir();
    let opts = ClusterOptions {
        wal_segsize_mb: Some(1),
        data_checksums: true,
        no_data_checksums: false,
        archive_command: Some(format!("cp %p '{}/%f'", archive.path().display())),
        conf: vec![("work_mem".into(), "3MB".into())],
        hba: Vec::new(),
        env: Vec::new(),
    }
    .set("cluster_name", "it's quoted");
    let cluster = Cluster::init(pg, opts);
    cluster.start();
    assert_eq!(cluster.psql("SHOW wal_segment_size"), "1MB");
    assert_eq!(cluster.psql("SHOW data_checksums"), "on");
    assert_eq!(cluster.psql("SHOW work_mem"), "3MB");
    assert_eq!(cluster.psql("SHOW cluster_name"), "it's quoted");
    assert_eq!(cluster.psql("SHOW listen_addresses"), "");
    assert_eq!(cluster.psql("SHOW archive_mode"), "on");
    assert_eq!(cluster.psql("SHOW TimeZone"), "UTC");

    cluster.psql("CREATE TABLE t AS SELECT 1 AS x");
    let wal = cluster.switch_wal();
    assert!(cluster.wait_archived(&wal, ARCHIVE_TIMEOUT));
    let len = fs::metadata(archive.path().join(&wal))
        .expect("archived")
        .len();
    assert_eq!(len, 1024 * 1024, "archived segment has the initdb size");

    cluster.restart();
    assert_eq!(cluster.psql("SELECT x FROM t"), "1");
    assert_eq!(cluster.psql("SHOW work_mem"), "3MB");
}

/// SQL errors come back as psql's message; scripts run statement by statement.
fn psql_reports_errors_and_runs_scripts(pg: &PgInstall) {
    let cluster = Cluster::init(pg, ClusterOptions::default());
    cluster.start();
    let err = cluster
        .try_psql("SELECT * FROM no_such_table")
        .expect_err("query on a missing table fails");
    assert!(
        err.contains("no_such_table"),
        "error names the table: {err}"
    );

    let out = cluster
        .psql_script("CREATE TABLE s (x int);\nINSERT INTO s VALUES (7);\nSELECT x FROM s;\n");
    assert!(
        out.ends_with('7'),
        "script output ends with the select's row: {out:?}"
    );

    cluster.psql("CREATE DATABASE other");
    assert_eq!(
        cluster.psql_db("other", "SELECT current_database()"),
        "other"
    );

    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.psql("SELEC 1");
    }))
    .expect_err("psql panics on a syntax error");
    let msg = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("syntax error"), "panic carries stderr: {msg}");
    assert!(
        msg.contains("server log"),
        "panic carries the log tail: {msg}"
    );
}

/// Child processes reach the server through `env()`; pgbench generates WAL.
fn clients_reach_the_server_through_env(pg: &PgInstall) {
    let cluster = Cluster::init(pg, ClusterOptions::default());
    cluster.start();
    let mut cmd = Command::new(pg.bin("psql"));
    cmd.args(["-X", "-At", "-c", "SELECT current_user"]);
    cmd.envs(cluster.env());
    assert_eq!(run_ok(&mut cmd), "postgres");

    let before = cluster.psql("SELECT pg_current_wal_lsn()");
    cluster.pgbench_init(1);
    cluster.pgbench_run(2, 50);
    assert_eq!(cluster.psql("SELECT count(*) FROM pgbench_history"), "100");
    let moved = cluster.psql(&format!(
        "SELECT pg_current_wal_lsn() - '{before}'::pg_lsn > 1000000"
    ));
    assert_eq!(moved, "t", "pgbench wrote WAL");
}

/// Dropping a running cluster stops its server and removes its files.
fn drop_stops_the_server_and_removes_files(pg: &PgInstall) {
    let cluster = Cluster::init(pg, ClusterOptions::default());
    cluster.start();
    let pid_file = fs::read_to_string(cluster.datadir().join("postmaster.pid")).expect("pid file");
    let pid: u32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid on the first line");
    let base = cluster.base_dir().to_path_buf();
    drop(cluster);
    assert!(!base.exists(), "{} removed", base.display());
    assert!(!process_alive(pid), "postmaster {pid} is gone");
}

/// A postmaster that exited but was not reaped yet (a zombie) counts as gone.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

pg_test_matrix!(
    cluster_runs_sql_archives_wal_and_stops,
    options_reach_initdb_and_config,
    psql_reports_errors_and_runs_scripts,
    clients_reach_the_server_through_env,
    drop_stops_the_server_and_removes_files,
);

#[test]
fn scratch_dir_is_usable_by_the_postgres_user() {
    let dir = scratch_dir();
    let sub = create_postgres_dir(&dir.path().join("a/b"));
    let file = sub.join("written-by-postgres");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo hello > "$1" && id -un"#)
        .arg("sh")
        .arg(&file);
    let who = run_ok(as_postgres(&mut cmd));
    if pitr_testkit::postgres_uid_gid().is_some() {
        assert_eq!(who, "postgres");
    }
    assert_eq!(fs::read_to_string(&file).expect("file written"), "hello\n");
    let path: &Path = dir.path();
    assert!(
        path.starts_with(pitr_testkit::DEFAULT_TMP_BASE)
            || std::env::var_os("PITR_TEST_TMPDIR").is_some()
    );
}

#[test]
fn installs_are_sorted_and_each_has_a_server() {
    let all = pitr_testkit::installs();
    let majors: Vec<u32> = all.iter().map(|i| i.major).collect();
    let mut sorted = majors.clone();
    sorted.sort_unstable();
    assert_eq!(majors, sorted);
    for i in &all {
        assert!(i.bin("postgres").is_file(), "{i:?}");
        assert!(
            i.version().contains(&format!("PostgreSQL) {}", i.major)),
            "{i:?}"
        );
        assert_eq!(pitr_testkit::install(i.major).as_ref(), Some(i));
    }
}

#[test]
fn every_requested_major_is_installed() {
    // Fails with an install hint on a machine without PostgreSQL (unless PITR_TEST_ALLOW_NO_PG=1).
    let found = pitr_testkit::test_installs();
    eprintln!(
        "PostgreSQL under test: {:?}",
        found.iter().map(|i| i.major).collect::<Vec<_>>()
    );
}

#[test]
fn start_failure_panics_with_pg_ctl_output_and_server_log() {
    let Some(pg) = pitr_testkit::test_installs().into_iter().next() else {
        return;
    };
    let cluster = Cluster::init(&pg, ClusterOptions::default().set("shared_buffers", "lots"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.start()))
        .expect_err("a server with an invalid setting does not start");
    let msg = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    eprintln!("{msg}");
    assert!(msg.contains("pg_ctl start failed"), "names the step: {msg}");
    assert!(
        msg.contains("shared_buffers"),
        "log tail names the bad setting: {msg}"
    );
    assert!(!cluster.is_running());
}

/// `ClusterOptions::hba` lines come before initdb's `trust` lines: a role listed there must give
/// its password while every other role is still trusted.
#[test]
fn hba_lines_come_before_initdbs_own() {
    let Some(pg) = pitr_testkit::test_installs().into_iter().next_back() else {
        return;
    };
    let cluster = Cluster::init(
        &pg,
        ClusterOptions::default().hba_line("local all pwuser scram-sha-256"),
    );
    cluster.start();
    cluster.psql("CREATE ROLE pwuser LOGIN PASSWORD 'right pw'");
    let mut cmd = cluster.command("psql");
    cmd.args([
        "-X",
        "-At",
        "-w",
        "-U",
        "pwuser",
        "-c",
        "SELECT current_user",
    ]);
    let out = cmd.output().expect("run psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pwuser got in without a password");
    assert!(
        stderr.contains("password"),
        "psql asks for a password: {stderr}"
    );
    let mut cmd = cluster.command("psql");
    cmd.args(["-X", "-At", "-U", "pwuser", "-c", "SELECT current_user"])
        .env("PGPASSWORD", "right pw");
    assert_eq!(run_ok(&mut cmd), "pwuser");
    assert_eq!(
        cluster.psql("SELECT current_user"),
        "postgres",
        "others trusted"
    );
}

/// A `PITR_TEST_PG` that names no supported major fails the test that reads it, with the
/// parser's message, instead of skipping every major.
#[test]
fn a_bad_pitr_test_pg_fails_the_tests_that_read_it() {
    let exe = std::env::current_exe().expect("test binary path");
    for value in ["pg17", "14 17", "19", "15,,18"] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "cluster_runs_sql_archives_wal_and_stops::pg15",
                "--nocapture",
            ])
            .env("PITR_TEST_PG", value)
            .env_remove("NEXTEST_RUN_ID")
            .output()
            .expect("run this test binary again");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "PITR_TEST_PG={value:?} passed:\n{text}"
        );
        assert!(
            text.contains(&format!("PITR_TEST_PG={value:?}")) && text.contains("hint: "),
            "PITR_TEST_PG={value:?}: {text}"
        );
    }
}
