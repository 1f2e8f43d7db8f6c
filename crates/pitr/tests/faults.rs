//! The fault campaign: archive-push, archive-get and backup killed (`kill -9`) at many points,
//! backup, restore and archive-get run out of space on the repository or the destination (a
//! small tmpfs, as root), and a backup whose repository directory turns read-only mid-run. After each fault nothing that was acknowledged is lost, nothing
//! half-written is visible (a segment is absent or whole, a backup is listed only when complete,
//! a restored directory refuses to start), `verify` passes, and a rerun finishes the work. Each
//! test prints its counts. Restores killed at every step are `restore_crash.rs`; expire
//! interrupted after every deletion is pitr-core's `an_interrupted_expire_is_finished_by_the_next_run`;
//! S3 servers stopped mid-backup and mid-push are in `s3.rs`; a full S3 store is `s3_faults.rs`;
//! `pitr stream` killed at several points is `stream_faults.rs`; short writes are here
//! (`short_writes_are_never_acknowledged_and_reruns_finish`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pitr_testkit::{
    as_postgres, pg_test_matrix, postgres_uid_gid, scratch_dir, share_of, Cluster, ClusterOptions,
    PgInstall,
};

/// Polls `child` and kills it once `reached()` is true; true if it was killed (false if it
/// exited first).
fn kill_when(mut child: Child, reached: impl Fn() -> bool) -> bool {
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if reached() {
            child.kill().ok();
            child.wait().unwrap();
            return true;
        }
        // Spin (a sleep lets a fast run on an idle machine slip past every point).
        std::thread::yield_now();
    }
}

/// Runs `trial` (which starts a run and kills it at a point) up to three times, until the kill
/// lands before the run ends; true if it landed. On a loaded machine the poller can miss a
/// point of a fast run, so a trial is repeated rather than the point skipped (three tries: a
/// point a fast push slips past is usually slipped past every time, and each try is a 64 MB
/// push).
fn attempts(mut trial: impl FnMut() -> bool) -> bool {
    (0..3).any(|_| trial())
}

/// Size of the first file in `dir` whose name contains `mark`, if any.
fn temp_size(dir: &Path, mark: &str) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains(mark))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

/// Where in a run to kill it: once a temporary file exists and has reached this fraction of its
/// final size (0.0: as soon as it exists), or (None) once the result is published under its name.
const POINTS: [Option<f64>; 9] = [
    Some(0.0),
    Some(0.1),
    Some(0.25),
    Some(0.4),
    Some(0.55),
    Some(0.7),
    Some(0.85),
    Some(0.99),
    None,
];

fn pitr_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(pitr_bin());
    c.args(args)
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The oldest archived WAL segment of a stopped-or-running cluster's pg_wal.
fn first_segment(c: &Cluster) -> PathBuf {
    let mut names: Vec<PathBuf> = fs::read_dir(c.datadir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    names.sort();
    names.remove(0)
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A fresh repository and a cluster (newest PostgreSQL, 64 MB segments) whose first WAL
/// segment is returned: long enough to be interrupted anywhere.
fn segment_and_repo() -> (tempfile::TempDir, PathBuf, Cluster, PathBuf) {
    let install = newest_pg();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr(&["init", "--repo", s(&repo)]).expect_code(0);
    let a = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(64),
            ..Default::default()
        },
    );
    let seg = first_segment(&a);
    (scratch, repo, a, seg)
}

