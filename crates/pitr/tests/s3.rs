//! pitr with its repository on S3 (a real SeaweedFS), against real PostgreSQL 14–18: the AWS
//! variables are in PostgreSQL's environment, so the archive_command and the restore_command
//! pitr writes reach the bucket exactly as a production server would.
//!
//! One SeaweedFS serves every test of this file that does not stop it (each under its own key
//! prefix); the tests that stop their server start their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use pitr_storage::{PutMode, S3Config, S3Credentials, S3Storage, Storage};
use pitr_testkit::{
    as_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall, SeaweedFs,
    SeaweedOptions,
};
use serde_json::Value;

/// A key prefix of the bucket no other test uses.
fn unique_prefix(what: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{what}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A driver for the same repository, for what the tests do behind pitr's back.
fn storage(server: &SeaweedFs, url: &str) -> S3Storage {
    let mut cfg = S3Config::from_url(url).unwrap();
    cfg.endpoint = Some(server.endpoint());
    cfg.region = Some("us-east-1".into());
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: server.secret_access_key().into(),
        session_token: None,
    });
    S3Storage::new(cfg).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A cluster archiving into an S3 repository.
struct Lab {
    scratch: tempfile::TempDir,
    url: String,
    env: Vec<(String, String)>,
    store: S3Storage,
    install: PgInstall,
    c: Cluster,
    sock: PathBuf,
}

impl Lab {
    fn new(install: &PgInstall) -> Lab {
        Lab::with_env(install, &[])
    }

    /// A lab whose pitr processes (and PostgreSQL's) also get `extra` in their environment.
    fn with_env(install: &PgInstall, extra: &[(String, String)]) -> Lab {
        let server = SeaweedFs::shared();
        let url = format!(
            "s3://{}/e2e/{}",
            server.bucket(),
            unique_prefix(&format!("pg{}", install.major))
        );
        let mut env = server.env();
        env.extend_from_slice(extra);
        pitr_env(&env, &["init", "--repo", &url]).expect_code(0);
        // The archive_command names only the repository: endpoint, region and credentials come
        // from PostgreSQL's environment.
        let archive_command = format!("'{}' --repo '{url}' archive-push %p", pitr_bin().display());
        let c = Cluster::init(
            install,
            ClusterOptions {
                archive_command: Some(archive_command),
                ..Default::default()
            }
            .set("autovacuum", "off")
            .envs(&env),
        );
        c.start();
        let sock = c.socket_dir().to_path_buf();
        Lab {
            scratch: scratch_dir(),
            store: storage(server, &url),
            url,
            env,
            install: install.clone(),
            c,
            sock,
        }
    }

    fn pitr(&self, args: &[&str]) -> Run {
        let mut all = vec!["--repo", self.url.as_str()];
        all.extend_from_slice(args);
        pitr_env(&self.env, &all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&self.pitr(&all).expect_code(0))
    }

    /// `pitr backup ARGS` of the server on the lab's socket; returns the label.
    fn backup(&self, args: &[&str]) -> String {
        let mut all = vec![
            "backup",
            "-h",
            s(&self.sock),
            "-p",
            "5432",
            "-U",
            "postgres",
        ];
        all.extend_from_slice(args);
        self.pitr(&all).expect_code(0).stdout.trim().to_string()
    }

