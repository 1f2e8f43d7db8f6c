//! Bundled small files against real PostgreSQL 14–18: a cluster of many small relation files
//! is backed up (full, then incremental reusing the full backup's bundled files), restored and
//! compared row for row and byte for byte; a flipped byte in a bundle member is named by
//! `verify`, a truncated bundle makes restore refuse before it touches the target directory,
//! and swapped members are caught (by their checksums in a plain repository, by
//! authentication in an encrypted one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use pitr_repo::crypt::KeyFile;
use pitr_repo::{BackupManifest, Repo};
use pitr_storage::{LocalFs, Storage};
use pitr_testkit::{
    chown_to_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall,
};

/// Small tables made (each its own 8 KB relation file, beside a fresh cluster's ~1000 files).
const TABLES: usize = 500;

/// Row count and checksum of every child table's rows.
const SUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(tableoid::regclass::text || '.' || g, ',' \
                   ORDER BY tableoid::regclass::text, g)) FROM kids";

/// `TABLES` small tables (children of `kids`, so one query sums them all), frozen and
/// checkpointed so that their files no longer change.
fn small_tables(c: &Cluster) {
    c.psql("CREATE TABLE kids (g int)");
    c.psql(&format!(
        "DO $$ BEGIN FOR i IN 1..{TABLES} LOOP \
         EXECUTE format('CREATE TABLE kid_%s () INHERITS (kids)', i); \
         EXECUTE format('INSERT INTO kid_%s SELECT generate_series(1, 20 + %s %% 7)', i, i); \
         END LOOP; END $$"
    ));
    c.psql("VACUUM (FREEZE)");
    c.psql("CHECKPOINT");
}

fn manifest(repo: &Path, label: &str) -> serde_json::Value {
    let p = repo.join("main/backup").join(label).join("backup.json");
    serde_json::from_slice::<serde_json::Value>(&fs::read(p).unwrap()).unwrap()["body"].clone()
}

/// Every entry below `dir` with its size (empty when `dir` does not exist).
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), md.len()));
        }
    }
    out.sort();
    out
}

/// Replaces the content of `p` while `f` runs, then puts it back.
fn damaged(p: &Path, damage: impl FnOnce(&mut Vec<u8>), f: impl FnOnce()) {
    let good = fs::read(p).unwrap();
    let mut bad = good.clone();
    damage(&mut bad);
    fs::write(p, &bad).unwrap();
    f();
    fs::write(p, &good).unwrap();
}

