//! An encrypted repository end to end with the real binary and real PostgreSQL 14–18: the
//! archiver pushes through `--encryption-key-file`, `backup` and `restore --start` (whose
//! restore_command must carry the key) work, no 64-byte window of the archived WAL is stored in
//! clear, and a missing key, a wrong key, an unexpected key, a flipped byte, swapped chunks and
//! an object copied under another name are refused (archive-get: 255), never served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use pitr_testkit::leak::PlainIndex;
use pitr_testkit::{
    chown_to_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall,
};

const KEY: &str = "9c3f0e6a4b2d18f75e0a9c3b6d2f4e1a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";
const OTHER_KEY: &str = "1c3f0e6a4b2d18f75e0a9c3b6d2f4e1a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e";

/// A key file readable only by the postgres OS user (the archiver's user).
fn key_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("{content}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    chown_to_postgres(&p);
    p
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Segments PostgreSQL marked as archived, sorted.
fn archived(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(c.datadir().join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".done").map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// Runs archive-get of `name` and checks it failed with 255, saying `why`, writing nothing.
fn get_refused(args: &[&str], name: &str, scratch: &Path, why: &str) {
    let dest = scratch.join("got").join(name);
    let mut all = args.to_vec();
    all.extend_from_slice(&["archive-get", name, s(&dest)]);
    let run = pitr(&all).expect_code(255);
    assert!(run.stderr.contains(why), "expected {why:?}: {run:?}");
    assert!(!dest.exists(), "a refused archive-get wrote {dest:?}");
}

fn encrypted_repository_end_to_end(install: &PgInstall) {
    let scratch = scratch_dir();
    let dir = scratch.path();
    fs::create_dir(dir.join("got")).unwrap();
    let key = key_file(dir, "repo.key", KEY);
    let other = key_file(dir, "other.key", OTHER_KEY);
    let k = s(&key);
    let repo = dir.join("repo");
    let r = s(&repo);
    let init = pitr_as_postgres(&["init", "--repo", r, "--encryption-key-file", k]).expect_code(0);
    assert!(init.stdout.contains("encrypted"), "{init:?}");
    assert!(repo.join("pitr.encryption").exists());

    let seg_mb = if install.major % 2 == 1 { 1 } else { 4 };
    let c = Cluster::init(
        install,
        ClusterOptions {
            wal_segsize_mb: Some(seg_mb),
            archive_command: Some(archive_command(
                &repo,
                &format!("--encryption-key-file '{k}'"),
            )),
            conf: vec![("wal_keep_size".into(), "1GB".into())],
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 30000) g");
    c.switch_wal();
    // --keep: the pin is an object of the repository like any other, sealed with the key.
    let backup =
        pitr_on(&c, &repo, "backup", &["--encryption-key-file", k, "--keep"]).expect_code(0);
    let label = backup.stdout.trim().to_string();
    assert!(!label.is_empty(), "{backup:?}");
    let pin = fs::read(repo.join(format!("main/pins/{label}.json"))).unwrap();
    assert!(
        !String::from_utf8_lossy(&pin).contains("pinned_at"),
        "a pin stored in clear in an encrypted repository"
    );
    let listed =
        json(&pitr(&["--repo", r, "--encryption-key-file", k, "--json", "info"]).expect_code(0));
    assert_eq!(
        listed["clusters"][0]["backups"][0]["pinned"], true,
        "{listed}"
    );
    c.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(30001, 30100) g");
    let last = c.switch_wal();
    assert!(
        c.wait_archived(&last, Duration::from_secs(120)),
        "{last} not archived:\n{}",
        c.log_tail(30)
    );

    // No 64-byte window of any archived segment in any stored object; the same scan finds
    // them in an unencrypted, uncompressed repository.
    let segments = archived(&c);
    assert!(segments.len() >= 3, "{segments:?}");
    let plain: Vec<Vec<u8>> = segments
        .iter()
        .map(|n| fs::read(c.datadir().join("pg_wal").join(n)).unwrap())
        .collect();
    let refs: Vec<&[u8]> = plain.iter().map(Vec::as_slice).collect();
    let index = PlainIndex::new(&refs);
    let stored = files(&repo);
    assert!(stored.len() > segments.len(), "{stored:?}");
    for f in &stored {
        assert_eq!(
            index.find_in(&fs::read(f).unwrap()),
            None,
            "plain WAL in {f:?}"
        );
    }
    let clear = dir.join("clear");
    let first = c.datadir().join("pg_wal").join(&segments[0]);
    pitr_as_postgres(&["init", "--repo", s(&clear)]).expect_code(0);
    pitr_as_postgres(&[
        "--repo",
        s(&clear),
        "--compress",
        "none",
        "archive-push",
        s(&first),
    ])
    .expect_code(0);
    let leaked = files(&clear)
        .iter()
        .any(|f| index.find_in(&fs::read(f).unwrap()).is_some());
    assert!(
        leaked,
        "the scan finds plain WAL in an unencrypted repository"
    );

    // Missing, wrong, unexpected keys.
    let name = &segments[0];
    get_refused(
        &["--repo", r],
        name,
        dir,
        "is encrypted and no key was given",
    );
    get_refused(
        &["--repo", r, "--encryption-key-file", s(&other)],
        name,
        dir,
        "wrong key",
    );
    let info = pitr(&["--repo", r, "info"]).expect_code(4);
    assert!(info.stderr.contains("PITR_ENCRYPTION_KEY"), "{info:?}");
    let unexpected =
        pitr(&["--repo", s(&clear), "--encryption-key-file", k, "info"]).expect_code(4);
    assert!(
        unexpected.stderr.contains("is not encrypted"),
        "{unexpected:?}"
    );
    let missing = pitr(&[
        "--repo",
        r,
        "--encryption-key-file",
        "/nonexistent/key",
        "info",
    ]);
    assert!(
        missing.code != 0 && missing.stderr.contains("/nonexistent/key"),
        "{missing:?}"
    );

    // The key through the environment; an identical re-push is still told apart.
    let mut cmd = std::process::Command::new(pitr_bin());
    cmd.args(["--repo", r, "archive-push", s(&first)])
        .env("PITR_ENCRYPTION_KEY", k)
        .env_remove("PITR_REPO");
    pitr_testkit::as_postgres(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already archived"),
        "{out:?}"
    );

    tamper(&repo, &segments, k, dir);

    // Everything verifies; the original stops and the backup restores with --start: the
    // restore_command pitr wrote fetches the encrypted WAL with the key.
    pitr(&["--repo", r, "--encryption-key-file", k, "verify"]).expect_code(0);
    c.stop();
    let target = dir.join("restored");
    let rep = json(
        &pitr(&[
            "--repo",
            r,
            "--encryption-key-file",
            k,
            "--json",
            "restore",
            "--pgdata",
            s(&target),
            "--start",
            "--pg-bin",
            s(&install.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    let conf = fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--encryption-key-file"), "{conf}");
    assert_eq!(
        psql_port(install, c.socket_dir(), c.port(), "SELECT count(*) FROM t"),
        "30100"
    );
    let mut stop = std::process::Command::new(install.bin("pg_ctl"));
    stop.arg("-D")
        .arg(&target)
        .args(["-m", "fast", "-w", "stop"]);
    pitr_testkit::as_postgres(&mut stop);
    assert!(stop.output().unwrap().status.success());
}
pg_test_matrix!(encrypted_repository_end_to_end);

/// A flipped byte, two chunks swapped, an object cut short or copied under another name: each
/// makes archive-get fail with 255 and verify report the object; each is undone after.
fn tamper(repo: &Path, segments: &[String], k: &str, dir: &Path) {
    let r = s(repo);
    let with_key = ["--repo", r, "--encryption-key-file", k];
    let path = |n: &str| repo.join("main/wal/00000001").join(n);
    // The largest object spans several 64 KiB chunks.
    let big = segments
        .iter()
        .max_by_key(|n| fs::metadata(path(n)).unwrap().len())
        .unwrap();
    let other = segments.iter().find(|n| *n != big).unwrap();
    let orig = fs::read(path(big)).unwrap();
    let chunk = 64 * 1024 + 16;
    assert!(orig.len() > 32 + 2 * chunk, "{big}: {} bytes", orig.len());
    let damaged = |bytes: Vec<u8>, why: &str| {
        fs::write(path(big), bytes).unwrap();
        get_refused(&with_key, big, dir, "fails authentication");
        let v = pitr(&["--repo", r, "--encryption-key-file", k, "verify"]).expect_code(5);
        assert!(v.stdout.contains(big.as_str()), "{why}: {v:?}");
    };
    let mut flipped = orig.clone();
    flipped[orig.len() / 2] ^= 0x20;
    damaged(flipped, "flipped byte");
    let mut swapped = orig.clone();
    swapped[32..32 + chunk].copy_from_slice(&orig[32 + chunk..32 + 2 * chunk]);
    swapped[32 + chunk..32 + 2 * chunk].copy_from_slice(&orig[32..32 + chunk]);
    damaged(swapped, "swapped chunks");
    damaged(orig[..32 + 2 * chunk].to_vec(), "cut at a chunk boundary");
    let copied = fs::read(path(other)).unwrap();
    damaged(copied, "another object copied under this name");
    fs::write(path(big), &orig).unwrap();
    let dest = dir.join("got").join(big);
    pitr(&[
        "--repo",
        r,
        "--encryption-key-file",
        k,
        "archive-get",
        big,
        s(&dest),
    ])
    .expect_code(0);
}