    /// `pitr restore --pgdata DIR ARGS --start`, as JSON.
    fn restore_start(&self, name: &str, args: &[&str]) -> (PathBuf, Value) {
        let dir = self.scratch.path().join(name);
        let mut all = vec!["restore", "--pgdata", s(&dir)];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--start",
            "--pg-bin",
            s(&self.install.bindir),
            "--wait-timeout",
            "120",
        ]);
        let rep = self.json(&all);
        (dir, rep)
    }

    fn psql(&self, sql: &str) -> String {
        psql_port(&self.install, &self.sock, 5432, sql)
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

    /// Waits until WAL file `name` of timeline `tli` is in the bucket, archived by the server
    /// whose log is `log`.
    fn wait_in_repo(&self, tli: u32, name: &str, log: &Path) {
        let key = format!("main/wal/{tli:08X}/{name}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while block_on(self.store.head(&key)).unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{key} never reached the bucket; server log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const ROWS: &str = "SELECT coalesce(string_agg(nombre, ',' ORDER BY id), '') FROM laboratorio_pitr";

fn insert(lab: &Lab, name: &str) -> String {
    lab.psql(&format!(
        "WITH i AS (INSERT INTO laboratorio_pitr (nombre) VALUES ('{name}') RETURNING id) \
         SELECT txid_current() FROM i"
    ))
}

/// The whole life of a repository on S3: the real archiver archives, full and incremental
/// backups, `info`, `check`'s round trip, `wal incidents`; restores to a time and to an xid
/// (exclusive) started by `--start`; a second timeline archived by the restored server and
/// followed by a later restore; `verify` clean, then catching one flipped byte of a stored
/// object; `expire` removing the old backups and their WAL.
fn s3_repository_end_to_end(pg: &PgInstall) {
    let lab = Lab::new(pg);
    let b1 = lab.backup(&[]);
    lab.psql(
        "CREATE TABLE laboratorio_pitr (id SERIAL PRIMARY KEY, nombre TEXT NOT NULL, \
         creado_en TIMESTAMP DEFAULT now())",
    );
    lab.psql("CREATE TABLE victima (id int)");
    lab.psql("INSERT INTO victima SELECT generate_series(1, 100)");
    insert(&lab, "registro_1");
    insert(&lab, "registro_2");
    let time2 = lab.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(20));
    let x3 = insert(&lab, "registro_3");
    let b2 = lab.backup(&["--type", "incr"]);
    insert(&lab, "registro_4");
    lab.psql("DROP TABLE victima");
    let last = lab.c.switch_wal();
    assert!(
        lab.c.wait_archived(&last, Duration::from_secs(60)),
        "{last}"
    );

    // info: both backups, the incremental one on the full one.
    let info = lab.json(&["info"]);
    let backups = info["clusters"][0]["backups"].as_array().unwrap();
    let labels: Vec<&str> = backups
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, [b1.as_str(), b2.as_str()], "{info}");
    assert_eq!(backups[1]["kind"], "incr", "{info}");
    // The small files (most of a fresh cluster's) went into bundles, multipart-uploaded; the
    // restores below read them with ranged GETs.
    let bundles = block_on(lab.store.list(&format!("main/backup/{b1}/bundle/"))).unwrap();
    assert!(!bundles.is_empty(), "no bundle in backup {b1}");

    // check: the configuration, and a WAL switch that reaches the bucket.
    let port = lab.c.port().to_string();
    let check = lab.json(&["check", "-h", s(&lab.sock), "-p", &port, "-U", "postgres"]);
    assert_eq!(check["ok"], true, "{check}");
    let seg = check["archived_segment"].as_str().unwrap().to_string();
    lab.wait_in_repo(1, &seg, lab.c.log_path());

    // wal incidents: the DROP, with a restore command that reaches the same bucket.
    let incidents = lab.json(&["wal", "incidents", "--no-live"]);
    let drop = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "DROP public.victima")
        })
        .unwrap_or_else(|| panic!("no DROP incident: {incidents:#}"));
    let by_xid = drop["restore_by_xid"].as_str().unwrap();
    assert!(
        by_xid.contains(&format!("--repo {}", lab.url)) && by_xid.contains("--s3-endpoint"),
        "{by_xid}"
    );
    lab.c.stop();

    // A time target, from the full backup.
    let (dir, rep) = lab.restore_start("time", &["--target-time", &time2]);
    assert_eq!(
        rep["restore"]["plan"]["backup"]["label"],
        b1.as_str(),
        "{rep}"
    );
    assert_eq!(rep["start"]["outcome"], "paused", "{rep}");
    assert_eq!(lab.psql(ROWS), "registro_1,registro_2");
    lab.stop(&dir);

    // An xid, exclusive, promoted: a second timeline, which the restored server archives into
    // the bucket (same archive_command, same environment inherited from pitr).
    let (tl2, rep) = lab.restore_start(
        "xid",
        &[
            "--target-xid",
            &x3,
            "--target-exclusive",
            "--target-action",
            "promote",
        ],
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    assert_eq!(rep["start"]["timeline"], 2, "{rep}");
    assert_eq!(lab.psql(ROWS), "registro_1,registro_2");
    let b3 = lab.backup(&[]);
    // A write after the backup, so that the switch closes a segment.
    insert(&lab, "registro_tl2");
    let closed = lab.psql("SELECT pg_walfile_name(pg_switch_wal())");
    let log = tl2.join("log/pitr-start.log");
    lab.wait_in_repo(2, "00000002.history", &log);
    lab.wait_in_repo(2, &closed, &log);
    lab.stop(&tl2);

    // Latest: timeline 2, from the backup taken on it.
    let (dir, rep) = lab.restore_start("latest", &[]);
    assert_eq!(
        rep["restore"]["plan"]["backup"]["label"],
        b3.as_str(),
        "{rep}"
    );
    assert_eq!(lab.psql(ROWS), "registro_1,registro_2,registro_tl2");
    lab.stop(&dir);

    // verify: clean, then one flipped byte in a stored backup file is caught and named.
    let clean = lab.pitr(&["--json", "verify"]).expect_code(0);
    assert_eq!(
        json(&clean)["problems"].as_array().unwrap().len(),
        0,
        "{clean:?}"
    );
    // The largest object of the full backup: a bundle (a fresh cluster has no file of 1 MiB).
    let objects = block_on(lab.store.list(&format!("main/backup/{b1}/"))).unwrap();
    let victim = objects
        .iter()
        .filter(|o| !o.key.ends_with("backup.json"))
        .max_by_key(|o| o.size)
        .unwrap()
        .key
        .clone();
    let original = block_on(lab.store.get(&victim)).unwrap().unwrap();
    let mut flipped = original.to_vec();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    block_on(
        lab.store
            .put(&victim, Bytes::from(flipped), PutMode::Overwrite),
    )
    .unwrap();
    let caught = lab.pitr(&["--json", "verify"]).expect_code(5);
    let problems = json(&caught)["problems"].clone();
    assert!(
        problems
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["object"].as_str().unwrap_or_default().contains(&victim)),
        "{victim} not named: {problems:#}"
    );
    block_on(lab.store.put(&victim, original, PutMode::Overwrite)).unwrap();

    // A pinned backup survives expire on S3 as on a local disk; unpinned, it goes.
    lab.json(&["pin", &b2]);
    assert_eq!(
        lab.json(&["info"])["clusters"][0]["backups"][1]["pinned"],
        true
    );
    let held = lab.json(&["expire", "--retain-full", "1"]);
    assert_eq!(
        held["pinned"],
        serde_json::json!([b1.as_str(), b2.as_str()]),
        "{held}"
    );
    assert_eq!(held["expired"], serde_json::json!([]), "{held}");
    lab.json(&["unpin", &b2]);

    // expire: keep the newest full backup (taken on timeline 2); the others go, with the WAL
    // before it, and what remains verifies.
    let done = lab.json(&["expire", "--retain-full", "1"]);
    let expired: Vec<&str> = done["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect();
    assert_eq!(expired, [b1.as_str(), b2.as_str()], "{done}");
    assert!(done["wal_files"].as_u64().unwrap() > 0, "{done}");
    let info = lab.json(&["info"]);
    assert_eq!(
        info["clusters"][0]["backups"].as_array().unwrap().len(),
        1,
        "{info}"
    );
    let left = block_on(lab.store.list(&format!("main/backup/{b1}/"))).unwrap();
    assert!(left.is_empty(), "{left:?}");
    lab.pitr(&["verify"]).expect_code(0);
}
pg_test_matrix!(s3_repository_end_to_end);

