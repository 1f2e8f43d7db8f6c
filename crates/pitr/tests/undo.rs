//! `pitr undo` against real PostgreSQL 14–18, one server per version for every case: a dropped
//! table (index, foreign key to it, sequence-backed id, grants, comment) comes back whole while
//! rows written since in other tables stay; the rows a mass DELETE and a mass UPDATE changed
//! come back beside the live table; only the affected database of three is restored (sparse
//! files for the others: the scratch directory takes far less than a full restore); a taken
//! name is refused and `--as` works, before the restore (a `_before_XID` name) and once the
//! scratch cluster shows the name was reused after the DROP (exit 4, the live cluster as it was,
//! nothing running, no scratch directory left); a scratch disk too small (an 8 MiB tmpfs, as
//! root) is refused with and without `--dry-run`; an undo killed with the scratch server running
//! leaves the live cluster untouched and nothing running, and the next undo cleans up after it.
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

/// Processes whose command line names `dir` (a scratch server, an undo's guard).
fn processes_naming(dir: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let needle = dir.as_os_str().as_bytes();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.windows(needle.len()).any(|w| w == needle) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// Waits until no process names `dir` (a guard looks once a second), at most 10 s.
fn nothing_runs_under(dir: &Path) {
    let t0 = Instant::now();
    loop {
        let left = processes_naming(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running under {}: {left:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes free for an unprivileged user on the file system of `dir`, as `df` reports them.
fn df_avail(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "df {dir:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().parse().unwrap()
}

/// `--scratch` on a disk too small for the restore: refused (exit 4, as documented) with
/// `--dry-run` and without, the message naming the directory and the bytes needed and free;
/// nothing is written there and nothing runs. The dry run's figures (`plan`, made on the roomy
/// scratch disk `roomy`) follow the documented rule and agree with `df`. The small disk is an
/// 8 MiB tmpfs mounted under `work` (root only: not root, this says so and checks the figures
/// only).
fn small_scratch_is_refused(
    undo_in: &dyn Fn(&Path, &[&str], i32) -> Run,
    work: &Path,
    roomy: &Path,
    xid: &str,
    plan: &serde_json::Value,
) {
    let field = |k: &str| plan[k].as_u64().unwrap_or_else(|| panic!("no {k}: {plan}"));
    let (restore, needed, free) = (
        field("restore_bytes"),
        field("disk_needed"),
        field("disk_free"),
    );
    assert_eq!(
        needed,
        restore + restore / 10 + (256 << 20),
        "restored bytes + 10% + 256 MiB: {plan}"
    );
    let df = df_avail(roomy);
    assert!(
        free.abs_diff(df) < 1 << 30,
        "the plan says {free} bytes free, df {df}"
    );
    if pitr_testkit::postgres_uid_gid().is_none() {
        eprintln!(
            "not root: cannot mount a small tmpfs, so the refusal of a scratch disk too small is NOT checked here (CI runs it as root); only the dry run's needed/free figures were"
        );
        return;
    }
    let small = work.join("small-scratch");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {small:?}");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    pitr_testkit::chown_to_postgres(&small);
    let small_free = df_avail(&small);
    assert_eq!(small_free, 8 << 20);
    for dry_run in [true, false] {
        let mut args = vec![xid, "--table", "public.orders"];
        if dry_run {
            args.push("--dry-run");
        }
        let r = undo_in(&small, &args, 4);
        let msg = &r.stderr;
        for part in [
            "the scratch disk is too small: ".to_string(),
            format!("{} needs {needed} bytes", small.display()),
            format!("{small_free} bytes are free"),
            "hint: pass --scratch DIR on a larger disk".to_string(),
        ] {
            assert!(
                msg.contains(&part),
                "dry run {dry_run}: no {part:?} in {r:?}"
            );
        }
        assert!(r.stdout.is_empty(), "refused, yet a report: {r:?}");
        assert_eq!(df_avail(&small), small_free, "written to the small disk");
        nothing_runs_under(&small);
    }
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
    // An undo with its scratch directory made under `dir`: after it, nothing is left there.
    let undo_in = |dir: &Path, extra: &[&str], code: i32| {
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
            s(dir),
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
            scratch_entries(dir).is_empty(),
            "scratch left behind: {:?}",
            scratch_entries(dir)
        );
        r
    };
    let undo = |extra: &[&str], code: i32| undo_in(&parent, extra, code);

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
    // A scratch disk too small: refused, with and without --dry-run.
    small_scratch_is_refused(&undo_in, scratch.path(), &parent, &x_drop, p);

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

    // The name is taken again by a table made after the DROP (the one just brought back: a new
    // OID): found out once the scratch cluster runs, refused (exit 4) without --as; the live
    // cluster keeps what it has, no scratch server runs and no scratch directory is left.
    let orders_now = c.psql_db(
        "shop",
        "SELECT count(*) || ' ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o",
    );
    let r = undo(&[&x_drop, "--table", "public.orders"], 4);
    nothing_runs_under(&parent);
    let r = json(&r);
    assert_eq!(r["outcome"], "refused", "{r}");
    let why = r["failure"].as_str().unwrap();
    assert!(
        why.contains("public.orders was dropped")
            && why.contains("a new table by that name exists now")
            && why.contains("nothing was changed")
            && why.contains("--as NEW_NAME"),
        "{r}"
    );
    assert_eq!(r["plan"]["tables"][0]["mode"], "rows", "{r}");
    assert!(
        r["port"].is_u64(),
        "refused only once the scratch server ran: {r}"
    );
    assert!(r["tables"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["record"]["outcome"], "refused", "{r}");
    assert_eq!(
        c.psql_db(
            "shop",
            "SELECT count(*) || ' ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        ),
        orders_now,
        "the refused undo changed the live table"
    );
    assert_eq!(
        c.psql_db(
            "shop",
            &format!("SELECT count(*) FROM pg_class WHERE relname LIKE 'orders_before_{x_drop}%'")
        ),
        "0",
        "the refused undo created a table"
    );

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

    // --as names one table: a usage error (exit 2, as --help says), before anything else.
    let r = undo(
        &[
            &x_mass, "--table", "accounts", "--table", "ledger", "--as", "x",
        ],
        2,
    );
    assert!(r.stderr.contains("--as names one table"), "{r:?}");

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
    let mut undos: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "undo")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    undos.sort();
    // The refusals before a scratch directory existed (names taken, disk too small) are not
    // recorded; the one found out in the scratch cluster is.
    assert_eq!(undos, ["refused", "undone", "undone", "undone"], "{h}");
    assert!(
        !repo.join("main/wal/00000002").exists(),
        "a scratch cluster archived into production"
    );
}

pg_test_matrix!(undoes_drops_deletes_and_updates_in_place);