/// archive-push and archive-get killed at points spread over their whole run, on a 64 MB
/// segment stored uncompressed (long enough to be interrupted anywhere): after each kill the
/// segment is absent (archive-get exits 1) or whole; a destination holds nothing or the whole
/// segment; a rerun always finishes.
#[test]
fn archive_push_and_get_killed_anywhere_lose_nothing() {
    let (scratch, repo, _a, seg) = segment_and_repo();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let original = fs::read(&seg).unwrap();
    let len = original.len() as f64;
    let wal_dir = repo.join("main/wal/00000001");
    let stored = wal_dir.join(&name);
    let dest_dir = scratch.path().join("dest");
    let dest = dest_dir.join(&name);
    fs::create_dir(&dest_dir).unwrap();
    let push_args = [
        "--repo",
        s(&repo),
        "--compress",
        "none",
        "archive-push",
        s(&seg),
    ];
    let get_args = ["--repo", s(&repo), "archive-get", &name, s(&dest)];
    pitr(&push_args).expect_code(0);

    let (mut push_kills, mut absent, mut whole) = (0, 0, 0);
    for (round, point) in POINTS.iter().chain(POINTS.iter()).enumerate() {
        fs::remove_file(&dest).ok();
        let reached = || match point {
            Some(f) => temp_size(&wal_dir, ".pitr-tmp.").is_some_and(|n| n as f64 >= f * len),
            None => stored.exists(),
        };
        push_kills += usize::from(attempts(|| {
            fs::remove_file(&stored).unwrap();
            kill_when(pitr_cmd(&push_args).spawn().unwrap(), reached)
        }));
        let got = pitr(&get_args);
        match got.code {
            1 => {
                absent += 1;
                assert!(!dest.exists());
            }
            0 => {
                whole += 1;
                assert!(fs::read(&dest).unwrap() == original, "a different segment");
                fs::remove_file(&dest).unwrap();
            }
            other => panic!("archive-get after a push killed at {point:?} exited {other}: {got:?}"),
        }
        // The rerun (as PostgreSQL's archiver retries) finishes, whatever was left; every other
        // round a get killed anywhere leaves nothing or the whole segment under the name.
        pitr(&push_args).expect_code(0);
        if round % 2 == 1 {
            pitr(&get_args).expect_code(0);
            assert!(fs::read(&dest).unwrap() == original);
        }
    }
    let info = pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0);
    assert!(!info.stdout.contains("pitr-tmp"), "{}", info.stdout);

    let mut get_kills = 0;
    for point in POINTS.iter().chain(POINTS.iter()) {
        let reached = || match point {
            Some(f) => temp_size(&dest_dir, ".pitr-tmp").is_some_and(|n| n as f64 >= f * len),
            None => dest.exists(),
        };
        get_kills += usize::from(attempts(|| {
            fs::remove_file(&dest).ok();
            kill_when(pitr_cmd(&get_args).spawn().unwrap(), reached)
        }));
        // PostgreSQL reads whatever is under the name: nothing, or the whole segment.
        if dest.exists() {
            assert!(fs::read(&dest).unwrap() == original, "a torn segment");
        }
        pitr(&get_args).expect_code(0);
        assert!(fs::read(&dest).unwrap() == original);
    }
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
    eprintln!(
        "archive-push: killed at {push_kills} points, {absent} left it absent and {whole} whole, 0 half-visible, {push_kills}/{push_kills} finished by a rerun; \
         archive-get: killed at {get_kills} points, 0 torn segments, {get_kills}/{get_kills} finished by a rerun"
    );
    // A 64 MB push is written in one call and fsynced: on a fast, idle disk it can finish
    // between two polls, so how many of its 18 points a kill lands on varies from run to run
    // (5 to 14 here); a few must land, and every one that did was checked above.
    assert!(push_kills >= 3, "only {push_kills} push kills landed");
    assert!(get_kills >= 12, "only {get_kills} get kills landed");
}