/// An encrypted repository on S3: `init` with the key file named by `PITR_ENCRYPTION_KEY` in
/// the environment (PostgreSQL's too, so the real archiver pushes with it and the
/// restore_command pitr writes reads with it); `info` shows the encryption; the objects in the
/// bucket are sealed; a restore with `--start` to the end of the WAL has every row; a wrong or
/// missing key makes archive-get exit 255, writing nothing.
fn encrypted_s3_repository_end_to_end(pg: &PgInstall) {
    let keys = scratch_dir();
    let key = keys.path().join("repo.key");
    let wrong = keys.path().join("wrong.key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    fs::write(&wrong, format!("{}\n", "a5".repeat(32))).unwrap();
    for k in [&key, &wrong] {
        pitr_testkit::chown_to_postgres(k);
        fs::set_permissions(k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let lab = Lab::with_env(
        pg,
        &[("PITR_ENCRYPTION_KEY".to_string(), s(&key).to_string())],
    );
    let info = lab.json(&["info"]);
    assert_eq!(info["encrypted"], true, "{info}");
    assert_eq!(info["encryption"]["cipher"], "aes-256-gcm", "{info}");
    assert_eq!(info["encryption"]["kdf"], "raw", "{info}");
    let text = lab.pitr(&["info"]).expect_code(0).stdout;
    assert!(text.contains("encryption: aes-256-gcm"), "{text}");

    lab.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let label = lab.backup(&[]);
    lab.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(20001, 20100) g");
    let last = lab.c.switch_wal();
    assert!(
        lab.c.wait_archived(&last, Duration::from_secs(60)),
        "{last}"
    );
    lab.wait_in_repo(1, &last, lab.c.log_path());

    // What the bucket holds is sealed: WAL, backup files and manifests start with the magic.
    let wal = block_on(lab.store.get(&format!("main/wal/00000001/{last}")))
        .unwrap()
        .unwrap();
    assert!(wal.starts_with(b"PITRENC\x01"), "WAL object in clear");
    let objects = block_on(lab.store.list(&format!("main/backup/{label}/"))).unwrap();
    assert!(!objects.is_empty());
    for o in &objects {
        let body = block_on(lab.store.get(&o.key)).unwrap().unwrap();
        assert!(body.starts_with(b"PITRENC\x01"), "{} in clear", o.key);
    }

    // A wrong key, and no key: refused with 255, nothing written.
    let got = lab.scratch.path().join("got");
    fs::create_dir_all(&got).unwrap();
    pitr_testkit::chown_to_postgres(&got);
    let dest = got.join(&last);
    let mut env = lab.env.clone();
    for (k, v) in env.iter_mut() {
        if k == "PITR_ENCRYPTION_KEY" {
            *v = s(&wrong).to_string();
        }
    }
    let run = pitr_env(&env, &["--repo", &lab.url, "archive-get", &last, s(&dest)]);
    let run = run.expect_code(255);
    assert!(run.stderr.contains("wrong key"), "{run:?}");
    env.retain(|(k, _)| k != "PITR_ENCRYPTION_KEY");
    let run = pitr_env(&env, &["--repo", &lab.url, "archive-get", &last, s(&dest)]);
    let run = run.expect_code(255);
    assert!(run.stderr.contains("is encrypted"), "{run:?}");
    assert!(!dest.exists());

    // Restore to the end of the archived WAL, started: every row.
    lab.c.stop();
    let (dir, rep) = lab.restore_start("latest", &[]);
    assert_eq!(
        rep["restore"]["plan"]["backup"]["label"],
        label.as_str(),
        "{rep}"
    );
    assert_eq!(lab.psql("SELECT count(*), max(g) FROM t"), "20100|20100");
    lab.stop(&dir);
}
pg_test_matrix!(encrypted_s3_repository_end_to_end);

/// The first WAL segment of a freshly initialised (never started) cluster: a real segment to
/// push, of `seg_mb` MB.
fn initdb_segment(pg: &PgInstall, seg_mb: u32) -> (Cluster, PathBuf) {
    let c = Cluster::init(
        pg,
        ClusterOptions {
            wal_segsize_mb: Some(seg_mb),
            ..Default::default()
        },
    );
    // The oldest: the others are recycled files named after future segments.
    let seg = fs::read_dir(c.datadir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .min()
        .expect("a WAL segment");
    (c, seg)
}

fn dest(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// archive-get exits 1 only when the bucket answers that the object is not there; a wrong
/// secret, an unreachable endpoint, an untrusted certificate and a missing bucket exit 255 (so
/// PostgreSQL stops recovery); archive-push fails within 1–125 for each of them.
#[test]
fn archive_get_tells_absence_from_trouble_on_s3() {
    let server = SeaweedFs::shared();
    let pg = oldest_pg();
    let (_c, seg) = initdb_segment(&pg, 1);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let out = scratch_dir();
    let url = format!("s3://{}/codes/{}", server.bucket(), unique_prefix("codes"));
    let env = server.env();
    let ok = |args: &[&str]| {
        let mut all = vec!["--repo", url.as_str()];
        all.extend_from_slice(args);
        pitr_env(&env, &all)
    };
    ok(&["archive-push", s(&seg)]).expect_code(0);
    ok(&[
        "archive-get",
        &name,
        &dest(out.path(), "a"),
        "--prefetch",
        "0",
    ])
    .expect_code(0);
    assert_eq!(
        fs::read(out.path().join("a")).unwrap(),
        fs::read(&seg).unwrap()
    );
    // Absent: 1, silently.
    ok(&[
        "archive-get",
        "00000099.history",
        &dest(out.path(), "h"),
        "--prefetch",
        "0",
    ])
    .expect_code(1);

    let mut wrong_secret = env.clone();
    for (k, v) in &mut wrong_secret {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    let missing_bucket = format!("s3://no-such-bucket-{}/x", std::process::id());
    let https = SeaweedFs::start_with(SeaweedOptions { https: true });
    let https_url = format!("s3://{}/x", https.bucket());
    let mut https_env = https.env();
    for (k, v) in &mut https_env {
        if k == "AWS_ENDPOINT_URL" {
            *v = https.https_endpoint().unwrap();
        }
    }
    // (what, repository, environment, extra options, phrase of the error)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(String, String)>,
        Vec<&'a str>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            url.as_str(),
            wrong_secret,
            vec![],
            "access denied",
        ),
        (
            "unreachable endpoint",
            url.as_str(),
            env.clone(),
            vec![
                "--s3-endpoint",
                "http://127.0.0.1:9",
                "--s3-retry-timeout",
                "1",
            ],
            "unreachable",
        ),
        (
            "untrusted certificate",
            https_url.as_str(),
            https_env.clone(),
            vec!["--s3-retry-timeout", "1"],
            "TLS",
        ),
        (
            "missing bucket",
            missing_bucket.as_str(),
            env.clone(),
            vec![],
            "bucket does not exist",
        ),
    ];
    for (what, repo, env, extra, phrase) in cases {
        let mut args = vec!["--repo", repo];
        args.extend_from_slice(&extra);
        let mut get = args.clone();
        get.extend_from_slice(&["archive-get", &name]);
        let target = dest(out.path(), "b");
        get.extend_from_slice(&[&target, "--prefetch", "0"]);
        let run = pitr_env(&env, &get).expect_code(255);
        assert!(run.stderr.contains(phrase), "{what}: {run:?}");
        assert!(!out.path().join("b").exists(), "{what}: wrote {target}");
        let mut push = args.clone();
        push.extend_from_slice(&["archive-push", s(&seg)]);
        let run = pitr_env(&env, &push);
        assert!(
            (1..=125).contains(&run.code) && run.stderr.contains(phrase),
            "{what}: {run:?}"
        );
    }
    // The private CA makes the same https endpoint work.
    let ca = https.ca_file().unwrap();
    let with_ca = |args: &[&str]| {
        let mut all = vec!["--repo", https_url.as_str(), "--s3-ca-file", s(&ca)];
        all.extend_from_slice(args);
        pitr_env(&https_env, &all)
    };
    with_ca(&["archive-push", s(&seg)]).expect_code(0);
    with_ca(&[
        "archive-get",
        &name,
        &dest(out.path(), "c"),
        "--prefetch",
        "0",
    ])
    .expect_code(0);
    assert_eq!(
        fs::read(out.path().join("c")).unwrap(),
        fs::read(&seg).unwrap()
    );
}

/// The pid of the `weed` process serving `server`'s S3 port.
fn weed_pid(server: &SeaweedFs) -> u32 {
    let port = server.endpoint().rsplit(':').next().unwrap().to_string();
    let wanted = format!("-s3.port={port}");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"weed"))
                    && args.contains(&wanted.as_bytes())
            })
        })
        .expect("the weed process")
}

