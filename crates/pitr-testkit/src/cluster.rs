//! One real PostgreSQL server in a scratch directory: initdb, start, SQL, stop, cleanup.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::os::{as_postgres, chown_to_postgres, clean_pg_env, create_postgres_dir, run, show};
use crate::{installs, PgInstall};

/// The port number in socket file names. Servers listen on their own Unix socket directory only
/// (`listen_addresses = ''`), so clusters never collide even though they share it.
pub const DEFAULT_PORT: u16 = 5432;

/// How long `pg_ctl -w` may wait for a server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// Longest socket directory whose socket file path (`<dir>/.s.PGSQL.<port>`) still fits the
/// ~107-byte Unix socket path limit.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// How a cluster is created: initdb flags and postgresql.conf settings.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// WAL segment size in MB (`initdb --wal-segsize`): a power of two from 1 to 1024.
    pub wal_segsize_mb: Option<u32>,
    /// Data page checksums (`initdb -k`).
    pub data_checksums: bool,
    /// No data page checksums even where initdb enables them by default (18+:
    /// `--no-data-checksums`).
    pub no_data_checksums: bool,
    /// Sets `archive_mode = on` and this `archive_command` (`%p`, `%f` as PostgreSQL expands
    /// them; it runs as the postgres OS user, in the data directory).
    pub archive_command: Option<String>,
    /// Extra postgresql.conf settings as (name, raw value); the harness quotes the value, so
    /// write `("wal_keep_size", "64MB")`, not `"'64MB'"`. Later ones override the harness's own.
    pub conf: Vec<(String, String)>,
    /// Lines put at the top of `pg_hba.conf` by [`Cluster::init`], before initdb's own
    /// `trust` lines (the first matching line wins), e.g.
    /// `"local all pwuser scram-sha-256"` for a role that must give a password.
    pub hba: Vec<String>,
    /// Environment variables the server (and so its archive_command and restore_command) runs
    /// with, set on `pg_ctl start`, e.g. the AWS variables of an S3 repository
    /// ([`crate::SeaweedFs::env`]).
    pub env: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Adds one postgresql.conf setting (builder style).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.conf.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds environment variables for the server (builder style); see [`ClusterOptions::env`].
    pub fn envs(mut self, vars: &[(String, String)]) -> Self {
        self.env.extend(vars.iter().cloned());
        self
    }

    /// Adds one line at the top of `pg_hba.conf` (builder style); see [`ClusterOptions::hba`].
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba.push(line.to_string());
        self
    }
}

/// A row of `pg_stat_archiver`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    /// Files archived successfully since the statistics were reset.
    pub archived_count: u64,
    /// Name of the last file archived successfully (empty when none).
    pub last_archived_wal: String,
    /// Failed `archive_command` runs.
    pub failed_count: u64,
    /// Name of the last file whose archiving failed (empty when none).
    pub last_failed_wal: String,
}

/// A PostgreSQL cluster in its own scratch directory, reachable only through its own Unix socket
/// directory; stopped (immediate mode) and deleted on drop.
///
/// Layout of the scratch directory: `data/` (the data directory), `sock/` (the socket
/// directory), `server.log` (everything the server logs, via `pg_ctl -l`).
#[derive(Debug)]
pub struct Cluster {
    install: PgInstall,
    opts: ClusterOptions,
    datadir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    // Last field: dropped (deleted) after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates a cluster with initdb (`--locale=C -E UTF8 -U postgres --auth=trust`) and writes
    /// the harness's postgresql.conf settings plus `opts`. Does not start it.
    pub fn init(install: &PgInstall, opts: ClusterOptions) -> Cluster {
        let cluster = Cluster::empty(install, opts);
        let mut cmd = Command::new(install.bin("initdb"));
        cmd.arg("-D")
            .arg(&cluster.datadir)
            .args(["--locale=C", "-E", "UTF8", "-U", "postgres", "--auth=trust"])
            // initdb's own fsync only slows tests; the server itself keeps fsync on.
            .arg("--no-sync");
        if let Some(mb) = cluster.opts.wal_segsize_mb {
            cmd.arg(format!("--wal-segsize={mb}"));
        }
        if cluster.opts.data_checksums {
            cmd.arg("--data-checksums");
        } else if cluster.opts.no_data_checksums && install.major >= 18 {
            cmd.arg("--no-data-checksums");
        }
        cluster.run_server_cmd(&mut cmd, "initdb");
        cluster.write_conf();
        if !cluster.opts.hba.is_empty() {
            let lines: Vec<&str> = cluster.opts.hba.iter().map(String::as_str).collect();
            cluster.prepend_hba(&lines);
        }
        cluster
    }

