//! A restore killed (`kill -9`) at any point leaves a data directory PostgreSQL refuses to
//! start, and running the same restore again (or with `--delta`) finishes it with exactly the
//! rows of the original: on a fresh directory and over a `--delta` target that holds a promoted
//! cluster's own WAL in `pg_wal`, against real PostgreSQL 14–18.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{
    as_postgres, pg_test_matrix, scratch_dir, share_of, Cluster, ClusterOptions, PgInstall,
};

/// When to kill the restore.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// The control file of the directory is gone (the first change).
    ControlGone,
    /// The restore marker appeared.
    Marker,
    /// This fraction of an uninterrupted restore's duration has passed.
    Fraction(f64),
    /// The restored control file landed under its temporary name.
    PendingControl,
    /// Every data file is in place: `backup_label` is being written.
    BackupLabel,
    /// The signal file is written: only durability and the control file's rename remain.
    SignalFile,
}

impl KillAt {
    fn reached(self, dir: &Path, started: Instant, full: Duration) -> bool {
        match self {
            KillAt::ControlGone => !dir.join("global/pg_control").exists(),
            KillAt::Marker => dir.join("pitr-restore-in-progress").exists(),
            KillAt::Fraction(f) => started.elapsed() >= full.mul_f64(f),
            KillAt::PendingControl => dir.join("global/pg_control.pitr-pending").exists(),
            KillAt::BackupLabel => dir.join("backup_label").exists(),
            KillAt::SignalFile => dir.join("recovery.signal").exists(),
        }
    }
}

struct Lab {
    scratch: tempfile::TempDir,
    repo: PathBuf,
    install: PgInstall,
    sock: PathBuf,
    port: u16,
}

