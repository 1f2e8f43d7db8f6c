//! Block-level incremental backups against real PostgreSQL 14–18: a full backup, then
//! incrementals that store only the changed pages of relation files (found through the WAL
//! summaries on 17+, by every page's LSN before), restored from the chain and compared row for
//! row (and with pg_amcheck) with the source; a broken chain is refused before the destination
//! is touched, a damaged page is caught by verify and by restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use pitr_testkit::{as_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};
use serde_json::Value;

/// Tables compared between the source and the restored server.
const TABLES: &[&str] = &[
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
    "nueva",
    "encoge",
];

/// Count and digest of every row of each table.
fn digests(psql: impl Fn(&str) -> String) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            psql(&format!(
                "SELECT '{t}:' || count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
            ))
        })
        .collect()
}

fn manifest(repo: &Path, label: &str) -> Value {
    let p = repo.join("main/backup").join(label).join("backup.json");
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn file_entry<'a>(m: &'a Value, path: &str) -> &'a Value {
    m["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the manifest"))
}

/// Bytes a backup stored itself (files reused whole from a parent name it in `stored_in`).
fn stored_size(m: &Value) -> u64 {
    m["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stored_in"].is_null())
        .map(|f| f["stored_size"].as_u64().unwrap())
        .sum()
}

/// The five files a backup stored most bytes of, for messages.
fn largest(m: &Value) -> Vec<(String, u64, bool)> {
    let mut v: Vec<(String, u64, bool)> = m["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stored_in"].is_null())
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["stored_size"].as_u64().unwrap(),
                f["blocks"].is_object(),
            )
        })
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v.truncate(5);
    v
}

fn backup(c: &Cluster, repo: &Path, args: &[&str]) -> (String, Run) {
    let sock = c.socket_dir().to_path_buf();
    let mut all = vec![
        "--repo",
        s(repo),
        "backup",
        "-h",
        s(&sock),
        "-p",
        "5432",
        "-U",
        "postgres",
    ];
    all.extend_from_slice(args);
    let run = pitr_as_postgres(&all).expect_code(0);
    (run.stdout.trim().to_string(), run)
}

