//! The scratch cluster of a drill: its directory, the settings that keep it apart from
//! production, the checks run against it, and its stop.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::restore::start::as_owner;
use crate::restore::OsUser;

/// One check and what it returned.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The SQL.
    pub sql: String,
    /// Whether it passed: ran without error and did not return a single `false`.
    pub passed: bool,
    /// The first row as JSON and the row count, or the error.
    pub result: String,
}

/// A fresh directory `<parent>/pitr-drill-<time>-<pid>/` holding `pgdata/`, `socket/`,
/// `pg_hba.conf`, `server.log` and `tblspc/<oid>/`.
pub struct Scratch {
    dir: PathBuf,
    pgdata: PathBuf,
    /// The owner and PostgreSQL major, once known (to stop the server as the right user
    /// with the right pg_ctl).
    server: Mutex<(Option<OsUser>, Option<u32>)>,
}

impl Scratch {
    /// Creates the directory (mode 0700).
    pub fn create(parent: &Path) -> Result<Scratch, String> {
        Scratch::create_at(Scratch::fresh_path(parent, "pitr-drill"))
    }

    /// `<parent>/<prefix>-<time>-<pid>`: a scratch directory's name, not yet created.
    pub fn fresh_path(parent: &Path, prefix: &str) -> PathBuf {
        let stamp = jiff::Timestamp::now().as_second();
        parent.join(format!("{prefix}-{stamp}-{}", std::process::id()))
    }

    /// Creates the directory `dir` (mode 0700).
    pub fn create_at(dir: PathBuf) -> Result<Scratch, String> {
        fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                format!(
                    "cannot create the scratch directory {}: {e}\nhint: pass --scratch DIR on a disk with room for a restore, writable by {}",
                    dir.display(),
                    pitr_os::effective_user_name()
                )
            })?;
        Ok(Scratch {
            pgdata: dir.join("pgdata"),
            dir,
            server: Mutex::new((None, None)),
        })
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The restored data directory.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Where tablespace `oid` is restored.
    pub fn tablespace_dir(&self, oid: u32) -> PathBuf {
        self.dir.join("tblspc").join(oid.to_string())
    }

    /// The scratch server's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// Keeps the restored cluster apart from production (archiving is already off: the drill
    /// restores with [`crate::restore::ArchiveMode::Off`]): no TCP listener, its own socket directory and
    /// an authentication file that lets only local socket connections in, no replication
    /// connection to the primary. The settings go last in `postgresql.auto.conf`, so they win.
    pub fn isolate(&self, owner: Option<&OsUser>, major: u32) -> Result<(), String> {
        if let Ok(mut s) = self.server.lock() {
            *s = (owner.cloned(), Some(major));
        }
        let io = |what: &str, path: &Path, e: std::io::Error| {
            format!("cannot {what} {}: {e}", path.display())
        };
        let socket = self.socket_dir();
        fs::create_dir_all(&socket).map_err(|e| io("create", &socket, e))?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("set the mode of", &socket, e))?;
        let hba = self.dir.join("pg_hba.conf");
        fs::write(
            &hba,
            "# pitr drill: local socket connections only\nlocal all all trust\n",
        )
        .map_err(|e| io("write", &hba, e))?;
        // Debian keeps postgresql.conf in /etc: the server needs one in the data directory.
        let conf = self.pgdata.join("postgresql.conf");
        if !conf.exists() {
            fs::write(&conf, "").map_err(|e| io("write", &conf, e))?;
        }
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "''"));
        let auto = self.pgdata.join("postgresql.auto.conf");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&auto)
            .map_err(|e| io("open", &auto, e))?;
        let settings = format!(
            "\n# pitr drill: this scratch copy stays apart from production\n\
             listen_addresses = ''\n\
             unix_socket_directories = {}\nhba_file = {}\nprimary_conninfo = ''\n\
             primary_slot_name = ''\nsynchronous_standby_names = ''\n",
            quote(&socket),
            quote(&hba)
        );
        f.write_all(settings.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write", &auto, e))?;
        if let Some(u) = owner {
            for p in [&self.dir, &socket, &hba, &conf, &auto] {
                std::os::unix::fs::lchown(p, Some(u.uid), Some(u.gid))
                    .map_err(|e| io("chown", p, e))?;
            }
        }
        Ok(())
    }

    /// Runs each check (or a plain connection check when there is none) on the scratch server.
    pub async fn run_checks(
        &self,
        port: u16,
        user: &str,
        dbname: &str,
        checks: &[String],
    ) -> Vec<CheckResult> {
        let params = pitr_proto::ConnParams {
            host: Some(self.socket_dir().display().to_string()),
            port: Some(port),
            user: Some(user.to_string()),
            dbname: Some(dbname.to_string()),
            application_name: Some("pitr drill".into()),
            connect_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let client = match pitr_proto::connect(&params).await {
            Ok(c) => c,
            Err(e) => {
                return vec![CheckResult {
                    sql: "(connect)".into(),
                    passed: false,
                    result: e.to_string(),
                }]
            }
        };
        let default = ["SELECT datname FROM pg_database WHERE datallowconn".to_string()];
        let checks = if checks.is_empty() {
            &default[..]
        } else {
            checks
        };
        let mut out = Vec::new();
        for sql in checks {
            let body = sql.trim().trim_end_matches(';');
            let wrapped = format!("SELECT row_to_json(q)::text FROM ({body}) AS q");
            let result = client.query_text("drill check", &wrapped).await;
            out.push(match result {
                Ok(rows) => judge(sql, &rows),
                Err(e) => CheckResult {
                    sql: sql.clone(),
                    passed: false,
                    result: e.to_string(),
                },
            });
        }
        out
    }

    /// Stops the scratch server if one runs (fast, then immediate).
    pub fn stop_server(&self, pg_bin: Option<&Path>) -> Result<(), String> {
        if pitr_os::running_postmaster(&self.pgdata).is_none() {
            return Ok(());
        }
        let (owner, major) = self
            .server
            .lock()
            .map(|s| s.clone())
            .unwrap_or((None, None));
        let bindir = crate::pgbin::find_pg_bin(pg_bin, major, &["pg_ctl"])
            .map_err(|e| format!("cannot stop the scratch server: {e}"))?;
        for mode in ["fast", "immediate"] {
            let mut cmd = Command::new(bindir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.pgdata)
                .args(["-m", mode, "-w", "-t", "60", "stop"])
                .current_dir(&self.dir);
            as_owner(&mut cmd, owner.as_ref());
            let ok = cmd.output().map(|o| o.status.success()).unwrap_or(false);
            if ok || pitr_os::running_postmaster(&self.pgdata).is_none() {
                return Ok(());
            }
        }
        Err(format!(
            "the scratch server in {} did not stop\nhint: pg_ctl -D {} stop -m immediate",
            self.pgdata.display(),
            self.pgdata.display()
        ))
    }

    /// Removes the scratch directory.
    pub fn remove(&self) -> Result<(), String> {
        fs::remove_dir_all(&self.dir).map_err(|e| {
            format!(
                "cannot remove the scratch directory {}: {e}",
                self.dir.display()
            )
        })
    }
}