    /// A cluster whose data directory exists but is empty (mode 0700, owned by postgres): for a
    /// data directory made by something else (a restore, pg_basebackup). Fill it, call
    /// [`Cluster::write_conf`] so the server uses this cluster's socket and log, then start.
    pub fn empty(install: &PgInstall, opts: ClusterOptions) -> Cluster {
        let dir = crate::scratch_dir();
        let datadir = create_postgres_dir(&dir.path().join("data"));
        if let Err(e) = fs::set_permissions(&datadir, fs::Permissions::from_mode(0o700)) {
            panic!("cannot chmod {}: {e}", datadir.display());
        }
        let socket_dir = create_postgres_dir(&dir.path().join("sock"));
        let socket_len = socket_dir.as_os_str().len();
        assert!(
            socket_len <= MAX_SOCKET_DIR_LEN,
            "socket directory {} is {socket_len} bytes, too long for a Unix socket path \
             (hint: set PITR_TEST_TMPDIR to a shorter directory)",
            socket_dir.display()
        );
        let port = opts
            .conf
            .iter()
            .rev()
            .find(|(k, _)| k == "port")
            .map(|(_, v)| {
                v.trim().parse().unwrap_or_else(|_| {
                    panic!("ClusterOptions.conf: port {v:?} is not a port number")
                })
            })
            .unwrap_or(DEFAULT_PORT);
        Cluster {
            install: install.clone(),
            opts,
            log_file: dir.path().join("server.log"),
            datadir,
            socket_dir,
            port,
            dir,
        }
    }

    /// Appends the harness settings and this cluster's options to `postgresql.conf`: own socket
    /// directory, no TCP, log to `server.log`, archiving as asked. Done by [`Cluster::init`];
    /// call it yourself after filling a data directory made by [`Cluster::empty`].
    pub fn write_conf(&self) {
        let seg_mb = self.opts.wal_segsize_mb.unwrap_or(16);
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", String::new()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                self.socket_dir.display().to_string(),
            ),
            ("logging_collector", "off".into()),
            ("log_line_prefix", "%m [%p] %q%a ".into()),
            ("log_timezone", "UTC".into()),
            ("timezone", "UTC".into()),
            ("shared_buffers", "16MB".into()),
            ("max_connections", "40".into()),
            ("min_wal_size", format!("{}MB", (2 * seg_mb).max(32))),
            ("max_wal_size", format!("{}MB", (16 * seg_mb).max(256))),
            ("wal_level", "replica".into()),
            ("max_wal_senders", "4".into()),
            ("archive_timeout", "0".into()),
            ("fsync", "on".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(cmd) = &self.opts.archive_command {
            settings.push(("archive_mode".into(), "on".into()));
            settings.push(("archive_command".into(), cmd.clone()));
        }
        settings.extend(self.opts.conf.iter().cloned());
        let pairs: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.append_conf(&pairs);
    }

    /// Appends settings to `postgresql.conf` (values are quoted for you); takes effect at the
    /// next start, or after `SELECT pg_reload_conf()` for reloadable ones.
    pub fn append_conf(&self, settings: &[(&str, &str)]) {
        let path = self.datadir.join("postgresql.conf");
        let mut text = String::from("\n# added by pitr-testkit\n");
        for (name, value) in settings {
            let _ = writeln!(text, "{name} = '{}'", value.replace('\'', "''"));
        }
        let existed = path.exists();
        let result = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = result {
            panic!("cannot append to {}: {e}", path.display());
        }
        if !existed {
            chown_to_postgres(&path);
        }
    }