/// A backup killed at points spread over its run is never listed, leaves a repository that
/// verifies, and the next backup succeeds; the last one restores every row.
fn backups_killed_anywhere_are_never_listed(pg: &PgInstall) {
    let (scratch, repo, c) = archiving_cluster(pg, "", ClusterOptions::default());
    c.pgbench_init(1);
    let full_args = backup_args(&repo, &c);
    let full_args: Vec<&str> = full_args.iter().map(String::as_str).collect();
    let run = |args: &[&str]| {
        let mut cmd = pitr_cmd(args);
        as_postgres(&mut cmd);
        cmd
    };
    assert!(run(&full_args).status().unwrap().success());
    let backups = repo.join("main/backup");
    let labels = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let files = walk(&labels()[0].join("data")).len() as f64;
    // The label a run made (not among `before`), and the files it has stored so far.
    let new_label = |before: &[PathBuf]| labels().into_iter().find(|l| !before.contains(l));
    let stored = |l: &Path| walk(&l.join("data")).len() as f64;
    let listed = || {
        json(&pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0))["clusters"][0]
            ["backups"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut expected = listed();
    assert_eq!(expected, 1);
    let (mut kills, mut published) = (0, 0);
    // The kill points are in pitr's code, not the server's: each major takes its share of them.
    let points = share_of(pg, &POINTS);
    for &point in &points {
        let before = labels();
        let reached = || match (point, new_label(&before)) {
            (Some(f), Some(l)) => stored(&l) >= f * files,
            (None, Some(l)) => l.join("backup.json").exists(),
            (_, None) => false,
        };
        if kill_when(run(&full_args).spawn().unwrap(), reached) {
            kills += 1;
        }
        // Listed only once its manifest is in: then it is whole (verify reads every file).
        let now = listed();
        assert!(
            now == expected || (now == expected + 1 && point.is_none()),
            "killed at {point:?}: {now} backups listed, {expected} before"
        );
        published += now - expected;
        expected = now;
        pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
        assert!(run(&full_args).status().unwrap().success(), "the rerun");
        expected += 1;
        assert_eq!(listed(), expected);
    }
    c.psql("CREATE TABLE after AS SELECT 42 AS answer");
    let rows = c.psql("SELECT sum(abalance) + count(*) FROM pgbench_accounts");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();
    let target = scratch.path().join("restored");
    pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "restore",
        "--pgdata",
        s(&target),
        "--start",
        "--pg-bin",
        s(&pg.bindir),
        "-p",
        &c.port().to_string(),
    ])
    .expect_code(0);
    let sock = c.socket_dir();
    assert_eq!(
        psql_port(
            pg,
            sock,
            c.port(),
            "SELECT sum(abalance) + count(*) FROM pgbench_accounts"
        ),
        rows
    );
    assert_eq!(
        psql_port(pg, sock, c.port(), "SELECT answer FROM after"),
        "42"
    );
    stop_restored(pg, &target);
    eprintln!(
        "PostgreSQL {}: backup killed at {kills} points ({published} just after its manifest landed), 0 listed half-backups, {kills}/{kills} followed by a successful backup; the last restored every row",
        pg.major
    );
    assert!(
        kills + 2 >= points.len(),
        "only {kills} of {} backup kills landed",
        points.len()
    );
}
pg_test_matrix!(backups_killed_anywhere_are_never_listed);

/// `pitr --repo REPO backup` of `c` by the copy method, as the arguments of a command line.
fn backup_args(repo: &Path, c: &Cluster) -> Vec<String> {
    let (repo, pgdata, sock) = (s(repo), s(c.datadir()), s(c.socket_dir()));
    [
        "--repo", repo, "backup", "--pgdata", pgdata, "-h", sock, "-p",
    ]
    .map(str::to_string)
    .into_iter()
    .chain([c.port().to_string()])
    .collect()
}

/// Stops the server a restore started on `dir` (fast).
fn stop_restored(pg: &PgInstall, dir: &Path) {
    let mut stop = Command::new(pg.bin("pg_ctl"));
    stop.arg("-D").arg(dir).args(["-m", "fast", "-w", "stop"]);
    as_postgres(&mut stop);
    assert!(stop.status().unwrap().success(), "pg_ctl stop {dir:?}");
}

