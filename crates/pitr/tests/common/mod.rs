//! Helpers shared by the CLI integration tests: run the real `pitr` binary, optionally as the
//! postgres OS user (as PostgreSQL's archive_command would).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pitr_testkit::{as_postgres, installs, PgInstall};

/// The binary under test.
pub fn pitr_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pitr"))
}

/// The newest PostgreSQL under test, for a test that needs one server of any version (per-major
/// tests use `pitr_testkit::pg_test_matrix!`).
pub fn newest_pg() -> PgInstall {
    installs().pop().expect("no PostgreSQL installed")
}

/// The oldest PostgreSQL under test, for a test that needs one server of any version.
pub fn oldest_pg() -> PgInstall {
    installs()
        .into_iter()
        .next()
        .expect("no PostgreSQL installed")
}

/// A finished pitr run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "pitr exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(pitr_bin());
    c.args(args)
        .env_remove("PITR_REPO")
        .env_remove("PITR_CLUSTER")
        .env_remove("PITR_CONFIG");
    c
}

/// Runs pitr as the current user.
pub fn pitr(args: &[&str]) -> Run {
    Run::from(command(args).output().expect("run pitr"))
}

/// Runs pitr as the postgres OS user when we are root.
pub fn pitr_as_postgres(args: &[&str]) -> Run {
    pitr_env(&[], args)
}

/// Runs pitr as the postgres OS user (when we are root) with `env` added.
pub fn pitr_env(env: &[(String, String)], args: &[&str]) -> Run {
    let mut c = command(args);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    as_postgres(&mut c);
    Run::from(c.output().expect("run pitr"))
}

/// `pitr --repo REPO COMMAND -h SOCKET -p PORT -U postgres EXTRA…` against a test cluster, as
/// the postgres OS user.
pub fn pitr_on(c: &pitr_testkit::Cluster, repo: &Path, command: &str, extra: &[&str]) -> Run {
    let port = c.port().to_string();
    let mut args = vec![
        "--repo",
        s(repo),
        command,
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
    ];
    args.extend_from_slice(extra);
    pitr_as_postgres(&args)
}

/// The archive_command that makes PostgreSQL archive into `repo` through pitr.
pub fn archive_command(repo: &Path, extra: &str) -> String {
    format!(
        "'{}' --repo '{}' {extra} archive-push %p",
        pitr_bin().display(),
        repo.display()
    )
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The JSON a `--json` run printed.
pub fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// psql against a server listening on `sock`/`port`.
pub fn psql_port(install: &PgInstall, sock: &Path, port: u16, sql: &str) -> String {
    let out = Command::new(install.bin("psql"))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(sock)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository in a fresh scratch directory (initialised as the postgres OS user) and a started
/// cluster whose archive_command archives into it with `archive-push EXTRA`; `opts` sets the
/// rest. The scratch directory lives as long as the returned guard.
pub fn archiving_cluster(
    install: &PgInstall,
    extra: &str,
    opts: pitr_testkit::ClusterOptions,
) -> (tempfile::TempDir, PathBuf, pitr_testkit::Cluster) {
    let scratch = pitr_testkit::scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = pitr_testkit::Cluster::init(
        install,
        pitr_testkit::ClusterOptions {
            archive_command: Some(archive_command(&repo, extra)),
            ..opts
        },
    );
    c.start();
    (scratch, repo, c)
}

/// Where file `path` of backup `label` lies in a local, unencrypted repository: its bundle
/// object and the byte range of its frame in it, or `None` when it has an object of its own.
#[allow(dead_code)]
pub fn bundled_at(
    repo: &Path,
    label: &str,
    path: &str,
) -> Option<(PathBuf, std::ops::Range<usize>)> {
    let dir = repo.join("main/backup").join(label);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("backup.json")).unwrap()).unwrap();
    let f = m["body"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not in backup {label}"));
    let b = f.get("bundle")?;
    let (id, offset) = (
        b["id"].as_u64().unwrap(),
        b["offset"].as_u64().unwrap() as usize,
    );
    let len = f["stored_size"].as_u64().unwrap() as usize;
    Some((dir.join(format!("bundle/{id}")), offset..offset + len))
}
