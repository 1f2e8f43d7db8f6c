//! `pitr restore` against real PostgreSQL 14–18.
//!
//! Until `pitr backup` is merged, the base backup is a *cold copy*: the files of a cleanly
//! stopped cluster, framed into the repository with a manifest whose `backup_label` is empty
//! (a cleanly shut down data directory is consistent; recovery starts from the shutdown
//! checkpoint in pg_control). The WAL is archived by PostgreSQL itself through
//! `pitr archive-push`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pitr_repo::{frame, BackupKind, BackupManifest, Compression, ManifestDir, ManifestFile, Repo};
use pitr_storage::{LocalFs, PutMode, Storage};
use pitr_testkit::{as_postgres, chown_to_postgres, scratch_dir, Cluster, ClusterOptions};

const LABEL: &str = "20260101T000000F";

fn control(c: &Cluster, key: &str) -> String {
    c.controldata()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("pg_controldata has no {key:?}"))
        .1
}

/// Frames every file of a stopped cluster into `repo` as backup `LABEL` (cold copy: no
/// backup_label; WAL excluded, it comes from the archive).
fn cold_backup(repo: &Path, c: &Cluster) -> BackupManifest {
    assert!(!c.is_running(), "a cold copy needs a stopped cluster");
    let checkpoint = control(c, "Latest checkpoint location");
    let tli: u32 = control(c, "Latest checkpoint's TimeLineID")
        .parse()
        .unwrap();
    let system_id: u64 = control(c, "Database system identifier").parse().unwrap();
    let seg: u64 = control(c, "Bytes per WAL segment").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalFs::open(repo).unwrap());
    let cluster = Repo::new(storage.clone()).cluster("main").unwrap();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    let root = c.datadir().to_path_buf();
    let start_time = jiff::Timestamp::now();
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let rs = r.to_str().unwrap().to_string();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                dirs.push(ManifestDir {
                    path: rs.clone(),
                    mode: meta.permissions().mode() & 0o7777,
                });
                if rs != "pg_wal" {
                    stack.push(r);
                } else {
                    dirs.push(ManifestDir {
                        path: "pg_wal/archive_status".into(),
                        mode: 0o700,
                    });
                }
                continue;
            }
            if rs == "postmaster.pid" || rs == "postmaster.opts" {
                continue;
            }
            let data = fs::read(e.path()).unwrap();
            let (blake3, stored_size) = if data.is_empty() {
                (String::new(), 0)
            } else {
                let (obj, summary) = frame::encode(&data, Compression::Zstd(1)).unwrap();
                let n = obj.len() as u64;
                rt.block_on(storage.put(
                    &cluster.backup_file_key(LABEL, &rs),
                    obj.into(),
                    PutMode::Create,
                ))
                .unwrap();
                (summary.checksum.to_string(), n)
            };
            files.push(ManifestFile {
                path: rs,
                size: data.len() as u64,
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime(),
                blake3,
                stored_size,
                stored_in: None,
                checksum_failures: vec![],
            });
        }
    }
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    let m = BackupManifest {
        label: LABEL.into(),
        kind: BackupKind::Full,
        parent: None,
        pg_major: c.install().major,
        system_id,
        wal_seg_size: seg,
        timeline: tli,
        start_lsn: checkpoint.clone(),
        stop_lsn: checkpoint,
        start_time,
        stop_time: jiff::Timestamp::now(),
        backup_label: String::new(),
        tablespace_map: None,
        tablespaces: vec![],
        data_checksums: false,
        dirs,
        files,
        pitr_version: "test cold copy".into(),
    };
    rt.block_on(cluster.put_manifest(&m)).unwrap();
    chown_to_postgres(repo);
    m
}

