//! `pitr restore` against real PostgreSQL 14–18, from online backups taken by `pitr backup`
//! while PostgreSQL archives its WAL through `pitr archive-push`.
//!
//! Restored servers keep the original's postgresql.conf: they listen on the original's socket
//! directory and archive into the same repository, so the original is stopped before any
//! restored server starts, and only one server runs at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{as_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

/// A cluster archiving into a fresh repository, and helpers to back it up and restore it.
struct Lab {
    scratch: tempfile::TempDir,
    repo: PathBuf,
    install: PgInstall,
    c: Cluster,
    /// The original's socket directory, where restored servers listen too.
    sock: PathBuf,
}

impl Lab {
    fn new(install: &PgInstall, opts: ClusterOptions) -> Lab {
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
        let c = Cluster::init(
            install,
            ClusterOptions {
                archive_command: Some(archive_command(&repo, "")),
                ..opts
            },
        );
        c.start();
        let sock = c.socket_dir().to_path_buf();
        Lab {
            scratch,
            repo,
            install: install.clone(),
            c,
            sock,
        }
    }

    fn r(&self) -> &str {
        s(&self.repo)
    }

    /// `pitr backup` of the server listening on the lab's socket; returns the label.
    fn backup(&self) -> String {
        self.backup_with(&[])
    }

    /// `pitr backup ARGS` (e.g. `--type incr`) of the lab's server; returns the label.
    fn backup_with(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--repo",
            self.r(),
            "backup",
            "-h",
            s(&self.sock),
            "-p",
            "5432",
            "-U",
            "postgres",
        ];
        all.extend_from_slice(args);
        let out = pitr_as_postgres(&all).expect_code(0);
        out.stdout.trim().to_string()
    }

    /// A path in the scratch directory that does not exist yet.
    fn dir(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// `pitr --json restore --pgdata DIR ARGS` (exit 0), as parsed JSON.
    fn restore(&self, dir: &Path, args: &[&str]) -> Value {
        let mut all = vec!["--repo", self.r(), "--json", "restore", "--pgdata", s(dir)];
        all.extend_from_slice(args);
        json(&pitr(&all).expect_code(0))
    }

    /// `pitr --json restore --pgdata DIR ARGS --dry-run` (exit 0), as parsed JSON.
    fn dry_run(&self, dir: &Path, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--dry-run");
        self.restore(dir, &all)
    }

    /// Like [`Lab::restore`] with `--start`: the server is left as recovery left it.
    fn restore_start(&self, dir: &Path, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--start",
            "--pg-bin",
            s(&self.install.bindir),
            "--wait-timeout",
            "120",
        ]);
        self.restore(dir, &all)
    }

    /// A refused restore: exit `code`, and `dir` is left exactly as it was.
    fn refused(&self, dir: &Path, args: &[&str], code: i32) -> Run {
        let before = listing(dir);
        let mut all = vec!["--repo", self.r(), "restore", "--pgdata", s(dir)];
        all.extend_from_slice(args);
        let run = pitr(&all).expect_code(code);
        assert_eq!(listing(dir), before, "a refused restore touched {dir:?}");
        run
    }

    fn psql(&self, sql: &str) -> String {
        psql_at(&self.install, &self.sock, sql)
    }

    fn stop(&self, dir: &Path) {
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(dir).args(["-m", "fast", "-w", "stop"]);
        as_postgres(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until `name` (e.g. `00000002.history`) is in the repository.
    fn wait_in_repo(&self, tli: u32, name: &str) {
        let dir = self.repo.join(format!("main/wal/{tli:08X}"));
        let p = dir.join(name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.exists() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} to be archived; {dir:?} holds {:?}",
                listing(&dir)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every entry below `dir` with size and mtime (empty when `dir` does not exist).
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path(),
                md.len(),
                md.mtime_nsec() + md.mtime() * 1_000_000_000,
            ));
        }
    }
    out.sort();
    out
}

/// psql against a server listening on `sock`/5432.
fn psql_at(install: &PgInstall, sock: &Path, sql: &str) -> String {
    psql_port(install, sock, 5432, sql)
}

fn label_of(rep: &Value) -> &str {
    rep["restore"]["plan"]["backup"]["label"].as_str().unwrap()
}

const ROWS: &str = "SELECT coalesce(string_agg(nombre, ',' ORDER BY id), '') FROM laboratorio_pitr";

/// Inserts rows into the lab table in one transaction and returns its xid.
fn insert(c: &Cluster, names: &[&str]) -> String {
    let values: Vec<String> = names.iter().map(|n| format!("('{n}')")).collect();
    c.psql(&format!(
        "WITH i AS (INSERT INTO laboratorio_pitr (nombre) VALUES {} RETURNING id) \
         SELECT txid_current() FROM i LIMIT 1",
        values.join(",")
    ))
}