/// Bytes process `pid` has read so far, files and sockets (`rchar` of /proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: ").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// SeaweedFS stopped while archive-push sends a large segment (the server has received part of
/// the PUT's body): the push fails within 1–125, nothing of the segment is visible
/// (archive-get: 1), and the push after the restart stores it whole.
#[test]
fn server_stopped_mid_push_leaves_nothing_and_the_retry_succeeds() {
    let mut server = SeaweedFs::start();
    let pg = oldest_pg();
    // 64 MB, uncompressed: a PUT long enough to be cut.
    let (_c, seg) = initdb_segment(&pg, 64);
    let seg_len = fs::metadata(&seg).unwrap().len();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let url = format!("s3://{}/stop/{}", server.bucket(), unique_prefix("stop"));
    let env = server.env();
    // The interrupted push gives up 2 s after the stop; after the restart, the default budget
    // rides out the few seconds of 500s a freshly restarted SeaweedFS answers.
    let args = |retry: &str, cmd: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = [
            "--repo",
            url.as_str(),
            "--compress",
            "none",
            "--s3-retry-timeout",
            retry,
        ]
        .map(String::from)
        .to_vec();
        all.extend(cmd.iter().map(|s| s.to_string()));
        all
    };
    pitr_env(&env, &["init", "--repo", &url]).expect_code(0);
    let push = args("2", &["archive-push", s(&seg)]);
    let mut child = Command::new(pitr_bin());
    child
        .args(&push)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    as_postgres(&mut child);
    let weed = weed_pid(&server);
    // Counted from before the push starts: the push reads its segment while it opens the
    // repository, and the PUT may be well under way once the segment is read.
    let base = bytes_read(weed);
    let mut child = child.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Stop once the server has read a quarter of the segment (the PUT is under way).
    while bytes_read(weed) < base + seg_len / 4 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before the server was stopped"
        );
        assert!(Instant::now() < deadline, "the PUT never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.stop();
    let o = child.wait_with_output().unwrap();
    let code = o.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!((1..=125).contains(&code), "push exited {code}: {stderr}");
    server.restart();

    let out = scratch_dir();
    let target = dest(out.path(), "seg");
    let get: Vec<String> = args("60", &["archive-get", &name, &target, "--prefetch", "0"]);
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    pitr_env(&env, &get).expect_code(1);
    let push = args("60", &["archive-push", s(&seg)]);
    let push: Vec<&str> = push.iter().map(String::as_str).collect();
    pitr_env(&env, &push).expect_code(0);
    pitr_env(&env, &get).expect_code(0);
    assert_eq!(fs::read(&target).unwrap(), fs::read(&seg).unwrap());
}