/// A tmpfs mounted for the test's lifetime (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size_mb: u32) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0777")])
            .arg("tmpfs")
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs on {path:?}");
        Tmpfs(path.to_path_buf())
    }

    /// Makes room: the "free some space, then rerun" of an operator.
    fn resize(&self, size_mb: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remount {:?}", self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Out of space on the repository during a backup, on the destination during a restore and
/// during an archive-get: each fails with a clear error (archive-get above 125), leaves nothing
/// that looks usable, and succeeds once there is room.
#[test]
fn no_space_on_repository_or_destination_fails_cleanly_and_reruns_finish() {
    if postgres_uid_gid().is_none() {
        eprintln!("not root: cannot mount a small tmpfs; this check runs in CI as root");
        return;
    }
    let pg = newest_pg();
    let scratch = scratch_dir();
    let repo_fs = Tmpfs::mount(&scratch.path().join("repofs"), 6);
    let repo = repo_fs.0.join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        &pg,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    // About 20 MB of barely compressible rows: more than the repository's 6 MB.
    c.psql(
        "CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 7)::text) AS a, \
         md5((g * 13)::text) AS b FROM generate_series(1, 200000) g",
    );
    let port = c.port().to_string();
    let backup = backup_args(&repo, &c);
    let backup: Vec<&str> = backup.iter().map(String::as_str).collect();
    let full = pitr_as_postgres(&backup);
    assert!(
        (1..=125).contains(&full.code) && full.stderr.to_lowercase().contains("no space left"),
        "backup into a full repository: {full:?}"
    );
    let info = json(&pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0));
    assert_eq!(info["clusters"][0]["backups"].as_array().unwrap().len(), 0);
    repo_fs.resize(512);
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
    pitr_as_postgres(&backup).expect_code(0);
    c.psql("INSERT INTO noise VALUES (0, 'after', 'the backup')");
    let count = c.psql("SELECT count(*) FROM noise");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));

    // archive-get into a full pg_wal: above 125, so PostgreSQL stops instead of ending recovery.
    let dest_fs = Tmpfs::mount(&scratch.path().join("destfs"), 1);
    let got = pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        &last,
        s(&dest_fs.0.join(&last)),
    ]);
    assert!(
        got.code > 125 && got.stderr.to_lowercase().contains("no space left"),
        "archive-get into a full destination: {got:?}"
    );
    assert!(!dest_fs.0.join(&last).exists());
    drop(dest_fs);

    // A restore into a destination too small: fails, and the directory cannot start.
    c.stop();
    let target_fs = Tmpfs::mount(&scratch.path().join("targetfs"), 24);
    let target = target_fs.0.join("data");
    let restore = [
        "--repo",
        s(&repo),
        "restore",
        "--pgdata",
        s(&target),
        "--start",
        "--pg-bin",
        s(&pg.bindir),
        "-p",
        &port,
    ];
    let full = pitr_as_postgres(&restore);
    assert!(
        full.code != 0 && full.stderr.to_lowercase().contains("no space left"),
        "restore into a full destination: {full:?}"
    );
    assert!(!target.join("global/pg_control").exists());
    target_fs.resize(512);
    let rerun = pitr_as_postgres(&restore);
    rerun.expect_code(0);
    let sock = c.socket_dir();
    assert_eq!(
        psql_port(&pg, sock, c.port(), "SELECT count(*) FROM noise"),
        count
    );
    stop_restored(&pg, &target);
    let leftovers: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("pitr-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!(
        "no space: backup, archive-get and restore each failed cleanly, and each rerun finished"
    );
}