impl Lab {
    fn restore_cmd(&self, dir: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(pitr_bin());
        c.args(["--repo", s(&self.repo), "restore", "--pgdata", s(dir)])
            .args(extra)
            .env_remove("PITR_REPO")
            .env_remove("PITR_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // As the postgres OS user: files are never left to root, so the only thing that can
        // keep a half-restored directory from starting is the missing control file.
        as_postgres(&mut c);
        c
    }

    /// Runs the restore to completion; returns how long it took.
    fn restore(&self, dir: &Path, extra: &[&str]) -> Duration {
        let started = Instant::now();
        let out = self.restore_cmd(dir, extra).output().unwrap();
        assert!(
            out.status.success(),
            "restore {dir:?} {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    /// Starts the restore and kills it with SIGKILL once `at` is reached; false when it
    /// finished first.
    fn restore_killed(&self, dir: &Path, extra: &[&str], at: KillAt, full: Duration) -> bool {
        let mut child = self.restore_cmd(dir, extra).spawn().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "restore {dir:?} failed before {at:?}");
                return false;
            }
            if at.reached(dir, started, full) {
                child.kill().unwrap();
                child.wait().unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    fn pg_ctl(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(dir).args(args);
        as_postgres(&mut cmd);
        cmd.output().unwrap()
    }

    /// `pg_ctl start` must fail on `dir`, and no server may be left running on it.
    fn assert_refuses_to_start(&self, dir: &Path, what: &str) {
        let log = self.scratch.path().join("refused.log");
        let _ = fs::remove_file(&log);
        fs::write(&log, b"").unwrap();
        pitr_testkit::chown_to_postgres(&log);
        let out = self.pg_ctl(dir, &["-l", s(&log), "-w", "-t", "20", "start"]);
        let text = fs::read_to_string(&log).unwrap_or_default();
        if out.status.success() {
            let _ = self.pg_ctl(dir, &["-m", "immediate", "-w", "stop"]);
            panic!("PostgreSQL started on a half-restored directory ({what}):\n{text}");
        }
        assert!(pitr_os_running(dir).is_none(), "{what}: a server runs");
        if dir.join("PG_VERSION").exists() && dir.join("postgresql.conf").exists() {
            assert!(
                text.contains("pg_control"),
                "{what}: refused, but why?\n{text}"
            );
        }
    }

    /// Starts `dir`, waits for the end of recovery, returns [`PROBE`]'s result and stops it.
    fn rows(&self, dir: &Path) -> String {
        let log = dir.join("startup.log");
        let out = self.pg_ctl(dir, &["-l", s(&log), "-w", "-t", "120", "start"]);
        assert!(
            out.status.success(),
            "{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while psql_port(
            &self.install,
            &self.sock,
            self.port,
            "SELECT pg_is_in_recovery()",
        ) != "f"
        {
            assert!(Instant::now() < deadline, "recovery did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = psql_port(&self.install, &self.sock, self.port, PROBE);
        // Immediate: quicker, and the --delta target is then a crashed cluster with WAL to replay.
        let out = self.pg_ctl(dir, &["-m", "immediate", "-w", "stop"]);
        assert!(out.status.success(), "{out:?}");
        r
    }
}

fn pitr_os_running(dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

const PROBE: &str = "SELECT (SELECT count(*) FROM after_backup) || ' ' || \
     (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_accounts)";

/// Copies a directory tree as the postgres user would own it.
fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn killed_restores_never_start_and_reruns_finish_them(pg: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        pg,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    c.pgbench_init(2); // about 30 MB of relations
    c.psql("CREATE TABLE after_backup (id int)");
    pitr_on(&c, &repo, "backup", &[]).expect_code(0);
    // Rows only WAL replay brings back.
    c.psql("INSERT INTO after_backup SELECT g FROM generate_series(1, 777) g");
    c.psql("UPDATE pgbench_accounts SET abalance = abalance + 3 WHERE aid % 7 = 0");
    let expected = c.psql(PROBE);
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    c.stop();
    let lab = Lab {
        repo,
        install: pg.clone(),
        sock: c.socket_dir().to_path_buf(),
        port: c.port(),
        scratch,
    };

    // The reference: an uninterrupted restore, started and promoted. Stopped, it is the --delta
    // target: a cluster with WAL of its own (a new timeline) in pg_wal.
    let reference = lab.scratch.path().join("reference");
    let full = lab.restore(&reference, &[]);
    assert_eq!(lab.rows(&reference), expected);
    let own_wal = fs::read_dir(reference.join("pg_wal"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 24)
        .count();
    assert!(own_wal > 0, "the delta target holds no WAL");

    let mut killed = 0;
    let mut finished_first = 0;
    let mut trial = |n: usize, at: KillAt, delta: bool| {
        let dir = lab.scratch.path().join(format!("trial{n}"));
        let mut args: Vec<&str> = Vec::new();
        if delta {
            copy_tree(&reference, &dir);
            args.push("--delta");
        }
        if !lab.restore_killed(&dir, &args, at, full) {
            finished_first += 1;
            return;
        }
        killed += 1;
        let what = format!(
            "killed at {at:?}{}",
            if delta { " over --delta" } else { "" }
        );
        assert!(
            !dir.join("global/pg_control").exists(),
            "{what}: the control file is in place"
        );
        lab.assert_refuses_to_start(&dir, &what);
        // The same restore again; every other fresh trial resumes with --delta instead.
        if !delta && n % 2 == 1 {
            args.push("--delta");
        }
        lab.restore(&dir, &args);
        assert!(!dir.join("pitr-restore-in-progress").exists());
        assert_eq!(lab.rows(&dir), expected, "{what}, then rerun");
        fs::remove_dir_all(&dir).unwrap();
    };
    let fresh = [
        KillAt::Marker,
        KillAt::Fraction(0.3),
        KillAt::Fraction(0.7),
        KillAt::PendingControl,
        KillAt::BackupLabel,
        KillAt::SignalFile,
    ]
    .map(|at| (at, false));
    let over_delta = [
        KillAt::ControlGone,
        KillAt::PendingControl,
        KillAt::BackupLabel,
        KillAt::SignalFile,
    ]
    .map(|at| (at, true));
    // The kill points are in pitr's code, not the server's: each major takes its share of them.
    let trials = share_of(pg, &[fresh.as_slice(), over_delta.as_slice()].concat());
    for (n, &(at, delta)) in trials.iter().enumerate() {
        trial(n, at, delta);
    }
    eprintln!(
        "PostgreSQL {}: restore of {full:?} killed at {killed} points ({finished_first} finished before the kill), 0 startable half-restores, {killed}/{killed} finished by a rerun",
        pg.major
    );
    assert!(
        killed + 2 >= trials.len(),
        "only {killed} of {} kills landed",
        trials.len()
    );
}
pg_test_matrix!(killed_restores_never_start_and_reruns_finish_them);