    /// Puts `lines` at the top of `pg_hba.conf` (first match wins, so they take precedence over
    /// initdb's `trust` entries), e.g. `"local replication alice scram-sha-256"`. Takes effect at
    /// the next start, or after `SELECT pg_reload_conf()`.
    pub fn prepend_hba(&self, lines: &[&str]) {
        let path = self.datadir.join("pg_hba.conf");
        let old = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut text = String::from("# added by pitr-testkit\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&old);
        if let Err(e) = fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
    }

    /// Starts the server (`pg_ctl -w start`); panics with pg_ctl's output and the server log tail
    /// when it does not come up.
    pub fn start(&self) {
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"])
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        self.run_server_cmd(&mut cmd, "pg_ctl start");
    }

    /// Stops the server with a fast shutdown (`pg_ctl -m fast -w stop`); no-op if not running.
    pub fn stop(&self) {
        self.stop_mode("fast");
    }

    /// Stops the server with the given shutdown mode (`smart`, `fast` or `immediate`; the latter
    /// is a crash as far as recovery is concerned); no-op if not running.
    pub fn stop_mode(&self, mode: &str) {
        if !self.datadir.join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(&self.datadir).args([
            "-m",
            mode,
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "stop",
        ]);
        if let Err(msg) = run(self.server_cmd(&mut cmd)) {
            // A postmaster.pid left by a crashed server is not a running server.
            if !self.is_running() {
                return;
            }
            panic!("{}", self.failure("pg_ctl stop", &msg));
        }
    }

    /// Stops (fast) and starts the server again.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Whether a server is running on this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(&self.datadir).arg("status");
        self.server_cmd(&mut cmd)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The Unix socket directory: use it as the host (`-h`, `PGHOST`, `host=`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The port (only names the socket file: there is no TCP listener).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PostgreSQL installation this cluster runs.
    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    /// The scratch directory holding `data/`, `sock/` and `server.log`.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log file (`pg_ctl -l`).
    pub fn log_path(&self) -> &Path {
        &self.log_file
    }

    /// Runs `sql` with `psql -c` in database `postgres` and returns trimmed stdout (unaligned,
    /// tuples only: one row per line, columns separated by `|`). Panics with psql's stderr and
    /// the server log tail on error.
    ///
    /// Several statements in one call run as one transaction (so `INSERT …; SELECT
    /// pg_switch_wal()` commits in the next segment), and psql 14 prints only the last
    /// statement's rows where 15+ print every statement's: use one statement per call, or
    /// [`Cluster::psql_script`].
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// Like [`Cluster::psql`], but returns psql's stderr as the error instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = self.psql_cmd("postgres").arg("-c").arg(sql).output();
        match out {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().into()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().into()),
            Err(e) => Err(format!("cannot run psql: {e}")),
        }
    }