/// A port for the scratch server: it listens on its own socket directory only, so any port
/// that nothing else uses will do.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}\nhint: pass -p PORT"))
}

/// A check passes when it ran and did not answer a single `false`.
fn judge(sql: &str, rows: &[Vec<Option<String>>]) -> CheckResult {
    let first = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    let single_false =
        rows.len() == 1 && first.matches("\":").count() == 1 && first.ends_with(":false}");
    let result = match rows.len() {
        0 => "no rows".to_string(),
        1 => first,
        n => format!("{first} ({n} rows)"),
    };
    CheckResult {
        sql: sql.to_string(),
        passed: !single_false,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&str]) -> Vec<Vec<Option<String>>> {
        v.iter().map(|s| vec![Some(s.to_string())]).collect()
    }

    #[test]
    fn a_single_false_fails_anything_else_passes() {
        assert!(!judge("q", &rows(&[r#"{"ok":false}"#])).passed);
        assert!(judge("q", &rows(&[r#"{"ok":true}"#])).passed);
        assert!(judge("q", &rows(&[r#"{"a":1,"b":false}"#])).passed);
        assert!(judge("q", &rows(&[r#"{"ok":false}"#, r#"{"ok":false}"#])).passed);
        let none = judge("q", &[]);
        assert!(none.passed);
        assert_eq!(none.result, "no rows");
        assert_eq!(
            judge("q", &rows(&["{\"n\":1}", "{\"n\":2}"])).result,
            "{\"n\":1} (2 rows)"
        );
    }
}