/// Every entry below `dir` (empty when it does not exist).
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// Full, 1% of pgbench_accounts' pages updated, incremental; then a relation truncated by
/// VACUUM, one extended, one TRUNCATEd (new file) and a new table, incremental again. The
/// incrementals store changed pages only, far less than the full; the last one restores (its
/// files rebuilt from all three backups) to the source's rows, and pg_amcheck finds nothing.
/// A damaged delta is reported by verify and refused by restore; with its parent gone, the
/// last incremental is refused before the destination is touched.
///
/// On 17+ the server runs with `summarize_wal = on`: both incrementals read only the pages the
/// WAL summaries name; then, with summarize_wal turned off, a third one falls back to reading
/// every page's LSN on top of them (its files' BLAKE3, checked by the restore, shows the
/// summarized deltas rebuilt the right pages), and that chain is the one restored. Before 17,
/// the fallback is said in the backup's output.
fn block_incremental_restores_row_for_row_from_the_chain(pg: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    let summaries = pg.major >= 17;
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let mut opts = ClusterOptions::default().set("autovacuum", "off");
    if summaries {
        opts = opts.set("summarize_wal", "on");
    }
    let c = Cluster::init(
        pg,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "")),
            data_checksums: true,
            ..opts
        },
    );
    c.start();
    c.pgbench_init(2);
    // pg_amcheck where the install has it (some packaged builds lack the contrib modules).
    let amcheck = pg.bin("pg_amcheck").exists() && c.try_psql("CREATE EXTENSION amcheck").is_ok();
    c.psql("CREATE TABLE encoge AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");
    c.psql("VACUUM (FREEZE, ANALYZE)");
    c.psql("CHECKPOINT");
    let accounts = c.psql("SELECT pg_relation_filepath('pgbench_accounts')");
    let pages: u64 = c
        .psql("SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'")
        .parse()
        .unwrap();
    let (full, _) = backup(&c, &repo, &[]);

    // About 1% of the accounts' pages (one row in every hundredth page).
    c.psql(&format!(
        "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % {} = 1",
        61 * 100
    ));
    let (incr1, run) = backup(&c, &repo, &["--type", "incr"]);
    assert!(run.stderr.contains("changed pages"), "{}", run.stderr);
    let how = match summaries {
        true => "changed pages from 1 WAL summaries of timeline 1".to_string(),
        false => format!(
            "reading every page's LSN: PostgreSQL {} has no WAL summaries",
            pg.major
        ),
    };
    assert!(run.stderr.contains(&how), "{how}: {}", run.stderr);
    let (mf, m1) = (manifest(&repo, &full), manifest(&repo, &incr1));
    let f1 = file_entry(&m1, &accounts);
    let layers = &f1["blocks"];
    assert_eq!(layers["base"]["label"], full.as_str(), "{f1}");
    assert_eq!(layers["block_size"], 8192, "{f1}");
    let delta = &layers["deltas"][0];
    assert_eq!(delta["label"], incr1.as_str());
    let changed: u64 = delta["pages"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert!(
        changed >= 1 && changed * 20 < pages,
        "{changed} of {pages} pages stored: {f1}"
    );
    let full_accounts = file_entry(&mf, &accounts)["stored_size"].as_u64().unwrap();
    assert!(
        f1["stored_size"].as_u64().unwrap() * 10 < full_accounts,
        "accounts: incremental {f1} vs full {full_accounts}"
    );
    // A third, not a fifth as before bundles: relation files under BUNDLE_LIMIT (128 KiB) are
    // bundled in the full and never block bases, so the small catalogs an incremental finds
    // changed (about 0.3 MB compressed here, over three databases) are stored whole again.
    assert!(
        stored_size(&m1) * 3 < stored_size(&mf),
        "incremental stores {} bytes, the full {}; largest: {:?}",
        stored_size(&m1),
        stored_size(&mf),
        largest(&m1)
    );

    // A relation truncated in place (VACUUM cuts its empty tail), one extended, one replaced
    // by TRUNCATE (a new file), a new table, more updates.
    c.psql("DELETE FROM encoge WHERE g > 5000");
    c.psql("VACUUM encoge");
    let encoge = c.psql("SELECT pg_relation_filepath('encoge')");
    c.psql("INSERT INTO pgbench_history SELECT 1, 1, g, g, now(), 'x' FROM generate_series(1, 20000) g");
    c.psql("TRUNCATE pgbench_tellers");
    c.psql("INSERT INTO pgbench_tellers SELECT g, 1, g * 3, 'after' FROM generate_series(1, 20) g");
    c.psql("CREATE TABLE nueva AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000) g");
    c.psql("UPDATE pgbench_accounts SET abalance = abalance - 3 WHERE aid % 9000 = 5");
    let (incr2, run) = backup(&c, &repo, &["--type", "incr"]);
    let how = if summaries {
        "WAL summaries of timeline 1"
    } else {
        "every page's LSN"
    };
    assert!(run.stderr.contains(how), "{how}: {}", run.stderr);
    let m2 = manifest(&repo, &incr2);
    assert_eq!(m2["body"]["parent"], incr1.as_str());
    let f2 = file_entry(&m2, &accounts);
    assert_eq!(f2["blocks"]["deltas"].as_array().unwrap().len(), 2, "{f2}");
    let e2 = file_entry(&m2, &encoge);
    assert_eq!(e2["blocks"]["base"]["label"], full.as_str(), "{e2}");
    assert!(
        e2["size"].as_u64().unwrap() * 2 < file_entry(&mf, &encoge)["size"].as_u64().unwrap(),
        "encoge was truncated by VACUUM: {e2}"
    );
    // On 17+, summaries turned off: the next incremental scans pages on top of the summarized
    // ones, and is the one restored.
    let target = if summaries {
        assert_eq!(f2["blake3"], "", "read through summaries: {f2}");
        c.psql("ALTER SYSTEM SET summarize_wal = off");
        c.psql("SELECT pg_reload_conf()");
        c.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 20000 = 9");
        let (incr3, run) = backup(&c, &repo, &["--type", "incr"]);
        assert!(
            run.stderr.contains("summarize_wal is off"),
            "{}",
            run.stderr
        );
        let f3 = file_entry(&manifest(&repo, &incr3), &accounts).clone();
        assert_eq!(f3["blocks"]["deltas"].as_array().unwrap().len(), 3, "{f3}");
        assert_ne!(f3["blake3"], "", "read whole by the scan: {f3}");
        incr3
    } else {
        incr2.clone()
    };
    c.psql("SELECT pg_logical_emit_message(false, 'pitr-test', 'after the backups')");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    let want = digests(|q| c.psql(q));
    c.stop();
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);

    // The last incremental, restored and started: the same rows, and pg_amcheck is content.
    let dir = scratch.path().join("restored");
    let mut args = vec!["--repo", s(&repo), "--json", "restore", "--pgdata", s(&dir)];
    args.extend_from_slice(&["--backup", &target, "--start", "--pg-bin", s(&pg.bindir)]);
    args.extend_from_slice(&["--wait-timeout", "120", "--archive-mode", "off"]);
    let rep = json(&pitr(&args).expect_code(0));
    assert_eq!(rep["restore"]["plan"]["backup"]["label"], target.as_str());
    let sock = c.socket_dir().to_path_buf();
    let got = digests(|q| psql_port(pg, &sock, 5432, q));
    assert_eq!(got, want);
    if amcheck {
        let mut cmd = Command::new(pg.bin("pg_amcheck"));
        cmd.args([
            "-h",
            s(&sock),
            "-p",
            "5432",
            "-U",
            "postgres",
            "--all",
            "--heapallindexed",
        ]);
        as_postgres(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "pg_amcheck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!(
            "PostgreSQL {}: no pg_amcheck/amcheck here, rows compared only",
            pg.major
        );
    }
    let mut stop = Command::new(pg.bin("pg_ctl"));
    stop.arg("-D").arg(&dir).args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut stop);
    assert!(stop.output().unwrap().status.success());
    fs::remove_dir_all(&dir).unwrap();

    // A damaged page in the newest delta: verify reports it, restore refuses the file.
    let delta_obj = repo
        .join("main/backup")
        .join(&incr2)
        .join("data")
        .join(&accounts);
    let good = fs::read(&delta_obj).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    fs::write(&delta_obj, &bad).unwrap();
    let run = pitr(&["--repo", s(&repo), "verify"]);
    assert_ne!(run.code, 0, "verify missed a damaged delta: {}", run.stdout);
    assert!(
        run.stdout.contains(&accounts) || run.stderr.contains(&accounts),
        "{run:?}"
    );
    let dir = scratch.path().join("damaged");
    let run = pitr(&[
        "--repo",
        s(&repo),
        "restore",
        "--pgdata",
        s(&dir),
        "--backup",
        &incr2,
    ])
    .expect_code(5);
    assert!(run.stderr.contains(&accounts), "{}", run.stderr);
    fs::write(&delta_obj, &good).unwrap();

    // The middle of the chain gone: refused before the destination is touched.
    let dir = scratch.path().join("never");
    fs::create_dir_all(&dir).unwrap();
    let aside = scratch.path().join("aside");
    fs::rename(repo.join("main/backup").join(&incr1), &aside).unwrap();
    let before = listing(&dir);
    let run = pitr(&[
        "--repo",
        s(&repo),
        "restore",
        "--pgdata",
        s(&dir),
        "--backup",
        &incr2,
    ]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains(&incr1), "{}", run.stderr);
    assert_eq!(listing(&dir), before, "a refused restore touched {dir:?}");
    fs::rename(&aside, repo.join("main/backup").join(&incr1)).unwrap();
}
pg_test_matrix!(block_incremental_restores_row_for_row_from_the_chain);
