//! `pitr backup --method replication` against real PostgreSQL 14–18, run as an OS user that
//! cannot read the data directory (`nobody` when the tests run as root), while the server
//! archives through `pitr archive-push`; then restored to the end of WAL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pitr_testkit::{
    as_postgres, create_postgres_dir, pg_test_matrix, scratch_dir, Cluster, ClusterOptions,
    PgInstall,
};

/// uid/gid of `nobody`, used when the tests run as root.
const NOBODY: u32 = 65534;

/// Runs pitr as `nobody` when root (else as the current user), with umask 000 so that the
/// repository it shares with the server's archive_command stays writable by both.
fn pitr_as_other(scratch: &Path, args: &[&str]) -> Run {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(pitr_bin())
        .args(args)
        .env_remove("PITR_REPO")
        .env_remove("PITR_CLUSTER")
        .env_remove("PITR_CONFIG")
        .env("HOME", scratch)
        .current_dir("/");
    if pitr_os::is_root() {
        c.uid(NOBODY).gid(NOBODY);
    }
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn pg_ctl_stop(install: &PgInstall, dir: &Path) {
    let mut cmd = Command::new(install.bin("pg_ctl"));
    cmd.arg("-D").arg(dir).args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const COUNT: &str = "SELECT (SELECT count(*) FROM t) || ',' || (SELECT sum(id) FROM t) || ',' || \
     (SELECT count(*) FROM ts_t)";

/// A backup taken over BASE_BACKUP by a user that cannot read PGDATA (with a tablespace and
/// data checksums) lands in the repository like a copy-method backup, and restores to the end
/// of WAL with every row, the ones written after it included.
fn replication_backup_restores_every_row(install: &PgInstall) {
    let scratch = scratch_dir();
    chmod(scratch.path(), 0o755);
    let repo = scratch.path().join("repo");
    fs::create_dir(&repo).unwrap();
    chmod(&repo, 0o777);
    pitr_as_other(scratch.path(), &["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            data_checksums: true,
            archive_command: Some(format!("umask 000; {}", archive_command(&repo, ""))),
            ..Default::default()
        },
    );
    c.start();
    // The socket is reachable by anyone; the data directory (0700, postgres) is not.
    chmod(c.base_dir(), 0o711);
    chmod(c.socket_dir(), 0o755);
    let ts = create_postgres_dir(&scratch.path().join("ts"));
    c.psql(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        ts.display()
    ));
    c.psql_script(
        "CREATE TABLE t (id int PRIMARY KEY, pad text);
         INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
         CREATE TABLE ts_t (id int) TABLESPACE extra;
         INSERT INTO ts_t SELECT generate_series(1, 500);",
    );
    let port = c.port().to_string();
    let conn = ["-h", s(c.socket_dir()), "-p", &port, "-U", "postgres"];
    let mut args = vec!["--repo", s(&repo), "--json", "backup"];
    args.extend_from_slice(&conn);

    // The copy method cannot read PGDATA as this user, and says so.
    if pitr_os::is_root() {
        let mut copy = args.clone();
        copy.extend_from_slice(&["--method", "copy"]);
        let run = pitr_as_other(scratch.path(), &copy);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains("--method replication"),
            "{}",
            run.stderr
        );
    }
    // Without --method, a PGDATA that is not readable means replication.
    let run = pitr_as_other(scratch.path(), &args).expect_code(0);
    let rep = json(&run);
    assert_eq!(rep["method"], "replication", "{rep}");
    let label = rep["label"].as_str().unwrap().to_string();
    assert!(rep["files"].as_u64().unwrap() > 500, "{rep}");
    assert!(rep["size"].as_u64().unwrap() > 4 << 20, "{rep}");

    // The manifest looks like a copy-method one.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(repo.join("main/backup").join(&label).join("backup.json")).unwrap(),
    )
    .unwrap();
    let body = &manifest["body"];
    let files: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"global/pg_control") && files.contains(&"PG_VERSION"));
    for excluded in ["postmaster.pid", "backup_label", "tablespace_map"] {
        assert!(!files.contains(&excluded), "{excluded} stored as a file");
    }
    assert!(!files.iter().any(|f| f.starts_with("pg_wal/")), "{files:?}");
    let oid = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'");
    let ts_prefix = format!("pg_tblspc/{oid}/PG_");
    assert!(
        files.iter().any(|f| f.starts_with(&ts_prefix)),
        "no tablespace files under {ts_prefix}: {files:?}"
    );
    let label_text = body["backup_label"].as_str().unwrap();
    assert!(
        label_text.contains("START WAL LOCATION") && label_text.contains(&label),
        "{label_text}"
    );
    assert!(
        body["tablespace_map"].as_str().unwrap().contains(&oid),
        "{body}"
    );
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);

    // Rows written after the backup come from the archive.
    c.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 20500) g");
    let want = c.psql(COUNT);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    let dir = scratch.path().join("restored");
    let ts2 = scratch.path().join("ts2");
    let map = format!("{oid}={}", ts2.display());
    let rep = json(
        &pitr(&[
            "--repo",
            s(&repo),
            "--json",
            "restore",
            "--pgdata",
            s(&dir),
            "--tablespace-map",
            &map,
            "--start",
            "--pg-bin",
            s(&install.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    let got = psql_port(install, c.socket_dir(), c.port(), COUNT);
    pg_ctl_stop(install, &dir);
    assert_eq!(got, want);
    assert_eq!(want, format!("20500,{},500", 20500 * 20501 / 2));
}
pg_test_matrix!(replication_backup_restores_every_row);