/// Permissions taken away in the middle of a backup (its directory in the repository, and
/// everything under it, made read-only once it holds its first object or directory: small files
/// go into bundles, so there are few objects to wait for): the backup fails naming the path and
/// the OS user, is never listed, and succeeds once the permissions are back.
#[test]
fn permissions_changed_mid_backup_fail_it_clearly_and_a_rerun_succeeds() {
    if postgres_uid_gid().is_none() {
        eprintln!("not root: cannot run pitr as another OS user; this check runs in CI as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pg = newest_pg();
    let (_scratch, repo, c) = archiving_cluster(&pg, "", ClusterOptions::default());
    c.pgbench_init(1);
    let args = backup_args(&repo, &c);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = repo.parent().unwrap().join("backup.stderr");
    let mut cmd = pitr_cmd(&args);
    cmd.stderr(fs::File::create(&log).unwrap());
    as_postgres(&mut cmd);
    let backups = repo.join("main/backup");
    let mut locked = None;
    // Once the label's directory holds something, it and its directories become read-only;
    // the backup runs on (at the latest, its manifest cannot be written).
    let lock = || {
        let label = fs::read_dir(&backups).ok()?.next()?.ok()?.path();
        fs::read_dir(&label).ok()?.next()?.ok()?;
        for dir in std::iter::once(label.clone()).chain(dirs_under(&label)) {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        }
        Some(label)
    };
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if locked.is_none() {
            locked = lock();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let data = locked.expect("the backup finished before its directory could be locked");
    let stderr = fs::read_to_string(&log).unwrap();
    let code = status.code().unwrap_or(-1);
    assert!(
        (1..=125).contains(&code)
            && stderr.contains("ermission denied")
            && stderr.contains("postgres")
            && stderr.contains(&*data.to_string_lossy()),
        "backup with its directory made read-only exited {code}:\n{stderr}"
    );
    let info = json(&pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0));
    assert_eq!(info["clusters"][0]["backups"].as_array().unwrap().len(), 0);
    for dir in std::iter::once(data.clone()).chain(dirs_under(&data)) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    pitr_as_postgres(&args).expect_code(0);
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
}

fn dirs_under(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
                out.extend(dirs_under(&e.path()));
            }
        }
    }
    out
}

/// `pitr ARGS` with the file-size limit at `limit_kb` and SIGXFSZ ignored: a write(2) that
/// crosses the limit writes fewer bytes than asked (a real short write), the next one fails
/// with EFBIG.
fn pitr_with_file_size_limit(limit_kb: u64, args: &[&str]) -> Run {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f {limit_kb}; exec '{}' {}",
        pitr_bin().display(),
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Short writes: archive-push into the repository and archive-get into the destination whose
/// file writes stop short (RLIMIT_FSIZE at a fraction of the 64 MB segment, SIGXFSZ ignored, so
/// write(2) returns fewer bytes than asked and then EFBIG). Each fails with a clear error,
/// acknowledges nothing (push exits within 1-125 and the segment stays absent; get exits above
/// 125 and nothing is under the name), and a rerun without the limit finishes; verify passes.
#[test]
fn short_writes_are_never_acknowledged_and_reruns_finish() {
    let (scratch, repo, _a, seg) = segment_and_repo();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let original = fs::read(&seg).unwrap();
    let dest = scratch.path().join("dest");
    let push = [
        "--repo",
        s(&repo),
        "--compress",
        "none",
        "archive-push",
        s(&seg),
    ];
    let get = ["--repo", s(&repo), "archive-get", &name, s(&dest)];
    let mut trials = 0;
    for limit_kb in [1, 4096, 40_000, 65_535] {
        let short = pitr_with_file_size_limit(limit_kb, &push);
        assert!(
            (1..=125).contains(&short.code) && short.stderr.contains("too large"),
            "archive-push with writes cut at {limit_kb} kB: {short:?}"
        );
        pitr(&get).expect_code(1);
        assert!(!dest.exists());
        trials += 1;
    }
    pitr(&push).expect_code(0);
    for limit_kb in [1, 4096, 40_000, 65_535] {
        let short = pitr_with_file_size_limit(limit_kb, &get);
        assert!(
            short.code > 125 && short.stderr.contains("too large"),
            "archive-get with writes cut at {limit_kb} kB: {short:?}"
        );
        assert!(!dest.exists(), "a short segment under its name");
        trials += 1;
    }
    pitr(&get).expect_code(0);
    assert!(fs::read(&dest).unwrap() == original);
    pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
    let leftovers: Vec<_> = walk(&repo)
        .into_iter()
        .chain(
            walk(scratch.path())
                .into_iter()
                .filter(|p| p.starts_with(&dest)),
        )
        .filter(|p| p.to_string_lossy().contains("pitr-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("short writes: {trials} runs cut short, 0 acknowledged, every rerun finished");
}