/// psql against a server on `sock`/5432 (the restored servers keep the original's socket).
fn psql_at(c: &Cluster, sock: &Path, sql: &str) -> String {
    let out = Command::new(c.install().bin("psql"))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(sock)
        .args(["-p", "5432", "-U", "postgres", "-d", "postgres", "-c", sql])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pg_ctl_stop(c: &Cluster, datadir: &Path) {
    let mut cmd = Command::new(c.install().bin("pg_ctl"));
    cmd.arg("-D")
        .arg(datadir)
        .args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// A cold copy plus archived WAL: recovery to the end of WAL, refusals before touching
/// anything, recovery to an LSN and to a time with `--start` (promote / pause) with exact
/// rows, following the timeline the first recovery created, and a `--delta` re-restore.
fn restores_a_cold_copy_to_end_of_wal_lsn_and_time(major: u32) {
    let install = pg(major);
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let seg_mb = if major % 2 == 1 { 1 } else { 16 };
    let c = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(seg_mb),
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t (id int, batch int)");
    c.psql("INSERT INTO t SELECT g, 1 FROM generate_series(1, 100) g");
    c.stop();
    cold_backup(&repo, &c);
    c.start();
    c.psql("INSERT INTO t SELECT g, 2 FROM generate_series(101, 200) g");
    let lsn2 = c.psql("SELECT pg_current_wal_lsn()");
    let time2 = c.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("INSERT INTO t SELECT g, 3 FROM generate_series(201, 300) g");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();
    let sock = c.socket_dir().to_path_buf();
    let r = s(&repo);

    // Refusals happen before anything is touched.
    let untouched = scratch.path().join("never");
    let before = pitr(&[
        "--repo",
        r,
        "restore",
        "--pgdata",
        s(&untouched),
        "--target-lsn",
        "0/10",
    ])
    .expect_code(4);
    assert!(
        before
            .stderr
            .contains("before the oldest backup's consistency point")
            && before.stderr.contains("reachable: from"),
        "{before:?}"
    );
    let after = pitr(&[
        "--repo",
        r,
        "restore",
        "--pgdata",
        s(&untouched),
        "--target-lsn",
        "FF/0",
    ])
    .expect_code(4);
    assert!(
        after.stderr.contains("beyond the end of archived WAL"),
        "{after:?}"
    );
    let early = pitr(&[
        "--repo",
        r,
        "restore",
        "--pgdata",
        s(&untouched),
        "--target-time",
        "2000-01-01 00:00:00+00",
    ])
    .expect_code(4);
    assert!(
        early.stderr.contains("before the oldest backup finished"),
        "{early:?}"
    );
    pitr(&[
        "--repo",
        r,
        "restore",
        "--pgdata",
        s(&untouched),
        "--target-lsn",
        &lsn2,
        "--target-name",
        "x",
    ])
    .expect_code(2);
    assert!(!untouched.exists());
    let plan = pitr(&[
        "--repo",
        r,
        "--json",
        "restore",
        "--pgdata",
        s(&untouched),
        "--dry-run",
    ])
    .expect_code(0);
    assert_eq!(json(&plan)["plan"]["backup"]["label"], LABEL);
    assert!(!untouched.exists(), "--dry-run created the directory");

    // 1. End of WAL into an empty directory owned by postgres; start it with the harness.
    let a = Cluster::empty(&install, ClusterOptions::default());
    let res = pitr(&["--repo", r, "--json", "restore", "--pgdata", s(a.datadir())]).expect_code(0);
    let rep = json(&res);
    assert_eq!(rep["restore"]["plan"]["backup"]["label"], LABEL);
    assert!(
        rep["restore"]["files_restored"].as_u64().unwrap() > 100,
        "{rep}"
    );
    assert!(a.datadir().join("recovery.signal").exists());
    assert!(
        !a.datadir().join("backup_label").exists(),
        "cold copy: no backup_label"
    );
    let auto = fs::read_to_string(a.datadir().join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive-get %f \"%p\""), "{auto}");
    if pitr_testkit::postgres_uid_gid().is_some() {
        let (uid, _) = pitr_testkit::postgres_uid_gid().unwrap();
        assert_eq!(
            fs::metadata(a.datadir().join("PG_VERSION")).unwrap().uid(),
            uid
        );
        assert_eq!(fs::metadata(a.datadir()).unwrap().mode() & 0o777, 0o700);
    }
    // A non-empty directory is refused without --delta/--force.
    let busy = pitr(&["--repo", r, "restore", "--pgdata", s(a.datadir())]).expect_code(4);
    assert!(
        busy.stderr.contains("not empty") && busy.stderr.contains("--delta"),
        "{busy:?}"
    );
    a.write_conf();
    a.start();
    wait_for("end of recovery", Duration::from_secs(120), || {
        a.psql("SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(a.psql("SELECT count(*), max(batch) FROM t"), "300|3");
    // Promotion created timeline 2; wait until its history is archived so that later
    // restores (recovery_target_timeline = latest) deterministically follow it.
    let h2 = repo.join("main/wal/00000002/00000002.history");
    wait_for("00000002.history archived", Duration::from_secs(60), || {
        h2.exists()
    });
    a.stop();
    drop(a);

    // 2. An LSN on timeline 1, through timeline 2's history, with --start and promote.
    let b = Cluster::empty(&install, ClusterOptions::default());
    let res = pitr(&[
        "--repo",
        r,
        "--json",
        "restore",
        "--pgdata",
        s(b.datadir()),
        "--target-lsn",
        &lsn2,
        "--target-action",
        "promote",
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .expect_code(0);
    let rep = json(&res);
    assert_eq!(rep["restore"]["plan"]["choice"]["target_tli"], "2", "{rep}");
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert!(
        rep["start"]["stopped"].as_str().unwrap().contains(&lsn2),
        "{rep}"
    );
    assert_eq!(
        psql_at(&b, &sock, "SELECT count(*), max(batch) FROM t"),
        "200|2"
    );
    assert_eq!(psql_at(&b, &sock, "SELECT pg_is_in_recovery()"), "f");
    // Promotion created timeline 3, branching from timeline 2's history at a point on timeline
    // 1 before timeline 2 began: PostgreSQL writes switchpoints that go back. It must archive.
    let h3 = repo.join("main/wal/00000003/00000003.history");
    wait_for("00000003.history archived", Duration::from_secs(60), || {
        h3.exists()
    });
    // Timeline 3's first segment is not archived yet: following it is refused, with the reason.
    let dir3 = scratch.path().join("three");
    let refused = pitr(&["--repo", r, "restore", "--pgdata", s(&dir3), "--dry-run"]).expect_code(4);
    assert!(
        refused.stderr.contains("not archived")
            && refused.stderr.contains("'latest' resolves to 3"),
        "{refused:?}"
    );
    let closed = psql_at(&b, &sock, "SELECT pg_walfile_name(pg_switch_wal())");
    wait_for(
        "timeline 3's segment archived",
        Duration::from_secs(60),
        || repo.join("main/wal/00000003").join(&closed).exists(),
    );
    pg_ctl_stop(&b, b.datadir());

    // 3. The time of batch 2 along the latest timeline (3): batch 3 committed on timeline 1
    // after timeline 3 branched off, so no transaction after the target is on this path and
    // PostgreSQL refuses to end recovery: a clear error with the server's words.
    let failed = pitr(&[
        "--repo",
        r,
        "restore",
        "--pgdata",
        s(b.datadir()),
        "--force",
        "--target-time",
        &time2,
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .expect_code(3);
    assert!(
        failed
            .stderr
            .contains("recovery ended before configured recovery target was reached"),
        "{failed:?}"
    );
    assert!(!b.is_running());

    // 4. --delta into the same directory, to the same time on the backup's timeline (1),
    // pausing there.
    let res = pitr(&[
        "--repo",
        r,
        "--json",
        "restore",
        "--pgdata",
        s(b.datadir()),
        "--delta",
        "--target-time",
        &time2,
        "--target-timeline",
        "current",
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .expect_code(0);
    let rep = json(&res);
    assert!(
        rep["restore"]["files_reused"].as_u64().unwrap() > 10,
        "{rep}"
    );
    assert!(
        rep["restore"]["entries_removed"].as_u64().unwrap() > 0,
        "{rep}"
    );
    assert_eq!(rep["start"]["outcome"], "paused", "{rep}");
    assert!(rep["start"]["server_running"].as_bool().unwrap());
    assert_eq!(
        psql_at(&b, &sock, "SELECT count(*), max(batch) FROM t"),
        "200|2"
    );
    assert_eq!(psql_at(&b, &sock, "SELECT pg_is_in_recovery()"), "t");
    pg_ctl_stop(&b, b.datadir());
}
per_version!(restores_a_cold_copy_to_end_of_wal_lsn_and_time);