    /// Like [`Cluster::psql`], in database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let mut cmd = self.psql_cmd(db);
        cmd.arg("-c").arg(sql);
        self.check_client(&mut cmd, "psql")
    }

    /// Runs a multi-statement script through psql's stdin (`-f -`): unlike [`Cluster::psql`],
    /// each statement is its own transaction and every statement's rows are printed.
    pub fn psql_script(&self, sql: &str) -> String {
        let mut cmd = self.psql_cmd("postgres");
        cmd.args(["-f", "-"]);
        let result = (|| {
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", show(&cmd)))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(sql.as_bytes())
                    .map_err(|e| format!("cannot write to psql: {e}"))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| format!("cannot wait for psql: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            } else {
                Err(format!(
                    "command failed ({}): {}\n--- script ---\n{sql}\n--- stderr ---\n{}",
                    out.status,
                    show(&cmd),
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ))
            }
        })();
        result.unwrap_or_else(|msg| panic!("{}", self.failure("psql script", &msg)))
    }

    /// The cluster's system identifier (`pg_control_system()`).
    pub fn system_id(&self) -> u64 {
        let s = self.psql("SELECT system_identifier FROM pg_control_system()");
        s.parse()
            .unwrap_or_else(|_| panic!("system_identifier {s:?} is not a number"))
    }

    /// Forces a WAL segment switch (`pg_switch_wal()`, in its own statement) and returns the
    /// name of the segment just closed. On an idle server (nothing written since the last
    /// switch) nothing is closed and this returns the previously closed segment.
    pub fn switch_wal(&self) -> String {
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// The `pg_stat_archiver` row.
    pub fn archiver(&self) -> ArchiverStats {
        let row = self.psql(
            "SELECT archived_count, coalesce(last_archived_wal, ''), \
             failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        );
        let f: Vec<&str> = row.split('|').collect();
        match f.as_slice() {
            [ac, la, fc, lf] => ArchiverStats {
                archived_count: ac.parse().unwrap_or_default(),
                last_archived_wal: la.to_string(),
                failed_count: fc.parse().unwrap_or_default(),
                last_failed_wal: lf.to_string(),
            },
            _ => panic!("unexpected pg_stat_archiver row {row:?}"),
        }
    }

    /// Waits until `pg_stat_archiver.last_archived_wal` is `wal_name` or later (file names
    /// compare in WAL order). Failures are retried by the archiver, so they just keep us waiting.
    /// Returns false on timeout, after printing the archiver state and the log tail to stderr.
    pub fn wait_archived(&self, wal_name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.archiver();
            if !stats.last_archived_wal.is_empty() && stats.last_archived_wal.as_str() >= wal_name {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "pitr-testkit: {wal_name} not archived after {timeout:?}: {stats:?}\n\
                     --- server log (tail) ---\n{}",
                    self.log_tail(30)
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Environment for a child process to reach this cluster: `PGHOST`, `PGPORT`,
    /// `PGUSER=postgres`, `PGDATABASE=postgres`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.socket_dir.display().to_string()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGDATABASE".into(), "postgres".into()),
        ]
    }

    /// A command for one of this installation's client programs (`pg_basebackup`,
    /// `pg_receivewal`, ...) with stray `PG*` variables removed and [`Cluster::env`] set.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.install.bin(program));
        clean_pg_env(&mut cmd).envs(self.env());
        cmd
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no server log at {}: {e})", self.log_file.display()),
        }
    }

    /// `pg_controldata` of the data directory as (label, value) pairs, e.g.
    /// `("Database system identifier", "7312…")`.
    pub fn controldata(&self) -> Vec<(String, String)> {
        let mut cmd = Command::new(self.install.bin("pg_controldata"));
        cmd.arg("-D").arg(&self.datadir);
        let out = self.run_server_cmd(&mut cmd, "pg_controldata");
        out.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// Creates pgbench's tables at `scale` (`pgbench -i -s scale`), 100 000 accounts per unit.
    pub fn pgbench_init(&self, scale: u32) {
        let mut cmd = self.pgbench();
        cmd.args(["-i", "-q", "-s", &scale.to_string()]);
        self.check_client(&mut cmd, "pgbench -i");
    }

    /// Runs pgbench's default TPC-B-like workload: `clients` clients, `transactions` each.
    pub fn pgbench_run(&self, clients: u32, transactions: u32) {
        let mut cmd = self.pgbench();
        cmd.args(["-c", &clients.to_string(), "-j", "1"])
            .args(["-t", &transactions.to_string()]);
        self.check_client(&mut cmd, "pgbench");
    }

    /// This install's pgbench, else another install's: pgbench is a client and speaks to any
    /// supported server.
    fn pgbench(&self) -> Command {
        let bin = std::iter::once(self.install.clone())
            .chain(installs().into_iter().rev())
            .map(|i| i.bin("pgbench"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no pgbench in {} nor in any other PostgreSQL install\n{}",
                    self.install.bindir.display(),
                    crate::INSTALL_HINT
                )
            });
        let mut cmd = Command::new(bin);
        clean_pg_env(&mut cmd).envs(self.env());
        cmd
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.install.bin("psql"));
        clean_pg_env(&mut cmd)
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        cmd
    }

    /// Prepares a server-side command (initdb, pg_ctl, ...): runs as postgres, in the scratch
    /// directory, with a clean environment.
    fn server_cmd<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        clean_pg_env(cmd).current_dir(self.dir.path());
        as_postgres(cmd)
    }

    fn run_server_cmd(&self, cmd: &mut Command, what: &str) -> String {
        match run(self.server_cmd(cmd)) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
            Err(msg) => panic!("{}", self.failure(what, &msg)),
        }
    }

    fn check_client(&self, cmd: &mut Command, what: &str) -> String {
        match run(cmd) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
            Err(msg) => panic!("{}", self.failure(what, &msg)),
        }
    }

    /// A panic message: what failed, on which cluster, the command report, the server log tail.
    fn failure(&self, what: &str, report: &str) -> String {
        format!(
            "{what} failed on PostgreSQL {} cluster {}\n{report}\n--- server log {} (tail) ---\n{}",
            self.install.major,
            self.datadir.display(),
            self.log_file.display(),
            self.log_tail(40)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.datadir.join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = Command::new(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(&self.datadir).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "stop",
        ]);
        if let Err(msg) = run(self.server_cmd(&mut cmd)) {
            if self.is_running() {
                eprintln!("pitr-testkit: cannot stop the server being dropped: {msg}");
            }
        }
    }
}
