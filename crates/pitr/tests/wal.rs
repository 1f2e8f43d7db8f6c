//! `pitr wal log` / `pitr wal incidents` against real PostgreSQL 14–18: the transaction that
//! dropped a table is found in the archived WAL, named through the base backup's catalog (the
//! table no longer exists), and the suggested `pitr restore` brings the table back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use pitr_testkit::{as_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};

/// The transactions of a `wal log --json` report.
fn transactions(log: &serde_json::Value) -> Vec<&serde_json::Value> {
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "transaction")
        .collect()
}

/// Runs `body` in a transaction of its own and returns its xid.
fn committed_xid(c: &Cluster, body: &str) -> u32 {
    let out = c.psql_script(&format!(
        "BEGIN;\nSELECT txid_current();\n{body}\nCOMMIT;\n"
    ));
    out.lines()
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no xid in {out:?}"))
        .parse()
        .unwrap()
}

/// A table filled before a base backup and dropped afterwards, with writes elsewhere before
/// and after the drop and a mass DELETE: `wal incidents` names the dropped table (from the
/// backup's pg_class: it no longer exists) and its transaction, and flags the DELETE above
/// `--threshold`; a table created after the backup, renamed and dropped is named from the
/// WAL; one created and dropped in a single transaction is not an incident; `wal log` shows commits with their row counts, the restore point and the
/// checkpoint, named by the running server when given; the suggested `--target-xid …
/// --target-exclusive` restore brings the table back with all its rows and keeps the writes
/// made before the drop.
fn incident_names_dropped_table_and_restore_undoes_it(install: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    let port = c.port().to_string();
    let sock = c.socket_dir().to_path_buf();
    c.psql("CREATE SCHEMA shop");
    c.psql("CREATE TABLE shop.orders (id int PRIMARY KEY, note text)");
    c.psql("INSERT INTO shop.orders SELECT g, 'order ' || g FROM generate_series(1, 500) g");
    c.psql("CREATE TABLE keep (id int, phase text)");
    c.psql("INSERT INTO keep SELECT g, 'before backup' FROM generate_series(1, 10) g");
    c.psql("CREATE TABLE bulk (id int)");
    c.psql("INSERT INTO bulk SELECT g FROM generate_series(1, 3000) g");
    c.psql("CREATE TABLE emptied (id int)");
    c.psql("INSERT INTO emptied SELECT g FROM generate_series(1, 50) g");
    // With a TOAST table that stays empty: VACUUM FULL replaces it by an empty file too.
    c.psql("CREATE TABLE compacted (id int, note text)");
    c.psql("INSERT INTO compacted SELECT g, 'n' FROM generate_series(1, 50) g");
    c.psql("CREATE TABLE legacy (id int, note text)");
    c.psql("INSERT INTO legacy SELECT g, 'old ' || g FROM generate_series(1, 20) g");
    let label = pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "backup",
        "-h",
        s(&sock),
        "-p",
        &port,
        "-U",
        "postgres",
    ])
    .expect_code(0)
    .stdout
    .trim()
    .to_string();

    c.psql("INSERT INTO keep SELECT g, 'before drop' FROM generate_series(11, 25) g");
    c.psql("DELETE FROM bulk WHERE id <= 1500");
    c.psql("TRUNCATE emptied");
    c.psql("VACUUM FULL compacted");
    // Created and dropped in one transaction: nothing existing was destroyed.
    c.psql_script("BEGIN;\nCREATE TABLE scratch (id int, t text);\nDROP TABLE scratch;\nCOMMIT;\n");
    // Created after the backup, so named only in the WAL: under a first name, then renamed.
    c.psql("CREATE TABLE borrador (id int PRIMARY KEY, v text)");
    c.psql("INSERT INTO borrador SELECT g, 'fila ' || g FROM generate_series(1, 100) g");
    c.psql("ALTER TABLE borrador RENAME TO nueva");
    c.psql("SELECT pg_create_restore_point('before_drop')");
    let xid = committed_xid(&c, "DROP TABLE shop.orders;");
    c.psql("INSERT INTO keep SELECT g, 'after drop' FROM generate_series(26, 40) g");
    let xid_nueva = committed_xid(&c, "DROP TABLE nueva;");
    // A migration: the new table is created (and filled) in the transaction that drops the
    // old one. The new file must not pass for the old table's rewrite.
    let xid_legacy = committed_xid(
        &c,
        "CREATE TABLE modern AS SELECT * FROM legacy;\nDROP TABLE legacy;",
    );
    c.psql("CHECKPOINT");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)), "{last}");
    let r = s(&repo);

    // Incidents, named from the backup only (no server given).
    let run = pitr(&["--repo", r, "--json", "wal", "incidents"]).expect_code(0);
    let rep = json(&run);
    let incidents = rep["incidents"].as_array().unwrap();
    let drop = incidents
        .iter()
        .find(|i| i["transaction"]["xid"] == xid)
        .unwrap_or_else(|| panic!("xid {xid} not among the incidents: {rep:#}"));
    assert!(
        drop["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "DROP shop.orders"),
        "{drop:#}"
    );
    let orders = drop["transaction"]["relations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop.orders")
        .unwrap_or_else(|| panic!("{drop:#}"));
    assert_eq!(orders["dropped"], true);
    assert_eq!(orders["kind"], "r");
    assert_eq!(orders["name_from"], format!("backup {label}"));
    assert_eq!(
        drop["transaction"]["database"]["name"], "postgres",
        "{drop:#}"
    );
    let by_xid = drop["restore_by_xid"].as_str().unwrap();
    assert_eq!(
        by_xid,
        format!("pitr --repo {r} restore --pgdata NEWDIR --target-xid {xid} --target-exclusive --target-action promote --archive-mode off")
    );
    let commit_lsn = drop["transaction"]["lsn"].as_str().unwrap();
    assert_eq!(
        drop["restore_by_lsn"],
        format!(
            "pitr --repo {r} restore --pgdata NEWDIR --target-lsn {commit_lsn} --target-exclusive --target-action promote --archive-mode off"
        )
    );
    let mass_delete = incidents
        .iter()
        .find(|i| {
            i["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "deleted 1500 rows from public.bulk")
        })
        .unwrap_or_else(|| panic!("no mass delete incident: {rep:#}"));
    assert!(mass_delete["transaction"]["lsn"].as_str().unwrap() != commit_lsn);
    // TRUNCATE is an incident, VACUUM FULL (a rewrite, the new file is filled) is not.
    let reasons: Vec<&str> = incidents
        .iter()
        .flat_map(|i| i["reasons"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"TRUNCATE public.emptied"), "{reasons:?}");
    assert!(
        !reasons.iter().any(|r| r.contains("compacted")),
        "{reasons:?}"
    );
    // The table created after the backup is named from the WAL (its pg_class rows), under
    // the name it had when dropped; its suggested restore targets its own transaction.
    let nueva = incidents
        .iter()
        .find(|i| i["transaction"]["xid"] == xid_nueva)
        .unwrap_or_else(|| panic!("xid {xid_nueva} not among the incidents: {rep:#}"));
    assert_eq!(
        nueva["reasons"],
        serde_json::json!(["DROP public.nueva"]),
        "{nueva:#}"
    );
    let rel = nueva["transaction"]["relations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "public.nueva")
        .unwrap();
    assert_eq!(rel["kind"], "r");
    assert!(
        rel["name_from"].as_str().unwrap().starts_with("wal "),
        "{rel:#}"
    );
    assert!(nueva["restore_by_xid"]
        .as_str()
        .unwrap()
        .contains(&format!("--target-xid {xid_nueva} --target-exclusive")));
    // The table created and dropped in one transaction destroyed nothing: not an incident, on
    // 14 too (where its first file is logged before the transaction has an xid, but the
    // pg_class row it inserted says the transaction created it).
    assert!(!reasons.iter().any(|r| r.contains("base/")), "{reasons:?}");
    let migration = incidents
        .iter()
        .find(|i| i["transaction"]["xid"] == xid_legacy)
        .unwrap_or_else(|| panic!("xid {xid_legacy} not among the incidents: {rep:#}"));
    assert_eq!(
        migration["reasons"],
        serde_json::json!(["DROP public.legacy"]),
        "{migration:#}"
    );
    assert_eq!(incidents.len(), 5, "{reasons:?}");
    // At a threshold of 1500 the DELETE of 1500 rows is not an incident; the others still are.
    let rep = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "wal",
            "incidents",
            "--threshold",
            "1500",
        ])
        .expect_code(0),
    );
    assert_eq!(rep["incidents"].as_array().unwrap().len(), 4, "{rep:#}");
    // People's output names the table and prints the command.
    let text = pitr(&["--repo", r, "wal", "incidents"])
        .expect_code(0)
        .stdout;
    assert!(
        text.contains("DROP shop.orders") && text.contains(by_xid),
        "{text}"
    );

    // The log, named by the running server where the relation still exists.
    let log = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "wal",
            "log",
            "-h",
            s(&sock),
            "-p",
            &port,
            "-U",
            "postgres",
        ])
        .expect_code(0),
    );
    assert!(
        log["scan"]["warnings"].as_array().unwrap().is_empty(),
        "{:#}",
        log["scan"]
    );
    let txns = transactions(&log);
    let keep_inserts = |phase_rows: u64| {
        txns.iter().any(|t| {
            t["outcome"] == "commit"
                && t["relations"].as_array().unwrap().iter().any(|r| {
                    r["name"] == "public.keep"
                        && r["inserts"] == phase_rows
                        && r["name_from"] == "live"
                })
        })
    };
    assert!(keep_inserts(15), "the 15 rows inserted before the drop");
    assert!(
        txns.iter()
            .any(|t| t["xid"] == xid && t["lsn"] == commit_lsn),
        "the drop"
    );
    let events = log["events"].as_array().unwrap();
    let rp = events
        .iter()
        .position(|e| e["type"] == "restore_point" && e["name"] == "before_drop")
        .expect("restore point");
    let dropped_at = events
        .iter()
        .position(|e| e["type"] == "transaction" && e["xid"] == xid)
        .unwrap();
    assert!(rp < dropped_at, "WAL order");
    assert!(events.iter().any(|e| e["type"] == "checkpoint"));
    // A range: from the restore point on, the backup's inserts are not in it.
    let rp_lsn = events[rp]["lsn"].as_str().unwrap();
    let tail = json(&pitr(&["--repo", r, "--json", "wal", "log", "--from", rp_lsn]).expect_code(0));
    let tail_txns = transactions(&tail);
    assert!(tail_txns.iter().any(|t| t["xid"] == xid));
    assert!(tail_txns
        .iter()
        .all(|t| t["xid"].as_u64().unwrap() >= u64::from(xid)));
    let text = pitr(&["--repo", r, "wal", "log", "--from", rp_lsn])
        .expect_code(0)
        .stdout;
    assert!(
        text.contains("before_drop") && text.contains("DROP"),
        "{text}"
    );
    // The VACUUM FULL shows as a rewrite in the log.
    assert!(
        txns.iter().any(|t| t["relations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "public.compacted" && r["rewritten"] == true)),
        "VACUUM FULL compacted"
    );
    // A time range: from the drop's commit time on, on timeline 1 given explicitly.
    let drop_time = drop["transaction"]["time"].as_str().unwrap();
    let since = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "wal",
            "log",
            "--from",
            drop_time,
            "--timeline",
            "1",
        ])
        .expect_code(0),
    );
    let since_txns = transactions(&since);
    assert_eq!(since_txns[0]["xid"], xid, "{since:#}");
    assert!(since["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["type"] != "restore_point"));
    let bad = pitr(&["--repo", r, "wal", "log", "--from", "yesterday"]).expect_code(2);
    assert!(bad.stderr.contains("--from"), "{bad:?}");
    pitr(&["--repo", r, "wal", "log", "--timeline", "7"]).expect_code(2);

    // Undo it: the suggested restore, into a fresh directory, started.
    c.stop();
    let target = Cluster::empty(install, ClusterOptions::default());
    let cmd = by_xid.replace("NEWDIR", s(target.datadir()));
    let mut args: Vec<&str> = cmd.split(' ').skip(1).collect();
    args.extend([
        "--start",
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "180",
        "--json",
    ]);
    let res = pitr(&args);
    assert_eq!(res.code, 0, "restore failed: {res:?}");
    let rep = json(&res);
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep:#}");
    assert_eq!(
        psql_port(
            c.install(),
            &sock,
            c.port(),
            "SELECT count(*), min(id), max(id) FROM shop.orders"
        ),
        "500|1|500"
    );
    assert_eq!(
        psql_port(c.install(), &sock, c.port(), "SELECT count(*) FROM keep"),
        "25",
        "writes before the drop kept, writes after it not replayed"
    );
    assert_eq!(
        psql_port(c.install(), &sock, c.port(), "SELECT count(*) FROM bulk"),
        "1500"
    );
    assert_eq!(
        psql_port(c.install(), &sock, c.port(), "SELECT count(*) FROM nueva"),
        "100",
        "created after the backup, dropped after the target"
    );
    // The suggested undo restores with --archive-mode off: the promoted copy writes on
    // timeline 2 but archives nothing, so the repository still means production's timeline 1
    // (its latest timeline still shows the DROP, and the suggestion needs no --target-timeline).
    assert_eq!(
        psql_port(c.install(), &sock, c.port(), "SHOW archive_mode"),
        "off"
    );
    psql_port(
        c.install(),
        &sock,
        c.port(),
        "INSERT INTO keep VALUES (100, 'timeline 2')",
    );
    let seg2 = psql_port(
        c.install(),
        &sock,
        c.port(),
        "SELECT pg_walfile_name(pg_current_wal_lsn())",
    );
    assert!(seg2.starts_with("00000002"), "{seg2}");
    psql_port(c.install(), &sock, c.port(), "SELECT pg_switch_wal()");
    assert_eq!(
        psql_port(
            c.install(),
            &sock,
            c.port(),
            "SELECT archived_count + failed_count FROM pg_stat_archiver"
        ),
        "0"
    );
    assert!(!repo.join("main/wal/00000002").exists());
    let after = json(&pitr(&["--repo", r, "--json", "wal", "incidents"]).expect_code(0));
    assert_eq!(after["scan"]["timeline"], 1, "{:#}", after["scan"]);
    let again = after["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["transaction"]["xid"] == xid)
        .unwrap_or_else(|| panic!("{after:#}"));
    assert!(
        again["restore_by_xid"]
            .as_str()
            .unwrap()
            .ends_with("--target-action promote --archive-mode off"),
        "{again:#}"
    );
    let mut stop = Command::new(install.bin("pg_ctl"));
    stop.arg("-D")
        .arg(target.datadir())
        .args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut stop);
    assert!(stop.output().unwrap().status.success());
}
pg_test_matrix!(incident_names_dropped_table_and_restore_undoes_it);