/// SeaweedFS stopped while `pitr backup` uploads the data directory: the backup fails, no
/// backup is listed (its manifest is written last), and after the restart a new backup
/// completes and verifies.
#[test]
fn server_stopped_mid_backup_lists_nothing_and_the_next_backup_succeeds() {
    let mut server = SeaweedFs::start();
    let pg = oldest_pg();
    let env = server.env();
    let url = format!("s3://{}/backup/{}", server.bucket(), unique_prefix("stop"));
    pitr_env(&env, &["init", "--repo", &url]).expect_code(0);
    let c = Cluster::init(
        &pg,
        ClusterOptions {
            archive_command: Some(format!(
                "'{}' --repo '{url}' archive-push %p",
                pitr_bin().display()
            )),
            ..Default::default()
        }
        .envs(&env),
    );
    c.start();
    c.pgbench_init(5);
    let sock = s(c.socket_dir()).to_string();
    let port = c.port().to_string();
    let backup = |retry: &str| -> Vec<String> {
        [
            "--repo",
            &url,
            "--s3-retry-timeout",
            retry,
            "backup",
            "-h",
            &sock,
            "-p",
            &port,
            "-U",
            "postgres",
        ]
        .map(String::from)
        .to_vec()
    };
    let weed = weed_pid(&server);
    let mut child = Command::new(pitr_bin());
    child
        .args(backup("2"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    as_postgres(&mut child);
    let base = bytes_read(weed);
    let mut child = child.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while bytes_read(weed) < base + (16 << 20) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before the server was stopped"
        );
        assert!(Instant::now() < deadline, "the backup never uploaded");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.stop();
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    server.restart();

    let lab = |args: &[&str]| {
        let mut all = vec!["--repo", url.as_str()];
        all.extend_from_slice(args);
        pitr_env(&env, &all)
    };
    let info = json(&lab(&["--json", "info"]).expect_code(0));
    assert_eq!(
        info["clusters"][0]["backups"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "a half-written backup is listed: {info}"
    );
    let again: Vec<String> = backup("60");
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let label = pitr_env(&env, &again)
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    let info = json(&lab(&["--json", "info"]).expect_code(0));
    let backups = info["clusters"][0]["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{info}");
    assert_eq!(backups[0]["label"], label.as_str(), "{info}");
    lab(&["verify"]).expect_code(0);
}
