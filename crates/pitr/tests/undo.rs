//! `pitr undo` against real PostgreSQL 14–18, one server per version for every case: a dropped
//! table (index, foreign key to it, sequence-backed id, grants, comment) comes back whole while
//! rows written since in other tables stay; the rows a mass DELETE and a mass UPDATE changed
//! come back beside the live table; only the affected database of three is restored (sparse
//! files for the others: the scratch directory takes far less than a full restore); a taken
//! name is refused and `--as` works; an undo killed with the scratch server running leaves the
//! live cluster untouched and nothing running, and the next undo cleans up after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{pg_test_matrix, ClusterOptions, PgInstall};

/// Runs a statement in database `db` and returns the xid of its transaction (the last line).
fn xid_of(c: &pitr_testkit::Cluster, db: &str, sql: &str) -> String {
    let out = c.psql_db(db, &format!("{sql}; SELECT txid_current()"));
    out.lines().last().unwrap().trim().to_string()
}

/// Scratch directories (and running servers) of undos under `dir`.
fn scratch_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn undoes_drops_deletes_and_updates_in_place(install: &PgInstall) {
    let started = Instant::now();
    let (scratch, repo, c) = archiving_cluster(install, "", ClusterOptions::default());
    // Three databases: only `shop` is damaged; the other two hold data a full restore writes.
    for db in ["shop", "other1", "other2"] {
        // FILE_COPY (15+; 14's only way): a checkpoint, not the template copied into the WAL.
        let strategy = if install.major >= 15 {
            " STRATEGY FILE_COPY"
        } else {
            ""
        };
        c.psql(&format!("CREATE DATABASE {db}{strategy}"));
    }
    for db in ["other1", "other2"] {
        c.psql_db(db, "CREATE TABLE filler AS SELECT g AS i, repeat('x', 200) AS pad FROM generate_series(1, 5000) g");
    }
    c.psql("CREATE ROLE reader");
    c.psql_script(
        "\\c shop\n\
         CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 50) g;\n\
         CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, amount int CHECK (amount > 0), note text DEFAULT 'none');\n\
         CREATE INDEX orders_customer_idx ON orders (customer_id);\n\
         COMMENT ON TABLE orders IS 'the orders';\n\
         GRANT SELECT ON orders TO reader;\n\
         INSERT INTO orders (customer_id, amount) SELECT 1 + g % 50, g FROM generate_series(1, 3000) g;\n\
         CREATE TABLE order_items (id serial PRIMARY KEY, order_id int REFERENCES orders, qty int);\n\
         INSERT INTO order_items (order_id, qty) SELECT 1 + g % 3000, 1 FROM generate_series(1, 500) g;\n\
         CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);\n\
         INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 1000) g;\n\
         CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL);\n\
         INSERT INTO ledger SELECT g, g FROM generate_series(1, 1000) g;\n",
    );
    let orders_before = c.psql_db(
        "shop",
        "SELECT count(*) || ' ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o",
    );
    pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    eprintln!(
        "set up and backed up: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The incidents, with work after each that must survive the undo.
    // One transaction: a mass DELETE of one table and a mass UPDATE of another.
    let x_mass = xid_of(
        &c,
        "shop",
        "DELETE FROM accounts WHERE id <= 300; UPDATE ledger SET amount = 0 WHERE id > 100",
    );
    let x_drop = xid_of(&c, "shop", "DROP TABLE orders CASCADE");
    c.psql_db(
        "shop",
        "INSERT INTO order_items (order_id, qty) SELECT 9999, 2 FROM generate_series(1, 25)",
    );
    c.psql_db(
        "other1",
        "INSERT INTO filler SELECT 0, 'after' FROM generate_series(1, 10)",
    );
    let items_after = c.psql_db(
        "shop",
        "SELECT count(*) || ' ' || md5(string_agg(i::text, ',' ORDER BY id)) FROM order_items i",
    );
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));

    // `pitr wal incidents` suggests the undo first.
    let inc = pitr_on(&c, &repo, "wal", &["incidents", "-d", "shop"]).expect_code(0);
    assert!(
        inc.stdout
            .contains(&format!("undo {x_drop} --table public.orders")),
        "{}",
        inc.stdout
    );

    let parent = scratch.path().join("undo");
    std::fs::create_dir(&parent).unwrap();
    pitr_testkit::chown_to_postgres(&parent);
    let port = c.port().to_string();
    let undo = |extra: &[&str], code: i32| {
        let mut args = vec![
            "--repo",
            s(&repo),
            "undo",
            "-h",
            s(c.socket_dir()),
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "shop",
            "--scratch",
            s(&parent),
            "--pg-bin",
            s(&install.bindir),
        ];
        // JSON unless asked for the text ("--text", not passed on).
        if !extra.contains(&"--text") {
            args.push("--json");
        }
        args.extend(extra.iter().filter(|a| **a != "--text"));
        let t0 = Instant::now();
        let r = pitr_as_postgres(&args).expect_code(code);
        eprintln!("undo {extra:?}: {:.1} s", t0.elapsed().as_secs_f64());
        assert!(
            scratch_entries(&parent).is_empty(),
            "scratch left behind: {:?}",
            scratch_entries(&parent)
        );
        r
    };

    // --dry-run: the plan, nothing restored; only shop's files (and the cluster's) restored.
    let plan = json(&undo(
        &[&x_drop, "--table", "public.orders", "--dry-run"],
        0,
    ));
    assert_eq!(plan["outcome"], "planned", "{plan}");
    let p = &plan["plan"];
    assert_eq!(p["database"]["name"], "shop");
    assert_eq!(p["tables"][0]["mode"], "dropped");
    assert_eq!(
        p["left_out_databases"].as_array().unwrap().len(),
        2,
        "{plan}"
    );
    let (part, full) = (
        p["restore_bytes"].as_u64().unwrap(),
        p["full_restore_bytes"].as_u64().unwrap(),
    );
    let others: u64 = c
        .psql("SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname LIKE 'other%'")
        .parse()
        .unwrap();
    assert!(
        part + others * 9 / 10 < full,
        "restore {part} of {full}, other databases {others}"
    );
    assert!(p["disk_free"].as_u64().unwrap() > p["disk_needed"].as_u64().unwrap());

    // DROP TABLE undone: rows, indexes, constraints, default, comment, grants, sequence.
    let r = json(&undo(&[&x_drop, "--table", "public.orders"], 0));
    assert_eq!(r["outcome"], "undone", "{r}");
    let used = r["scratch_bytes"].as_u64().unwrap();
    eprintln!(
        "PG {}: scratch {used} bytes on disk, restore {part}, full restore {full}",
        install.major
    );
    assert!(
        used < full,
        "scratch took {used} bytes, a full restore writes {full}"
    );
    assert_eq!(r["tables"][0]["destination"], "public.orders");
    assert_eq!(r["tables"][0]["rows"], 3000);
    assert_eq!(
        c.psql_db(
            "shop",
            "SELECT count(*) || ' ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        ),
        orders_before
    );
    let idx = c.psql_db("shop", "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'orders'");
    assert_eq!(idx, "orders_customer_idx,orders_pkey");
    let cons = c.psql_db("shop", "SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype <> 'n'");
    assert_eq!(cons, "cfp", "check, foreign key, primary key");
    assert_eq!(
        c.psql_db(
            "shop",
            "SELECT has_table_privilege('reader', 'orders', 'SELECT')"
        ),
        "t"
    );
    assert_eq!(
        c.psql_db("shop", "SELECT obj_description('orders'::regclass)"),
        "the orders"
    );
    let new_id = c.psql_db(
        "shop",
        "INSERT INTO orders (customer_id, amount) VALUES (1, 1) RETURNING id::text || note",
    );
    assert_eq!(
        new_id.lines().next().unwrap(),
        "3001none",
        "the sequence and the default came back"
    );
    assert_eq!(
        c.psql_db("shop", "SELECT count(*) || ' ' || md5(string_agg(i::text, ',' ORDER BY id)) FROM order_items i"),
        items_after,
        "rows written after the drop are untouched"
    );
    // The foreign key of order_items went with DROP … CASCADE: suggested, not run.
    let sugg = r["suggestions"].to_string();
    assert!(
        sugg.contains("ALTER TABLE public.order_items ADD CONSTRAINT"),
        "{r}"
    );
    assert_eq!(
        r["tables"][0]["missing_foreign_keys"][0],
        "public.order_items.order_items_order_id_fkey"
    );
    assert_eq!(r["record"]["kind"], "undo");
    assert!(r["history_key"].is_string(), "{r}");
    // Other databases were not touched either.
    assert_eq!(c.psql_db("other1", "SELECT count(*) FROM filler"), "5010");

    // Mass DELETE and UPDATE: the rows as they were, beside the live tables, untouched.
    let sums = |t: &str| {
        c.psql_db(
            "shop",
            &format!("SELECT count(*) || ' ' || sum(t) FROM (SELECT (x).* FROM {t} x) s(id, t)"),
        )
    };
    assert_eq!(sums("accounts"), "700 4553500");
    assert_eq!(sums("ledger"), "1000 5050");
    // No --table: the tables the transaction damaged, read from the archived WAL.
    let r = json(&undo(&[&x_mass], 0));
    let mut undone: Vec<String> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["table"].as_str().unwrap(),
                t["mode"].as_str().unwrap()
            )
        })
        .collect();
    undone.sort();
    assert_eq!(
        undone,
        ["public.accounts rows", "public.ledger rows"],
        "{r}"
    );
    let (acc_before, led_before) = (
        format!("accounts_before_{x_mass}"),
        format!("ledger_before_{x_mass}"),
    );
    assert_eq!(
        r["tables"][0]["destination"],
        format!("public.{acc_before}")
    );
    assert_eq!(sums(&acc_before), "1000 5005000");
    assert_eq!(sums(&led_before), "1000 500500");
    assert_eq!(
        sums("accounts"),
        "700 4553500",
        "live rows never overwritten"
    );
    assert_eq!(sums("ledger"), "1000 5050", "live rows never overwritten");
    let suggested = |r: &serde_json::Value, what: &str| -> String {
        let all = r["suggestions"].as_array().unwrap();
        let found = all
            .iter()
            .map(|v| v.as_str().unwrap())
            .find(|s| s.contains(what));
        found
            .unwrap_or_else(|| panic!("no {what} in {r}"))
            .lines()
            .last()
            .unwrap()
            .to_string()
    };
    c.psql_db(
        "shop",
        &suggested(&r, "INSERT INTO \"public\".\"accounts\""),
    );
    assert_eq!(
        sums("accounts"),
        "1000 5005000",
        "the suggested INSERT put the 300 rows back"
    );
    c.psql_db("shop", &suggested(&r, "UPDATE \"public\".\"ledger\""));
    assert_eq!(
        sums("ledger"),
        "1000 500500",
        "the suggested UPDATE put the values back"
    );

    // The names are taken (the earlier undo's tables): refused before anything is restored.
    let r = undo(&[&x_mass, "--table", "accounts"], 4);
    assert!(
        r.stderr.contains(&acc_before) && r.stderr.contains("--as"),
        "{r:?}"
    );

    // An undo killed while its scratch server runs: live untouched, nothing left running.
    let args = [
        "--repo",
        s(&repo),
        "undo",
        &x_drop,
        "--table",
        "orders",
        "--as",
        "orders_again",
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "shop",
        "--scratch",
        s(&parent),
        "--pg-bin",
        s(&install.bindir),
    ];
    // Killed (SIGKILL) once `ready` holds for its scratch data directory; then, within 30 s,
    // no server runs there (the guard stopped it, if one had started).
    let kill_when = |ready: &dyn Fn(&Path) -> bool, what: &str| {
        let mut cmd = Command::new(pitr_bin());
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        pitr_testkit::as_postgres(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let t0 = Instant::now();
        let pgdata = loop {
            let found = scratch_entries(&parent)
                .into_iter()
                .map(|d| d.join("pgdata"))
                .find(|p| ready(p));
            if let Some(p) = found {
                break p;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "never {what}");
            assert!(
                child.try_wait().unwrap().is_none(),
                "undo ended before {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let t0 = Instant::now();
        while pgdata.join("postmaster.pid").exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !pgdata.join("postmaster.pid").exists(),
            "killed once {what}: the guard did not stop the scratch server"
        );
    };
    // Once the restore began, and once the scratch server runs.
    kill_when(&|p: &Path| p.exists(), "the restore began");
    kill_when(
        &|p: &Path| p.join("postmaster.pid").exists(),
        "the scratch server started",
    );
    // The second run removed the first one's directory as it started.
    assert_eq!(
        scratch_entries(&parent).len(),
        1,
        "{:?}",
        scratch_entries(&parent)
    );
    let exists = |t: &str| {
        c.psql_db(
            "shop",
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{t}'"),
        )
    };
    assert_eq!(
        exists("orders_again"),
        "0",
        "the killed undo changed the live cluster"
    );

    // The next undo removes the dead run's directory; --as brings the dropped table back under
    // another name, its indexes renamed with it.
    // (In text, as people read it.)
    let r = undo(
        &[
            &x_drop,
            "--table",
            "orders",
            "--as",
            "orders_again",
            "--text",
        ],
        0,
    );
    eprintln!("{}", r.stdout);
    let out = &r.stdout;
    assert!(out.starts_with("undo UNDONE"), "{out}");
    assert!(
        out.contains("removed an interrupted undo's scratch directory"),
        "{out}"
    );
    assert!(
        out.contains("public.orders brought back as public.orders_again: 3000 rows"),
        "{out}"
    );
    assert!(
        out.contains("ALTER TABLE public.order_items ADD CONSTRAINT"),
        "{out}"
    );
    assert_eq!(
        c.psql_db("shop", "SELECT count(*) FROM orders_again"),
        "3000"
    );
    let idx = c.psql_db("shop", "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'orders_again'");
    assert_eq!(idx, "orders_again_customer_idx,orders_again_pkey");

    let h = json(&pitr_as_postgres(&["--repo", s(&repo), "history", "--json"]).expect_code(0));
    let undos = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "undo")
        .count();
    assert_eq!(undos, 3, "{h}");
    assert!(
        !repo.join("main/wal/00000002").exists(),
        "a scratch cluster archived into production"
    );
}

pg_test_matrix!(undoes_drops_deletes_and_updates_in_place);