/// A full and an incremental backup of many small files, restored from their bundles.
fn small_files_restore_from_bundles_full_and_incremental(pg: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(pg, "", ClusterOptions::default());
    let r = s(&repo);
    small_tables(&c);
    let kid_file = |i: usize| c.psql(&format!("SELECT pg_relation_filepath('kid_{i}')"));
    // Files modified in the second the parent backup starts are never trusted as unchanged.
    thread::sleep(Duration::from_millis(2100));
    let full = pitr_on(&c, &repo, "backup", &[]).expect_code(0).stdout;
    let full = full.trim().to_string();
    let m = manifest(&repo, &full);
    let files = m["files"].as_array().unwrap();
    let bundled = files.iter().filter(|f| f.get("bundle").is_some()).count();
    assert!(
        bundled > TABLES,
        "{bundled} of {} files bundled",
        files.len()
    );
    assert!(repo
        .join("main/backup")
        .join(&full)
        .join("bundle/0")
        .is_file());

    // A flipped byte inside a member: verify names the file.
    let victim = kid_file(7);
    let (bundle, at) = bundled_at(&repo, &full, &victim).expect("a small table is bundled");
    damaged(
        &bundle,
        |b| b[at.start + (at.end - at.start) / 2] ^= 1,
        || {
            let v = pitr(&["--repo", r, "verify"]).expect_code(5);
            assert!(v.stdout.contains(&victim), "{v:?}");
        },
    );
    // Two members of the same length swapped: each is caught by its own checksum.
    let other = (8..TABLES)
        .map(kid_file)
        .find(|p| {
            bundled_at(&repo, &full, p).is_some_and(|(b, o)| b == bundle && o.len() == at.len())
        })
        .expect("two members of the same length in one bundle");
    let (_, at2) = bundled_at(&repo, &full, &other).unwrap();
    damaged(
        &bundle,
        |b| {
            let (one, two) = (b[at.clone()].to_vec(), b[at2.clone()].to_vec());
            b[at.clone()].copy_from_slice(&two);
            b[at2.clone()].copy_from_slice(&one);
        },
        || {
            let v = pitr(&["--repo", r, "verify"]).expect_code(5);
            assert!(
                v.stdout.contains(&victim) && v.stdout.contains(&other),
                "{v:?}"
            );
        },
    );
    // A truncated bundle: restore refuses before it touches the target directory.
    let target = scratch.path().join("refused");
    fs::create_dir(&target).unwrap();
    chown_to_postgres(&target);
    damaged(
        &bundle,
        |b| b.truncate(at.start + 1),
        || {
            let before = listing(&target);
            let run = pitr(&["--repo", r, "restore", "--pgdata", s(&target)]).expect_code(5);
            assert!(
                run.stderr.contains("cannot be restored") && run.stderr.contains("/bundle/"),
                "{run:?}"
            );
            assert_eq!(
                listing(&target),
                before,
                "a refused restore touched {target:?}"
            );
        },
    );
    pitr(&["--repo", r, "verify"]).expect_code(0);

    // The incremental: a few tables changed, one new; the rest reused from the full backup's
    // bundles.
    thread::sleep(Duration::from_millis(1500));
    c.psql("INSERT INTO kid_1 SELECT generate_series(100, 120)");
    c.psql("UPDATE kid_2 SET g = g + 1000");
    c.psql("CREATE TABLE kid_new () INHERITS (kids)");
    c.psql("INSERT INTO kid_new VALUES (1), (2)");
    let incr = pitr_on(&c, &repo, "backup", &["--type", "incr"])
        .expect_code(0)
        .stdout;
    let incr = incr.trim().to_string();
    let mi = manifest(&repo, &incr);
    let reused = mi["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("bundle").is_some() && f["stored_in"] == full.as_str())
        .count();
    assert!(reused > TABLES, "{reused} bundled files reused from {full}");
    assert!(bundled_at(&repo, &incr, &kid_file(1))
        .is_some_and(|(b, _)| b.starts_with(repo.join("main/backup").join(&incr))));
    let sum = c.psql(SUM);
    // Nothing is written after the incremental backup (which waited for its own WAL): no switch,
    // which on an idle server may not switch at all.
    let untouched: Vec<String> = (10..TABLES).step_by(37).map(kid_file).collect();
    let source = c.datadir().to_path_buf();
    c.stop();

    // Restored (from the incremental: its own bundle and the full backup's), started, compared.
    let dir = scratch.path().join("restored");
    let rep = json(
        &pitr(&[
            "--repo",
            r,
            "--json",
            "restore",
            "--pgdata",
            s(&dir),
            "--start",
            "--pg-bin",
            s(&pg.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(
        rep["restore"]["plan"]["backup"]["label"],
        incr.as_str(),
        "{rep}"
    );
    for f in &untouched {
        assert!(
            fs::read(dir.join(f)).unwrap() == fs::read(source.join(f)).unwrap(),
            "{f} differs from the source"
        );
    }
    let restored = psql_port(pg, c.socket_dir(), c.port(), SUM);
    assert_eq!(restored, sum);
    let mut stop = std::process::Command::new(pg.bin("pg_ctl"));
    stop.arg("-D").arg(&dir).args(["-m", "fast", "-w", "stop"]);
    pitr_testkit::as_postgres(&mut stop);
    assert!(stop.output().unwrap().status.success());
}
pg_test_matrix!(small_files_restore_from_bundles_full_and_incremental);

/// The manifest of backup `label` of an encrypted repository, read with its key.
fn encrypted_manifest(repo: &Path, key: &Path, label: &str) -> BackupManifest {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(LocalFs::open(repo).unwrap());
        let key = KeyFile::read(key).unwrap();
        let repo = Repo::open_with_key(storage, Some(&key)).await.unwrap();
        repo.cluster("main")
            .unwrap()
            .manifest(label)
            .await
            .unwrap()
            .unwrap()
    })
}

/// Where plaintext byte `p` of a sealed object is stored (32-byte header, then 64 KiB chunks
/// each followed by a 16-byte tag; see pitr-repo's crypt::seal).
fn sealed_offset(p: usize) -> usize {
    32 + p / 65536 * (65536 + 16) + p % 65536
}

#[test]
fn swapped_members_of_an_encrypted_bundle_are_detected() {
    let pg = newest_pg();
    let scratch = scratch_dir();
    let key = scratch.path().join("repo.key");
    fs::write(
        &key,
        "9c3f0e6a4b2d18f75e0a9c3b6d2f4e1a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e\n",
    )
    .unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    chown_to_postgres(&key);
    let (k, repo) = (s(&key), scratch.path().join("repo"));
    let r = s(&repo);
    pitr_as_postgres(&["init", "--repo", r, "--encryption-key-file", k]).expect_code(0);
    let c = Cluster::init(
        &pg,
        ClusterOptions {
            archive_command: Some(archive_command(
                &repo,
                &format!("--encryption-key-file '{k}'"),
            )),
            ..Default::default()
        },
    );
    c.start();
    small_tables(&c);
    let label = pitr_on(&c, &repo, "backup", &["--encryption-key-file", k])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    pitr(&["--repo", r, "--encryption-key-file", k, "verify"]).expect_code(0);

    // Two members of bundle 0 with the same length, in different sealed chunks: their stored
    // bytes swapped.
    let m = encrypted_manifest(&repo, &key, &label);
    let members: Vec<_> = m
        .files
        .iter()
        .filter(|f| f.bundle.is_some_and(|b| b.id == 0))
        .map(|f| {
            (
                f.path.clone(),
                f.bundle.unwrap().offset as usize,
                f.stored_size as usize,
            )
        })
        .filter(|(_, o, l)| o / 65536 == (o + l - 1) / 65536)
        .collect();
    let (one, two) = members
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            members[i + 1..]
                .iter()
                .find(|b| b.2 == a.2 && b.1 / 65536 != a.1 / 65536)
                .map(|b| (a.clone(), b.clone()))
        })
        .expect("two members of the same length in different chunks");
    let bundle = repo.join("main/backup").join(&label).join("bundle/0");
    let (a, b) = (sealed_offset(one.1), sealed_offset(two.1));
    damaged(
        &bundle,
        |bytes| {
            let (x, y) = (bytes[a..a + one.2].to_vec(), bytes[b..b + two.2].to_vec());
            bytes[a..a + one.2].copy_from_slice(&y);
            bytes[b..b + two.2].copy_from_slice(&x);
        },
        || {
            let v = pitr(&["--repo", r, "--encryption-key-file", k, "verify"]).expect_code(5);
            assert!(
                v.stdout.contains("bundle/0") && v.stdout.contains(&one.0),
                "{v:?}"
            );
            let target = scratch.path().join("restored");
            let run = pitr(&[
                "--repo",
                r,
                "--encryption-key-file",
                k,
                "restore",
                "--pgdata",
                s(&target),
            ]);
            assert_ne!(run.code, 0, "a restore used swapped members: {run:?}");
            assert!(run.stderr.contains("bundle/0"), "{run:?}");
        },
    );
    pitr(&["--repo", r, "--encryption-key-file", k, "verify"]).expect_code(0);
}
