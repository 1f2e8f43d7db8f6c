//! Asynchronous archive-push against real PostgreSQL 14–18: a backlog of ready segments drained
//! by PostgreSQL's archiver through `pitr archive-push` with its push-ahead worker; the worker
//! killed (`kill -9`) before its first push, mid-upload and after markers, each time leaving
//! no marker for a segment the repository does not hold; a segment changed under the same name
//! never acknowledged from its stale marker; the same backlog on S3 (a real SeaweedFS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{as_postgres, pg_test_matrix, Cluster, ClusterOptions, PgInstall};

/// Segments in the backlog.
const BACKLOG: u32 = 64;

/// Names of the files in `dir` ending with `suffix` (without it), sorted.
fn names_with(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(suffix).map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Fails unless the repository holds exactly the bytes of `pg_wal/NAME` for every name.
fn assert_stored(repo: &Path, pg_wal: &Path, names: &[String], what: &str) {
    assert_stored_in(&["--repo", s(repo)], &[], pg_wal, names, what);
}

/// [`assert_stored`] for the repository that `repo_args` (and the environment `env`) name.
fn assert_stored_in(
    repo_args: &[&str],
    env: &[(String, String)],
    pg_wal: &Path,
    names: &[String],
    what: &str,
) {
    let got = pitr_testkit::scratch_dir();
    for name in names {
        let dest = got.path().join(name);
        let mut cmd = Command::new(pitr_bin());
        cmd.args(repo_args)
            .args(["archive-get", name, s(&dest)])
            .env_remove("PITR_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)));
        as_postgres(&mut cmd);
        let r = run_of(cmd.output().unwrap());
        assert_eq!(r.code, 0, "{what}: {name} is not in the repository: {r:?}");
        assert!(
            fs::read(&dest).unwrap() == fs::read(pg_wal.join(name)).unwrap(),
            "{what}: {name} differs from the repository's copy"
        );
        fs::remove_file(&dest).unwrap();
    }
}

/// `pitr push-ahead` on the cluster's pg_wal, as PostgreSQL's archive-push would start it.
fn start_worker(repo: &Path, pg_wal: &Path) -> Child {
    let mut c = Command::new(pitr_bin());
    c.args(["--repo", s(repo), "push-ahead", "--pg-wal", s(pg_wal)])
        .args(["--jobs", "2", "--queue", "64"])
        .env_remove("PITR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_postgres(&mut c);
    c.spawn().unwrap()
}

/// Starts a worker and kills it once `reached()`; true if the kill landed before it exited.
fn kill_worker_when(repo: &Path, pg_wal: &Path, reached: impl Fn() -> bool) -> bool {
    let mut child = start_worker(repo, pg_wal);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if reached() {
            child.kill().ok();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn run_of(o: std::process::Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `pitr archive-push pg_wal/NAME` run as PostgreSQL's archiver runs it (in the data directory).
fn archive_push(c: &Cluster, repo: &Path, name: &str) -> Run {
    let mut cmd = Command::new(pitr_bin());
    cmd.args(["--repo", s(repo), "archive-push"])
        .arg(format!("pg_wal/{name}"))
        .env_remove("PITR_CONFIG")
        .current_dir(c.datadir());
    as_postgres(&mut cmd);
    run_of(cmd.output().unwrap())
}

/// When to kill the worker, given the markers there were when it started.
type KillPoint<'a> = Box<dyn Fn(usize) -> bool + 'a>;

/// The backlog: `BACKLOG` segments PostgreSQL marked ready while archive_command was empty.
fn backlog(c: &Cluster) -> Vec<String> {
    c.psql("CREATE TABLE t (i int)");
    c.psql(&format!(
        "DO $$ BEGIN FOR i IN 1..{BACKLOG} LOOP INSERT INTO t VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$"
    ));
    let ready = names_with(&c.datadir().join("pg_wal/archive_status"), ".ready");
    assert!(ready.len() >= BACKLOG as usize, "{ready:?}");
    ready
}

fn async_push_drains_a_backlog_and_acknowledges_only_what_is_stored(install: &PgInstall) {
    let scratch = pitr_testkit::scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let seg_mb = if install.major % 2 == 1 { 1 } else { 2 };
    // archive_mode on with an empty archive_command: PostgreSQL keeps the segments ready.
    let c = Cluster::init(
        install,
        ClusterOptions {
            wal_segsize_mb: Some(seg_mb),
            archive_command: Some(String::new()),
            ..Default::default()
        }
        .set("checkpoint_timeout", "1h")
        .set("max_wal_size", "1GB"),
    );
    c.start();
    let ready = backlog(&c);
    let pg_wal = c.datadir().join("pg_wal");
    let spools = pg_wal.join("pitr-push");
    let wal_dir = repo.join("main/wal/00000001");
    // Markers of the repository's spool (the only one: one repository here).
    let markers = || {
        let mut v: Vec<String> = fs::read_dir(&spools)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| names_with(&d.path(), ".ok"))
            .collect();
        v.sort();
        v
    };

    // Worker killed before it stores anything, mid-upload (a temporary object in the
    // repository), and after one, then several markers: every marker left is stored.
    // Each point is reached relative to the markers there were when the worker started.
    let points: [(&str, KillPoint); 4] = [
        ("at start", Box::new(|_| true)),
        (
            "mid-upload",
            Box::new(|_| {
                names_with(&wal_dir, "")
                    .iter()
                    .any(|n| n.contains(".pitr-tmp."))
            }),
        ),
        (
            "after a marker",
            Box::new(|before| markers().len() > before),
        ),
        (
            "after 8 markers",
            Box::new(|before| markers().len() >= before + 8),
        ),
    ];
    let mut landed = 0;
    for (what, reached) in &points {
        let trial = || {
            let before = markers().len();
            kill_worker_when(&repo, &pg_wal, || reached(before))
        };
        if (0..8).any(|_| trial()) {
            landed += 1;
        }
        assert_stored(&repo, &pg_wal, &markers(), what);
    }
    assert!(landed >= 3, "only {landed} of 4 kill points landed");
    let marked = markers();
    eprintln!("kills landed: {landed}/4; {} markers left", marked.len());

    // A segment changed under the same name (same size, same header) is never acknowledged
    // from its marker: the push stores nothing and fails (the repository holds the original).
    let victim = marked.first().cloned().unwrap_or_else(|| {
        // No marker survived the kills: let a worker leave one.
        start_worker(&repo, &pg_wal).wait().unwrap();
        markers()[0].clone()
    });
    let path = pg_wal.join(&victim);
    let original = fs::read(&path).unwrap();
    let mut changed = original.clone();
    let at = changed.len() - 100;
    changed[at] ^= 0xFF;
    fs::write(&path, &changed).unwrap();
    // (The worker meets the conflict and records it; the call relays its message and exit code.)
    let r = archive_push(&c, &repo, &victim);
    assert_eq!(r.code, 4, "a changed {victim} was acknowledged: {r:?}");
    assert!(r.stderr.contains(&victim), "{r:?}");
    // Put back (a new inode, so also not from a marker): acknowledged after a check.
    let tmp = path.with_extension("orig");
    fs::write(&tmp, &original).unwrap();
    fs::rename(&tmp, &path).unwrap();
    pitr_testkit::chown_to_postgres(&path);
    archive_push(&c, &repo, &victim).expect_code(0);

    // PostgreSQL's archiver drains the rest through archive-push and its worker (a short queue:
    // the worker waits for PostgreSQL to take its markers).
    let started = Instant::now();
    let command = format!(
        "'{}' --repo '{}' archive-push --async-jobs 3 --async-queue 8 %p",
        pitr_bin().display(),
        repo.display()
    );
    c.psql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        command.replace('\'', "''")
    ));
    c.psql("SELECT pg_reload_conf()");
    let last = ready.last().unwrap();
    assert!(
        c.wait_archived(last, Duration::from_secs(120)),
        "{last} not archived:\n{}",
        c.log_tail(30)
    );
    eprintln!(
        "PostgreSQL {}: {} ready segments of {seg_mb} MB drained in {:?}",
        install.major,
        ready.len(),
        started.elapsed()
    );
    // Every segment PostgreSQL counts as archived is in the repository, byte for byte.
    let done = names_with(&pg_wal.join("archive_status"), ".done");
    let done: Vec<String> = done.into_iter().filter(|n| n.len() == 24).collect();
    assert!(done.len() >= ready.len(), "{done:?}");
    assert_stored(&repo, &pg_wal, &done, "archived");
    assert_eq!(c.archiver().failed_count, 0, "{}", c.log_tail(30));

    // Once the worker has gone, no marker is left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !markers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(markers(), Vec::<String>::new());
    let info = json(&pitr(&["--repo", s(&repo), "--json", "info"]).expect_code(0));
    assert_eq!(
        info["clusters"][0]["timelines"][0]["gaps"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "{info}"
    );
    c.stop();
}
pg_test_matrix!(async_push_drains_a_backlog_and_acknowledges_only_what_is_stored);

/// `--no-async` (and `archive_async = false`) pushes only the file asked for: no worker, no
/// spool directory.
#[test]
fn no_async_pushes_in_the_process() {
    let install = newest_pg();
    let scratch = pitr_testkit::scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            archive_command: Some(String::new()),
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t (i int)");
    c.psql("DO $$ BEGIN FOR i IN 1..4 LOOP INSERT INTO t VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$");
    let ready = names_with(&c.datadir().join("pg_wal/archive_status"), ".ready");
    let config = scratch.path().join("pitr.toml");
    fs::write(&config, "archive_async = false\n").unwrap();
    pitr_testkit::chown_to_postgres(&config);
    for (i, name) in ready.iter().enumerate() {
        let mut cmd = Command::new(pitr_bin());
        cmd.args(["--repo", s(&repo)]);
        if i % 2 == 0 {
            cmd.args(["archive-push", "--no-async"]);
        } else {
            cmd.args(["--config", s(&config), "archive-push"]);
        }
        cmd.arg(format!("pg_wal/{name}")).current_dir(c.datadir());
        as_postgres(&mut cmd);
        run_of(cmd.output().unwrap()).expect_code(0);
    }
    assert!(!c.datadir().join("pg_wal/pitr-push").exists());
    let pg_wal: PathBuf = c.datadir().join("pg_wal");
    assert_stored(&repo, &pg_wal, &ready, "sync");
    c.stop();
}

/// The backlog drained on S3: PostgreSQL's archiver (with the AWS variables in its
/// environment, as in production) through archive-push and its worker; every segment
/// PostgreSQL counts as archived is in the bucket, byte for byte.
#[test]
fn async_push_drains_a_backlog_on_s3() {
    let install = newest_pg();
    let server = pitr_testkit::SeaweedFs::shared();
    let url = format!("s3://{}/async-{}", server.bucket(), std::process::id());
    let env = server.env();
    let mut init = Command::new(pitr_bin());
    init.args(["--repo", &url, "init"])
        .env_remove("PITR_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)));
    as_postgres(&mut init);
    run_of(init.output().unwrap()).expect_code(0);
    let c = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            archive_command: Some(String::new()),
            ..Default::default()
        }
        .set("checkpoint_timeout", "1h")
        .envs(&env),
    );
    c.start();
    let ready = backlog(&c);
    let started = Instant::now();
    let command = format!("'{}' --repo '{url}' archive-push %p", pitr_bin().display());
    c.psql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        command.replace('\'', "''")
    ));
    c.psql("SELECT pg_reload_conf()");
    let last = ready.last().unwrap();
    assert!(
        c.wait_archived(last, Duration::from_secs(120)),
        "{last} not archived:\n{}",
        c.log_tail(30)
    );
    eprintln!(
        "S3: {} ready segments drained in {:?}",
        ready.len(),
        started.elapsed()
    );
    let pg_wal = c.datadir().join("pg_wal");
    // The worker ran (it leaves its spool directory), and nothing failed.
    assert!(pg_wal.join("pitr-push").is_dir());
    assert_eq!(c.archiver().failed_count, 0, "{}", c.log_tail(30));
    let done: Vec<String> = names_with(&pg_wal.join("archive_status"), ".done")
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect();
    assert!(done.len() >= ready.len(), "{done:?}");
    assert_stored_in(&["--repo", &url], &env, &pg_wal, &done, "S3");
    c.stop();
}

/// One archive_command pushing every segment into two repositories (a local one and another,
/// as a DBA keeps a second copy): each repository has its own spool and worker, so neither
/// call waits for the other's worker or consumes its markers, and both hold every segment.
#[test]
fn two_repositories_in_one_archive_command_do_not_wait_for_each_other() {
    let install = newest_pg();
    let scratch = pitr_testkit::scratch_dir();
    let (a, b) = (scratch.path().join("repo-a"), scratch.path().join("repo-b"));
    for r in [&a, &b] {
        pitr_as_postgres(&["init", "--repo", s(r)]).expect_code(0);
    }
    let c = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            archive_command: Some(format!(
                "{} && {}",
                archive_command(&a, ""),
                archive_command(&b, "")
            )),
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t (i int)");
    c.psql("DO $$ BEGIN FOR i IN 1..12 LOOP INSERT INTO t VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$");
    let last = c.switch_wal();
    let started = Instant::now();
    // A call waiting for the other repository's worker would wait minutes per segment.
    assert!(
        c.wait_archived(&last, Duration::from_secs(60)),
        "13 segments not archived into two repositories in 60 s"
    );
    let took = started.elapsed();
    let pg_wal = c.datadir().join("pg_wal");
    let done = names_with(&pg_wal.join("archive_status"), ".done");
    let segments: Vec<String> = done.into_iter().filter(|n| n.len() == 24).collect();
    assert!(segments.len() >= 13, "{segments:?}");
    assert_stored(&a, &pg_wal, &segments, "first repository");
    assert_stored(&b, &pg_wal, &segments, "second repository");
    eprintln!(
        "{} segments archived into two repositories in {took:?}",
        segments.len()
    );
    c.stop();
}