/// The lab of seed 001 with two backups: every target type restores the exact rows, from the
/// newest backup that can reach it (name and xid located in the archived WAL), and
/// `--start` reports where recovery stopped. Unreachable targets and a non-empty directory are
/// refused before anything is touched. Then a second timeline: following it (latest) or
/// staying on timeline 1, and a backup on timeline 2 refused for timeline 1.
fn seed_lab_restores_every_target_type(pg: &PgInstall) {
    // No autovacuum: no transaction but the lab's may commit between the targets.
    let lab = Lab::new(pg, ClusterOptions::default().set("autovacuum", "off"));
    let c = &lab.c;
    let b1 = lab.backup();
    c.psql(
        "CREATE TABLE laboratorio_pitr (id SERIAL PRIMARY KEY, nombre TEXT NOT NULL, \
         creado_en TIMESTAMP DEFAULT now())",
    );
    insert(c, &["registro_1", "registro_2"]);
    let lsn2 = c.psql("SELECT pg_current_wal_lsn()");
    let time2 = c.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(20));
    c.psql("SELECT pg_create_restore_point('punto_laboratorio')");
    let x3 = insert(c, &["registro_3"]);
    let b2 = lab.backup();
    let x4 = insert(c, &["registro_4"]);
    let after_all = c.psql("SELECT clock_timestamp()");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    // Refusals, before anything is touched.
    let never = lab.dir("never");
    let early = lab.refused(&never, &["--target-time", "2000-01-01 00:00:00+00"], 4);
    assert!(
        early.stderr.contains("before the oldest backup finished")
            && early.stderr.contains(&format!("backup {b1}"))
            && early.stderr.contains("reachable: from"),
        "{early:?}"
    );
    let beyond = lab.refused(&never, &["--target-lsn", "FF/0"], 4);
    assert!(
        beyond.stderr.contains("beyond the end of archived WAL")
            && beyond.stderr.contains("reachable: from"),
        "{beyond:?}"
    );
    // No transaction ends after this time: PostgreSQL would never reach it.
    let late = lab.refused(&never, &["--target-time", &after_all], 4);
    assert!(
        late.stderr
            .contains("no transaction in the archived WAL ends after")
            && late.stderr.contains(&format!("backup {b2} finished"))
            && late.stderr.contains("the last archived transaction"),
        "{late:?}"
    );
    let unnamed = lab.refused(&never, &["--target-name", "no_such_point"], 4);
    assert!(
        unnamed
            .stderr
            .contains("restore point \"no_such_point\" is not in the archived WAL")
            && unnamed.stderr.contains("reachable: from"),
        "{unnamed:?}"
    );
    let unknown_xid = lab.refused(&never, &["--target-xid", "99999999"], 4);
    assert!(
        unknown_xid
            .stderr
            .contains("transaction 99999999 is not in the archived WAL"),
        "{unknown_xid:?}"
    );
    // Transaction 3 committed before backup 2 started: backup 2 cannot reach it.
    let forced = lab.refused(&never, &["--target-xid", &x3, "--backup", &b2], 4);
    assert!(
        forced
            .stderr
            .contains(&format!("cannot be reached from backup {b2}"))
            && forced
                .stderr
                .contains("not in the archived WAL from its start"),
        "{forced:?}"
    );
    lab.refused(&never, &["--target-lsn", &lsn2, "--target-name", "x"], 2);
    assert!(!never.exists());
    let busy = lab.dir("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.txt"), "precious").unwrap();
    let refused = lab.refused(&busy, &[], 4);
    assert!(
        refused.stderr.contains("not empty") && refused.stderr.contains("--delta"),
        "{refused:?}"
    );

    // Which backup each target takes, without restoring.
    for (args, want) in [
        (vec!["--target-time", time2.as_str()], &b1),
        (vec!["--target-lsn", lsn2.as_str()], &b1),
        (vec!["--target-name", "punto_laboratorio"], &b1),
        (vec!["--target-xid", x3.as_str()], &b1),
        (vec!["--target-xid", x4.as_str()], &b2),
        (vec!["--target-immediate"], &b2),
        (vec![], &b2),
    ] {
        let plan = lab.dry_run(&never, &args);
        assert_eq!(
            plan["plan"]["backup"]["label"],
            want.as_str(),
            "{args:?}: {plan}"
        );
    }
    let text = pitr(&[
        "--repo",
        lab.r(),
        "restore",
        "--pgdata",
        s(&never),
        "--target-name",
        "punto_laboratorio",
        "--dry-run",
    ])
    .expect_code(0);
    assert!(
        text.stdout.contains("dry run: nothing was changed")
            && text.stdout.contains(&format!("backup:      {b1}"))
            && text.stdout.contains("on timeline 1, 20")
            && text.stdout.contains("(found in the archived WAL)"),
        "{text:?}"
    );
    assert!(!never.exists(), "--dry-run created the directory");

    // Each target, restored and started: exact rows and where recovery stopped.
    let cases: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "time",
            vec!["--target-time", &time2],
            "registro_1,registro_2",
            "paused",
        ),
        (
            "lsn",
            vec!["--target-lsn", &lsn2],
            "registro_1,registro_2",
            "paused",
        ),
        (
            "name",
            vec!["--target-name", "punto_laboratorio"],
            "registro_1,registro_2",
            "paused",
        ),
        (
            "xid",
            vec!["--target-xid", &x3],
            "registro_1,registro_2,registro_3",
            "paused",
        ),
        (
            "xid-exclusive",
            vec!["--target-xid", &x3, "--target-exclusive"],
            "registro_1,registro_2",
            "paused",
        ),
        (
            "immediate",
            vec!["--target-immediate", "--target-action", "promote"],
            "registro_1,registro_2,registro_3",
            "promoted",
        ),
    ];
    for (name, args, rows, outcome) in cases {
        let dir = lab.dir(name);
        let rep = lab.restore_start(&dir, &args);
        let st = &rep["start"];
        assert_eq!(st["outcome"], outcome, "{name}: {rep}");
        assert_eq!(lab.psql(ROWS), rows, "{name}: {rep}");
        let stopped = st["stopped"].as_str().unwrap_or_default();
        match name {
            "time" | "xid-exclusive" => {
                assert!(
                    stopped.starts_with(&format!("before commit of transaction {x3}")),
                    "{name}: {rep}"
                );
                assert_eq!(st["stop_xid"].as_u64().unwrap().to_string(), x3);
                assert!(st["stop_time"].is_string(), "{name}: {rep}");
            }
            "xid" => {
                assert!(
                    stopped.starts_with(&format!("after commit of transaction {x3}")),
                    "{name}: {rep}"
                );
            }
            "lsn" => assert!(stopped.contains(&lsn2), "{name}: {rep}"),
            "name" => assert!(stopped.contains("punto_laboratorio"), "{name}: {rep}"),
            _ => {}
        }
        assert!(st["stop_lsn"].is_string(), "{name}: {rep}");
        if outcome == "paused" {
            assert_eq!(st["timeline"], 1, "{name}: {rep}");
            assert!(st["last_transaction_time"].is_string(), "{name}: {rep}");
            assert_eq!(lab.psql("SELECT pg_is_in_recovery()"), "t");
        } else {
            assert_eq!(st["timeline"], 2, "{name}: {rep}");
            assert_eq!(lab.psql("SELECT pg_is_in_recovery()"), "f");
        }
        if name == "name" || name == "xid" {
            let loc = &rep["restore"]["plan"]["located"];
            assert_eq!(loc["tli"], 1, "{name}: {rep}");
            assert!(loc["time"].is_string(), "{name}: {rep}");
        }
        lab.stop(&dir);
        fs::remove_dir_all(&dir).unwrap();
    }
    // The immediate restore promoted onto timeline 2 without writing anything; its history is
    // archived, so "latest" follows it from now on.
    lab.wait_in_repo(2, "00000002.history");

    // End of WAL along timeline 2 would stop at its fork (registro_3); timeline 1 has all rows.
    let tl1 = lab.dir("tl1");
    let rep = lab.restore_start(&tl1, &["--target-timeline", "1"]);
    assert_eq!(label_of(&rep), b2);
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(rep["start"]["timeline"], 3, "{rep}");
    assert_eq!(
        lab.psql(ROWS),
        "registro_1,registro_2,registro_3,registro_4"
    );
    // Ownership: a new directory belongs to the owner of its parent (postgres).
    if let Some((uid, _)) = pitr_testkit::postgres_uid_gid() {
        assert_eq!(fs::metadata(tl1.join("PG_VERSION")).unwrap().uid(), uid);
        assert_eq!(fs::metadata(&tl1).unwrap().mode() & 0o777, 0o700);
    }
    // A backup and then a write on timeline 3 (the write also makes the switch below close a
    // segment: with nothing written since the backup's own switch, there is nothing to close).
    let b3 = lab.backup();
    insert(c, &["registro_5"]);
    let closed = lab.psql("SELECT pg_walfile_name(pg_switch_wal())");
    lab.wait_in_repo(3, "00000003.history");
    lab.wait_in_repo(3, &closed);
    lab.stop(&tl1);

    // Latest now is timeline 3: the newest backup, all five rows.
    let latest = lab.dir("latest");
    let rep = lab.restore_start(&latest, &[]);
    assert_eq!(label_of(&rep), b3);
    assert_eq!(rep["restore"]["plan"]["choice"]["target_tli"], 3);
    assert_eq!(
        lab.psql(ROWS),
        "registro_1,registro_2,registro_3,registro_4,registro_5"
    );
    lab.stop(&latest);
    // Backup 3 is on timeline 3, which is not an ancestor of timeline 1.
    let not_ancestor = lab.refused(&never, &["--backup", &b3, "--target-timeline", "1"], 4);
    assert!(
        not_ancestor
            .stderr
            .contains("not an ancestor of timeline 1"),
        "{not_ancestor:?}"
    );
    // Timeline 1 still restores from backup 2, without the write on timeline 3.
    let again = lab.dir("again");
    let rep = lab.restore_start(&again, &["--target-timeline", "1", "--target-xid", &x4]);
    assert_eq!(label_of(&rep), b2);
    assert_eq!(
        lab.psql(ROWS),
        "registro_1,registro_2,registro_3,registro_4"
    );
    lab.stop(&again);
}
pg_test_matrix!(seed_lab_restores_every_target_type);

/// pgbench's invariant: every balance change is in pgbench_history.
const PGBENCH_BALANCED: &str = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) \
     = (SELECT coalesce(sum(delta), 0) FROM pgbench_history) \
     AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history) \
     AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)";

/// A backup taken while pgbench writes restores to a consistent state, both at its
/// consistency point (`--target-immediate`) and at the end of WAL; then `--delta` over a
/// damaged copy fetches only the damaged files, removes what the backup does not have, and
/// the result starts and passes pg_amcheck.
fn backup_under_pgbench_restores_consistently_and_delta_repairs(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default());
    let c = &lab.c;
    c.pgbench_init(2);
    let load = {
        let env = c.env();
        let pgbench = c.install().bin("pgbench");
        let pgbench = if pgbench.is_file() {
            pgbench
        } else {
            pitr_testkit::installs()
                .into_iter()
                .map(|i| i.bin("pgbench"))
                .find(|p| p.is_file())
                .expect("no pgbench installed")
        };
        std::thread::spawn(move || {
            Command::new(pgbench)
                .envs(env)
                .args(["-n", "-c", "2", "-T", "4"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let label = lab.backup();
    let out = load.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let history = c.psql("SELECT count(*) FROM pgbench_history");
    let heap = c.psql("SELECT pg_relation_filepath('pgbench_accounts')");
    let index = c.psql("SELECT pg_relation_filepath('pgbench_accounts_pkey')");
    let tellers = c.psql("SELECT pg_relation_filepath('pgbench_tellers')");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    // At the backup's consistency point: mid-workload, yet balanced.
    let imm = lab.dir("immediate");
    let rep = lab.restore_start(&imm, &["--target-immediate"]);
    assert_eq!(label_of(&rep), label);
    assert_eq!(rep["start"]["outcome"], "paused", "{rep}");
    assert_eq!(lab.psql(PGBENCH_BALANCED), "t");
    let at_backup: u64 = lab
        .psql("SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    assert!(
        at_backup > 0 && at_backup.to_string() != history,
        "the backup should fall inside the workload: {at_backup} of {history} transactions"
    );
    lab.stop(&imm);
    fs::remove_dir_all(&imm).unwrap();

    // End of WAL into a directory, damaged before it ever starts, then repaired with --delta.
    let dir = lab.dir("delta");
    let first = lab.restore(&dir, &[]);
    let files = first["restore"]["files_restored"].as_u64().unwrap();
    fs::remove_file(dir.join(&index)).unwrap();
    let mut bytes = fs::read(dir.join(&heap)).unwrap();
    bytes[8192 * 3 + 100] ^= 0xFF;
    fs::write(dir.join(&heap), &bytes).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(&tellers))
        .unwrap();
    f.set_len(0).unwrap();
    drop(f);
    fs::write(dir.join("base/stray_file"), b"not from the backup").unwrap();
    fs::create_dir_all(dir.join("stray_dir/sub")).unwrap();
    // Without --delta or --force, a non-empty directory is refused and left as it is.
    lab.refused(&dir, &[], 4);
    let rep = lab.restore_start(&dir, &["--delta"]);
    let r = &rep["restore"];
    // The three damaged files, and postgresql.auto.conf, which the first restore rewrote.
    assert_eq!(r["files_restored"], 4, "{r}");
    assert_eq!(r["files_reused"].as_u64().unwrap(), files - 4, "{r}");
    assert!(r["entries_removed"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["bytes_fetched"].as_u64().unwrap()
            < r["plan"]["backup"]["stored_bytes"].as_u64().unwrap() / 2,
        "--delta fetched more than the damaged files: {r}"
    );
    assert!(!dir.join("base/stray_file").exists() && !dir.join("stray_dir").exists());
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(lab.psql("SELECT count(*) FROM pgbench_history"), history);
    assert_eq!(lab.psql(PGBENCH_BALANCED), "t");
    // pg_amcheck, where the amcheck extension is installed (not in every test build).
    let amcheck = lab.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'");
    if lab.install.has("pg_amcheck") && amcheck == "1" {
        let out = Command::new(lab.install.bin("pg_amcheck"))
            .arg("-h")
            .arg(&lab.sock)
            .args(["-p", "5432", "-U", "postgres", "--install-missing"])
            .args(["--heapallindexed", "-d", "postgres"])
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_amcheck: {out:?}");
    }
    lab.stop(&dir);
}
pg_test_matrix!(backup_under_pgbench_restores_consistently_and_delta_repairs);

/// A tablespace is restored to its original location (refused while that is not empty) or
/// to another with `--tablespace-map`; as root, `--owner` gives every file, tablespace
/// included, to that user, and a root-owned parent without `--owner` is refused.
fn restores_a_tablespace_where_asked(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default());
    let c = &lab.c;
    let ts = pitr_testkit::create_postgres_dir(&lab.dir("ts_original"));
    c.psql(&format!("CREATE TABLESPACE tsp LOCATION '{}'", s(&ts)));
    c.psql("CREATE TABLE t_ts (id int) TABLESPACE tsp");
    c.psql("INSERT INTO t_ts SELECT generate_series(1, 100)");
    let oid = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'tsp'");
    lab.backup();
    c.psql("INSERT INTO t_ts SELECT generate_series(101, 200)");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    // The original location still holds the original's tablespace.
    let dir = lab.dir("data");
    let busy = lab.refused(&dir, &[], 4);
    assert!(
        busy.stderr.contains("not empty") && busy.stderr.contains(s(&ts)),
        "{busy:?}"
    );
    assert!(!dir.exists());

    // Elsewhere, below a directory that belongs to root.
    let root_owned = lab.dir("root_owned");
    fs::create_dir(&root_owned).unwrap();
    let moved_data = root_owned.join("data");
    let moved_ts = root_owned.join("ts");
    let map = format!("{oid}={}", s(&moved_ts));
    if pitr_testkit::postgres_uid_gid().is_some() {
        let no_owner = lab.refused(&moved_data, &["--tablespace-map", &map], 2);
        assert!(
            no_owner.stderr.contains("would belong to root") && no_owner.stderr.contains("--owner"),
            "{no_owner:?}"
        );
    }
    let rep = lab.restore_start(
        &moved_data,
        &["--tablespace-map", &map, "--owner", "postgres"],
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(lab.psql("SELECT count(*) FROM t_ts"), "200");
    assert_eq!(
        lab.psql(&format!("SELECT pg_tablespace_location({oid})")),
        s(&moved_ts)
    );
    assert_eq!(
        fs::read_link(moved_data.join("pg_tblspc").join(&oid)).unwrap(),
        moved_ts
    );
    if let Some((uid, _)) = pitr_testkit::postgres_uid_gid() {
        for p in [moved_data.join("PG_VERSION"), moved_ts.clone()] {
            assert_eq!(fs::metadata(&p).unwrap().uid(), uid, "{p:?}");
        }
        let version_dir = fs::read_dir(&moved_ts).unwrap().next().unwrap().unwrap();
        assert_eq!(version_dir.metadata().unwrap().uid(), uid);
    }
    lab.stop(&moved_data);

    // The original location, once emptied.
    fs::rename(&ts, lab.dir("ts_set_aside")).unwrap();
    let rep = lab.restore_start(&dir, &[]);
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(lab.psql("SELECT count(*) FROM t_ts"), "200");
    assert_eq!(fs::read_link(dir.join("pg_tblspc").join(&oid)).unwrap(), ts);
    assert!(ts
        .join(
            fs::read_dir(lab.dir("ts_set_aside"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name()
        )
        .is_dir());
    lab.stop(&dir);
}
pg_test_matrix!(restores_a_tablespace_where_asked);

/// The manifest of backup `label`, as JSON.
fn manifest(lab: &Lab, label: &str) -> Value {
    let path = lab.repo.join("main/backup").join(label).join("backup.json");
    serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
}

const LAB_TABLE: &str = "CREATE TABLE laboratorio_pitr (id SERIAL PRIMARY KEY, \
     nombre TEXT NOT NULL, creado_en TIMESTAMP DEFAULT now())";

const STABLE_SUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(h, ',' ORDER BY g)) FROM estable";

/// An incremental backup restores (chosen for a target after it, or named with `--backup`)
/// with the files it reuses from its full parent written from the parent's copies, byte for
/// byte; a target between the two backups restores from the full one.
fn incremental_backup_restores_with_its_parents_files(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default().set("autovacuum", "off"));
    let c = &lab.c;
    c.psql("CREATE TABLE estable AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g");
    c.psql(LAB_TABLE);
    insert(c, &["registro_1", "registro_2"]);
    // Hint bits set and everything on disk well before the full backup starts, so that the
    // incremental backup may reuse the untouched files.
    c.psql("VACUUM (FREEZE) estable");
    c.psql("CHECKPOINT");
    let stable_sum = c.psql(STABLE_SUM);
    let stable_file = c.psql("SELECT pg_relation_filepath('estable')");
    std::thread::sleep(Duration::from_millis(2100));
    let full = lab.backup();
    std::thread::sleep(Duration::from_millis(1500));
    // Between the backups: a new table, an update of existing rows and an insert.
    c.psql("CREATE TABLE nueva AS SELECT 'nueva_1'::text AS v");
    c.psql("UPDATE laboratorio_pitr SET nombre = 'registro_1b' WHERE nombre = 'registro_1'");
    let x3 = insert(c, &["registro_3"]);
    let incr = lab.backup_with(&["--type", "incr"]);
    // After the incremental: more of both.
    c.psql("INSERT INTO nueva VALUES ('nueva_2')");
    c.psql("UPDATE laboratorio_pitr SET nombre = 'registro_2b' WHERE nombre = 'registro_2'");
    let x4 = insert(c, &["registro_4"]);
    // A second incremental, on top of the first: a chain.
    let incr2 = lab.backup_with(&["--type", "incr"]);
    // Some WAL after the backup's own switch, so that this switch closes a segment (on an idle
    // server pg_switch_wal() switches nothing and names a segment that is never archived).
    c.psql("SELECT pg_logical_emit_message(false, 'pitr-test', 'after the backup')");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    let m2 = manifest(&lab, &incr2);
    assert_eq!(m2["body"]["parent"], incr.as_str(), "{m2}");
    let holder_of = |m: &Value, path: &str| -> Option<String> {
        let f = m["body"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in {m}"));
        f["stored_in"].as_str().map(str::to_string)
    };
    // Files untouched since the full backup point straight at it, not at the first incremental.
    assert_eq!(holder_of(&m2, &stable_file).as_deref(), Some(full.as_str()));

    let m = manifest(&lab, &incr);
    assert_eq!(m["body"]["kind"], "incr", "{m}");
    assert_eq!(m["body"]["parent"], full.as_str(), "{m}");
    let reused: Vec<String> = m["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stored_in"].as_str().is_some())
        .map(|f| {
            assert_eq!(f["stored_in"], full.as_str(), "{f}");
            f["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        reused.contains(&stable_file),
        "the untouched table {stable_file} should come from the full backup: {reused:?}"
    );
    let total = m["body"]["files"].as_array().unwrap().len();
    assert!(
        reused.len() * 2 > total,
        "{} of {total} reused",
        reused.len()
    );

    // Which backup each target takes.
    let never = lab.dir("never");
    for (args, want) in [
        (vec![], &incr2),
        (vec!["--target-xid", x4.as_str()], &incr),
        (vec!["--target-xid", x3.as_str()], &full),
    ] {
        let plan = lab.dry_run(&never, &args);
        assert_eq!(
            plan["plan"]["backup"]["label"],
            want.as_str(),
            "{args:?}: {plan}"
        );
    }

    // The incremental and the full, restored side by side: every file the incremental reuses
    // is the full backup's copy.
    let from_incr = lab.dir("from_incr");
    let rep = lab.restore(&from_incr, &["--backup", &incr]);
    let r = &rep["restore"];
    assert_eq!(r["plan"]["backup"]["kind"], "incr", "{r}");
    assert_eq!(r["plan"]["backup"]["parent"], full.as_str(), "{r}");
    assert_eq!(r["files_restored"].as_u64().unwrap() as usize, total, "{r}");
    let from_full = lab.dir("from_full");
    let rep = lab.restore(&from_full, &["--backup", &full]);
    assert_eq!(label_of(&rep), full);
    // (postgresql.auto.conf is rewritten by every restore, with its recovery settings.)
    for path in reused.iter().filter(|p| *p != "postgresql.auto.conf") {
        assert!(
            fs::read(from_incr.join(path)).unwrap() == fs::read(from_full.join(path)).unwrap(),
            "{path} differs between the incremental and its parent"
        );
    }
    // Files changed since the full backup are the incremental's own.
    let own_file = {
        let f = m["body"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "global/pg_control")
            .unwrap();
        assert!(f["stored_in"].is_null(), "{f}");
        f["path"].as_str().unwrap().to_string()
    };
    assert_ne!(
        fs::read(from_incr.join(&own_file)).unwrap(),
        fs::read(from_full.join(&own_file)).unwrap()
    );
    fs::remove_dir_all(&from_full).unwrap();
    fs::remove_dir_all(&from_incr).unwrap();

    // Restored and started, to the end of WAL (the second incremental is chosen, and its files
    // come from all three backups) and to a target after the first one (named explicitly).
    let all_rows = "registro_1b,registro_2b,registro_3,registro_4";
    for (name, args, want_label) in [
        ("latest", vec![], &incr2),
        (
            "named",
            vec!["--backup", incr.as_str(), "--target-xid", x4.as_str()],
            &incr,
        ),
    ] {
        let dir = lab.dir(name);
        let rep = lab.restore_start(&dir, &args);
        assert_eq!(&label_of(&rep), want_label, "{name}: {rep}");
        let want = if name == "latest" {
            "promoted"
        } else {
            "paused"
        };
        assert_eq!(rep["start"]["outcome"], want, "{name}: {rep}");
        assert_eq!(lab.psql(ROWS), all_rows, "{name}");
        assert_eq!(
            lab.psql("SELECT string_agg(v, ',' ORDER BY v) FROM nueva"),
            "nueva_1,nueva_2"
        );
        assert_eq!(lab.psql(STABLE_SUM), stable_sum, "{name}");
        lab.stop(&dir);
        fs::remove_dir_all(&dir).unwrap();
    }

    // Between the two backups: the full one, and none of what came after.
    let between = lab.dir("between");
    let rep = lab.restore_start(
        &between,
        &["--target-xid", &x3, "--target-action", "promote"],
    );
    assert_eq!(label_of(&rep), full, "{rep}");
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    // Recovery stopped with segments read ahead past the target: they went away when it ended.
    assert!(!between.join("pg_wal/pitr-spool").exists());
    assert_eq!(lab.psql(ROWS), "registro_1b,registro_2,registro_3");
    assert_eq!(lab.psql("SELECT string_agg(v, ',') FROM nueva"), "nueva_1");
    assert_eq!(lab.psql(STABLE_SUM), stable_sum);
    lab.stop(&between);

    // The full backup damaged by hand (one object it holds for the incrementals deleted): the
    // chain is refused before anything is written, naming the object, with the corrupt exit code
    // (on timeline 1: the restores above created timelines 2 and 3).
    let broken = lab.dir("broken");
    fs::create_dir_all(&broken).unwrap();
    let backup_dir = |label: &str| lab.repo.join("main/backup").join(label);
    fs::remove_file(backup_dir(&full).join("data").join(&stable_file)).unwrap();
    for label in [&incr2, &incr, &full] {
        let run = lab.refused(&broken, &["--backup", label, "--target-timeline", "1"], 5);
        assert!(
            run.stderr
                .contains(&format!("backup {label} cannot be restored"))
                && run.stderr.contains(&format!("from backup {full}"))
                && run.stderr.contains(&stable_file),
            "{}",
            run.stderr
        );
    }
    // The full backup gone altogether (as a careless `rm` would leave it): its incrementals are
    // not chosen by themselves, and naming one says which backup is gone.
    fs::remove_dir_all(backup_dir(&full)).unwrap();
    let run = lab.refused(&broken, &["--target-timeline", "1"], 4);
    assert!(
        run.stderr.contains(&format!(
            "backup {full}, which holds some of its files, is gone"
        )),
        "{}",
        run.stderr
    );
    let run = lab.refused(&broken, &["--backup", &incr2, "--target-timeline", "1"], 5);
    assert!(
        run.stderr
            .contains(&format!("backup {full} is gone from the repository")),
        "{}",
        run.stderr
    );
}
pg_test_matrix!(incremental_backup_restores_with_its_parents_files);

/// Entries below `dir` with their sizes, leaving out what an idle server may still rewrite.
fn quiet_listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    listing(dir)
        .into_iter()
        .filter(|(p, _, _)| {
            let rel = p.strip_prefix(dir).unwrap();
            !["pg_wal", "pg_stat_tmp", "pg_stat", "pg_logical", "log"]
                .iter()
                .any(|d| rel.starts_with(d))
        })
        .map(|(p, len, _)| (p, len))
        .collect()
}

/// `--force` over the directory of another cluster with stray files in it: refused while
/// that cluster's server runs (exit 4, nothing touched); once it is stopped, everything in it
/// is deleted (a stray tablespace link, not what it points to) and the backup restores cleanly.
fn force_replaces_an_old_cluster_but_not_a_running_one(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default());
    let c = &lab.c;
    c.psql(LAB_TABLE);
    insert(c, &["registro_1", "registro_2"]);
    let label = lab.backup();
    insert(c, &["registro_3"]);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();

    // An old cluster: restored, promoted onto timeline 2, written to, with stray files.
    let dir = lab.dir("old");
    let rep = lab.restore_start(&dir, &[]);
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(rep["start"]["timeline"], 2, "{rep}");
    lab.psql("INSERT INTO laboratorio_pitr (nombre) VALUES ('viejo')");
    lab.psql("CHECKPOINT");
    fs::write(dir.join("stray.txt"), "stray").unwrap();
    fs::write(dir.join("base/stray_file"), "stray").unwrap();
    fs::create_dir_all(dir.join("stray_dir/sub")).unwrap();
    fs::write(dir.join("stray_dir/sub/f"), "stray").unwrap();
    let elsewhere = lab.dir("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("keep.txt"), "precious").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("pg_tblspc/99999")).unwrap();

    // Refused while its server runs.
    let pid = fs::read_to_string(dir.join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap();
    let before = quiet_listing(&dir);
    let auto_conf = fs::read(dir.join("postgresql.auto.conf")).unwrap();
    let run = pitr(&["--repo", lab.r(), "restore", "--pgdata", s(&dir), "--force"]).expect_code(4);
    assert!(
        run.stderr
            .contains(&format!("a PostgreSQL server (pid {pid}) is running on it"))
            && run.stderr.contains("stop it first"),
        "{run:?}"
    );
    assert_eq!(
        quiet_listing(&dir),
        before,
        "a refused restore touched {dir:?}"
    );
    assert_eq!(
        fs::read(dir.join("postgresql.auto.conf")).unwrap(),
        auto_conf
    );
    assert_eq!(lab.psql("SELECT count(*) FROM laboratorio_pitr"), "4");
    lab.stop(&dir);

    // Stopped: replaced. Timeline 1 has registro_3 but not the old cluster's row.
    let rep = lab.restore_start(&dir, &["--force", "--target-timeline", "1"]);
    let r = &rep["restore"];
    assert_eq!(label_of(&rep), label);
    assert_eq!(r["plan"]["pgdata_action"], "wipe", "{r}");
    assert_eq!(r["files_reused"], 0, "{r}");
    assert!(r["entries_removed"].as_u64().unwrap() >= 20, "{r}");
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(rep["start"]["timeline"], 3, "{rep}");
    assert_eq!(lab.psql(ROWS), "registro_1,registro_2,registro_3");
    for stray in [
        "stray.txt",
        "base/stray_file",
        "stray_dir",
        "pg_tblspc/99999",
    ] {
        assert!(
            fs::symlink_metadata(dir.join(stray)).is_err(),
            "{stray} survived --force"
        );
    }
    assert_eq!(
        fs::read_to_string(elsewhere.join("keep.txt")).unwrap(),
        "precious"
    );
    // No WAL of the old cluster's timeline 2 was left behind.
    let old_wal: Vec<_> = fs::read_dir(dir.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("00000002"))
        .collect();
    assert!(old_wal.is_empty(), "{old_wal:?}");
    lab.stop(&dir);
}
pg_test_matrix!(force_replaces_an_old_cluster_but_not_a_running_one);

/// `--standby` restores a hot standby: standby.signal (no recovery.signal), `--start` reports
/// it consistent, and it keeps replaying WAL the primary archives afterwards.
fn standby_keeps_replaying_archived_wal(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default());
    let c = &lab.c;
    c.psql(LAB_TABLE);
    insert(c, &["registro_1"]);
    let label = lab.backup();
    let x2 = insert(c, &["registro_2"]);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));

    // The primary keeps running: the standby listens on another port.
    let dir = lab.dir("standby");
    let all = vec![
        "--repo",
        lab.r(),
        "--json",
        "--port",
        "5433",
        "restore",
        "--pgdata",
        s(&dir),
        "--standby",
        "--start",
        "--pg-bin",
        s(&lab.install.bindir),
        "--wait-timeout",
        "120",
    ];
    let rep = json(&pitr(&all).expect_code(0));
    assert_eq!(label_of(&rep), label);
    assert_eq!(
        rep["restore"]["plan"]["signal_file"], "standby.signal",
        "{rep}"
    );
    assert_eq!(rep["start"]["outcome"], "standby", "{rep}");
    assert_eq!(rep["start"]["server_running"], true, "{rep}");
    assert!(dir.join("standby.signal").is_file());
    assert!(!dir.join("recovery.signal").exists());
    let standby = |sql: &str| psql_port(&lab.install, &lab.sock, 5433, sql);
    assert_eq!(standby("SELECT pg_is_in_recovery()"), "t");
    // Everything archived when it started is replayed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while standby(ROWS) != "registro_1,registro_2" {
        assert!(Instant::now() < deadline, "standby has {:?}", standby(ROWS));
        std::thread::sleep(Duration::from_millis(200));
    }

    // A write on the primary reaches the standby through the repository.
    insert(c, &["registro_3"]);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while standby(ROWS) != "registro_1,registro_2,registro_3" {
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {last}: it has {:?}",
            standby(ROWS)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(standby("SELECT pg_is_in_recovery()"), "t");
    lab.stop(&dir);

    // A standby with a target: --start waits until it stops there (paused, still a standby),
    // with the target's rows and none after.
    let delayed = lab.dir("delayed");
    let rep = json(
        &pitr(&[
            "--repo",
            lab.r(),
            "--json",
            "--port",
            "5434",
            "restore",
            "--pgdata",
            s(&delayed),
            "--standby",
            "--target-xid",
            &x2,
            "--start",
            "--pg-bin",
            s(&lab.install.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(rep["start"]["outcome"], "paused", "{rep}");
    assert!(delayed.join("standby.signal").is_file());
    let delayed_sql = |sql: &str| psql_port(&lab.install, &lab.sock, 5434, sql);
    assert_eq!(delayed_sql(ROWS), "registro_1,registro_2");
    assert_eq!(delayed_sql("SELECT pg_is_in_recovery()"), "t");
    lab.stop(&delayed);
}
pg_test_matrix!(standby_keeps_replaying_archived_wal);

/// `--force` (or `--delta`) never empties a tablespace directory a running server uses: a
/// restore elsewhere while the original runs, its tablespace left at the original location,
/// is refused with exit 4 and nothing is touched.
fn force_spares_the_tablespace_of_a_running_server(pg: &PgInstall) {
    let lab = Lab::new(pg, ClusterOptions::default());
    let c = &lab.c;
    let ts = pitr_testkit::create_postgres_dir(&lab.dir("ts_live"));
    c.psql(&format!("CREATE TABLESPACE tsp LOCATION '{}'", s(&ts)));
    c.psql("CREATE TABLE t_ts (id int) TABLESPACE tsp");
    c.psql("INSERT INTO t_ts SELECT generate_series(1, 100)");
    lab.backup();
    c.psql("CHECKPOINT");
    let dir = lab.dir("copy");
    for flag in ["--force", "--delta"] {
        let before = listing(&ts);
        let run = pitr(&["--repo", lab.r(), "restore", "--pgdata", s(&dir), flag]).expect_code(4);
        assert!(
            run.stderr.contains(s(&ts))
                && run.stderr.contains("in use by a running PostgreSQL server")
                && run.stderr.contains(s(c.datadir()))
                && run.stderr.contains("--tablespace-map"),
            "{flag}: {run:?}"
        );
        assert_eq!(listing(&ts), before, "{flag} touched the live tablespace");
        assert!(!dir.exists());
    }
    assert_eq!(c.psql("SELECT count(*) FROM t_ts"), "100");
}
pg_test_matrix!(force_spares_the_tablespace_of_a_running_server);

/// The seeds' contingency plan: full backups, keep the newest two. `pitr expire` removes the
/// oldest backup and the WAL only it needed (on a 1 MB WAL segment cluster: nothing assumes
/// 16 MB); what stays restores to the end of WAL, a target only the removed backup could reach is
/// refused, and `verify` passes. `--dry-run` removes nothing; the policy can come from the config
/// file.
fn expire_keeps_what_recovery_needs(pg: &PgInstall) {
    let lab = Lab::new(
        pg,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            ..Default::default()
        },
    );
    let c = &lab.c;
    c.psql(LAB_TABLE);
    insert(c, &["registro_1"]);
    let first = lab.backup();
    let x2 = insert(c, &["registro_2"]);
    c.switch_wal();
    let second = lab.backup();
    insert(c, &["registro_3"]);
    c.switch_wal();
    let third = lab.backup();
    insert(c, &["registro_4"]);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();
    let info = || json(&pitr(&["--repo", lab.r(), "--json", "info"]).expect_code(0));
    let first_segment = |v: &Value| {
        v["clusters"][0]["timelines"][0]["first"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string()
    };
    let before = info();

    let dry = json(
        &pitr(&[
            "--repo",
            lab.r(),
            "--json",
            "expire",
            "--retain-full",
            "2",
            "--dry-run",
        ])
        .expect_code(0),
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["expired"][0]["label"], first.as_str(), "{dry}");
    assert_eq!(dry["expired"].as_array().unwrap().len(), 1, "{dry}");
    assert!(dry["wal_files"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(info(), before, "--dry-run changed the repository");

    // The policy from the config file.
    let conf = lab.dir("pitr.toml");
    fs::write(&conf, "retain_full = 2\n").unwrap();
    let done =
        json(&pitr(&["--repo", lab.r(), "--config", s(&conf), "--json", "expire"]).expect_code(0));
    assert_eq!(done["expired"], dry["expired"], "{done}");
    assert_eq!(done["wal_files"], dry["wal_files"]);
    let kept_from = done["wal_kept_from"].as_str().unwrap().to_string();
    let after = info();
    let labels: Vec<&str> = after["clusters"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec![second.as_str(), third.as_str()], "{after}");
    // The recovery window now starts at the oldest backup kept.
    assert_eq!(
        before["clusters"][0]["window"]["from"]["backup"],
        first.as_str()
    );
    assert_eq!(
        after["clusters"][0]["window"]["from"]["backup"],
        second.as_str(),
        "{after}"
    );
    let text = pitr(&["--repo", lab.r(), "info"]).expect_code(0).stdout;
    assert!(
        text.contains("recovery window: from ") && text.contains(&second),
        "{text}"
    );
    assert_eq!(first_segment(&after), kept_from, "{after}");
    assert!(first_segment(&before) < kept_from);
    assert!(!lab.repo.join("main/backup").join(&first).exists());
    pitr(&["--repo", lab.r(), "verify"]).expect_code(0);

    // A target only the removed backup could reach is refused, with the window that is left.
    let dir = lab.dir("restored");
    let run = lab.refused(&dir, &["--target-xid", &x2], 4);
    assert!(run.stderr.contains("reachable"), "{}", run.stderr);
    // What stays restores, through the WAL that stayed, from the oldest backup kept.
    let rep = lab.restore_start(&dir, &["--backup", &second]);
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(
        lab.psql(ROWS),
        "registro_1,registro_2,registro_3,registro_4"
    );
    lab.stop(&dir);

    // Nothing more to do; a policy that would keep no full backup is refused.
    let again =
        json(&pitr(&["--repo", lab.r(), "--json", "expire", "--retain-full", "2"]).expect_code(0));
    assert_eq!(again["expired"].as_array().unwrap().len(), 0);
    assert_eq!(again["wal_files"], 0);
    let run = pitr(&["--repo", lab.r(), "expire", "--retain-full", "0"]).expect_code(2);
    assert!(run.stderr.contains("at least 1"), "{}", run.stderr);
    let run = pitr(&["--repo", lab.r(), "expire"]).expect_code(2);
    assert!(run.stderr.contains("--retain-full"), "{}", run.stderr);
}
pg_test_matrix!(expire_keeps_what_recovery_needs);
