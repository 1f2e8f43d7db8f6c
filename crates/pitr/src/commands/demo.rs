//! `pitr demo`: the DBA lab of the seeds, end to end, on a throwaway cluster.
//!
//! Creates a PostgreSQL cluster that archives through pitr, takes a base backup, writes rows
//! while noting a time, a restore point and an LSN, drops the table, then restores three times
//! (to the time, to the restore point, to the LSN) and shows which rows came back. Each step
//! prints the command a DBA would type. Everything lives in a temporary directory that is removed
//! at the end (unless --keep).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pitr_core::pgbin;

use crate::cli::{DemoArgs, GlobalArgs};
use crate::error::CliError;

/// The OS user that runs PostgreSQL when we are root.
const PG_OS_USER: &str = "postgres";

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Demo(msg.into())
}

/// uid/gid of an OS user (through NSS).
fn user_ids(name: &str) -> Option<(u32, u32)> {
    pitr_os::user_by_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid, u.gid))
}

/// Where PostgreSQL's binaries are (any version): --pg-bin, else searched (see
/// [`pitr_core::pgbin::find_pg_bin`]).
pub fn find_pg_bin(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    pgbin::find_pg_bin(explicit, None, &["initdb", "pg_ctl", "postgres"]).map_err(|e| match (e, explicit) {
        (_, Some(d)) => fail(format!("{} has no initdb/pg_ctl/postgres\nhint: --pg-bin must name PostgreSQL's bin directory", d.display())),
        (_, None) => fail("no PostgreSQL binaries found (initdb, pg_ctl, postgres)\nhint: install PostgreSQL 14-18 (e.g. apt-get install postgresql) or pass --pg-bin DIR"),
    })
}

struct Lab {
    bin: PathBuf,
    dir: PathBuf,
    repo: PathBuf,
    socket: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
    pitr: PathBuf,
    verbose: bool,
}

impl Lab {
    fn as_owner(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
    }

    fn show(&self, line: &str) {
        println!("    $ {line}");
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<Output, CliError> {
        let out = cmd
            .output()
            .map_err(|e| fail(format!("cannot run {what}: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{what} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if self.verbose {
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(out)
    }

    fn pg(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        self.as_owner(&mut c);
        c
    }

    fn psql(&self, sql: &str) -> Result<String, CliError> {
        let out = self.run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .arg("-h")
                .arg(&self.socket)
                .args(["-p", &self.port.to_string(), "-c", sql]),
            &format!("psql -c {sql:?}"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn pitr(&self, args: &[&str]) -> Result<String, CliError> {
        let mut c = Command::new(&self.pitr);
        c.arg("--repo").arg(&self.repo).args(args);
        c.arg("-h")
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres"]);
        c.env_remove("PITR_CONFIG").env_remove("PITR_CLUSTER");
        c.env("PITR_CONFIG", "/dev/null");
        self.as_owner(&mut c);
        let out = self.run(&mut c, &format!("pitr {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn start(&self, pgdata: &Path) -> Result<(), CliError> {
        let log = self.dir.join("server.log");
        self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(pgdata)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "start"]),
            "pg_ctl start",
        )
        .map(|_| ())
        .map_err(|e| fail(format!("{e}\nserver log:\n{}", tail(&log, 20))))
    }

    fn stop(&self, pgdata: &Path) {
        if pgdata.join("postmaster.pid").exists() {
            let _ = self
                .pg("pg_ctl")
                .arg("-D")
                .arg(pgdata)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    }

    fn rows(&self) -> Result<String, CliError> {
        self.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '(none)') FROM lab")
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the lab.
pub async fn run(g: &GlobalArgs, a: DemoArgs) -> Result<u8, CliError> {
    let bin = find_pg_bin(a.pg_bin.as_deref())?;
    let ids = if pitr_os::is_root() {
        Some(user_ids(PG_OS_USER).ok_or_else(|| {
            fail("running as root, but there is no `postgres` OS user to run PostgreSQL as\nhint: create it (useradd -r postgres) or run the demo as a normal user")
        })?)
    } else {
        None
    };
    let base = std::env::temp_dir();
    let dir = tempfile_dir(&base)?;
    if let Some((uid, gid)) = ids {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|e| fail(format!("chown {}: {e}", dir.display())))?;
    }
    let repo = match &g.repo {
        Some(r) => PathBuf::from(r),
        None => dir.join("repo"),
    };
    let lab = Lab {
        bin,
        socket: dir.clone(),
        port: a.port,
        repo,
        dir: dir.clone(),
        ids,
        pitr: std::env::current_exe()
            .map_err(|e| fail(format!("cannot find the pitr binary: {e}")))?,
        verbose: g.verbose > 0,
    };
    let result = lab_steps(&lab).await;
    for d in ["pgdata", "restore-time", "restore-name", "restore-lsn"] {
        lab.stop(&dir.join(d));
    }
    if a.keep {
        println!("\nkept {} (servers stopped)", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    result.map(|()| 0)
}

fn tempfile_dir(base: &Path) -> Result<PathBuf, CliError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("pitr-demo-{}-{stamp}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| fail(e.to_string()))?;
    Ok(dir)
}

/// The lab, step by step: each step prints what it does and the command a DBA would type.
async fn lab_steps(lab: &Lab) -> Result<(), CliError> {
    let pgdata = lab.dir.join("pgdata");
    introduce(lab)?;
    archiving_cluster(lab, &pgdata)?;
    table_and_backup(lab)?;
    let marks = note_marks(lab)?;
    disaster(lab, &pgdata)?;
    for (i, case) in restore_cases(&marks).iter().enumerate() {
        restore_case(lab, 7 + i, case)?;
    }
    println!(
        "\ndemo complete: three recoveries from one base backup and the archived WAL, each exact."
    );
    Ok(())
}

/// What the demo is, with which PostgreSQL, where.
fn introduce(lab: &Lab) -> Result<(), CliError> {
    let version = lab.run(
        Command::new(lab.bin.join("postgres")).arg("--version"),
        "postgres --version",
    )?;
    println!("pitr demo: point-in-time recovery, end to end, on a throwaway cluster");
    println!(
        "  PostgreSQL: {} ({})",
        String::from_utf8_lossy(&version.stdout).trim(),
        lab.bin.display()
    );
    println!("  work dir:   {}", lab.dir.display());
    Ok(())
}

/// [1] A repository, and a cluster that archives its WAL into it through `pitr archive-push`.
fn archiving_cluster(lab: &Lab, pgdata: &Path) -> Result<(), CliError> {
    println!("\n[1] a cluster that archives its WAL through pitr");
    lab.pitr(&["init"])?;
    lab.show(&format!("pitr init --repo {}", lab.repo.display()));
    lab.run(
        lab.pg("initdb").arg("-D").arg(pgdata).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--locale=C",
            "-E",
            "UTF8",
        ]),
        "initdb",
    )?;
    let archive_command = format!(
        "'{}' --repo '{}' archive-push %p",
        lab.pitr.display(),
        lab.repo.display()
    );
    let conf = format!(
        "\n# pitr demo\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {}\nwal_level = replica\narchive_mode = on\narchive_command = '{}'\nmax_wal_size = 256MB\n",
        lab.socket.display(),
        lab.port,
        archive_command.replace('\'', "''")
    );
    fs::OpenOptions::new()
        .append(true)
        .open(pgdata.join("postgresql.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .map_err(|e| fail(format!("cannot write postgresql.conf: {e}")))?;
    println!("    archive_mode = on");
    println!(
        "    archive_command = '{}'",
        archive_command.replace('\'', "''")
    );
    lab.start(pgdata)
}

/// [2] A table with valuable data, then a base backup.
fn table_and_backup(lab: &Lab) -> Result<(), CliError> {
    println!("\n[2] a table with valuable data, then a base backup");
    lab.psql("CREATE TABLE lab (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())")?;
    lab.psql("INSERT INTO lab (id, note) VALUES (1, 'datos valiosos'), (2, 'more'), (3, 'more')")?;
    println!("    rows: {}", lab.rows()?);
    let out = lab.pitr(&["backup"])?;
    lab.show("pitr backup");
    println!("    {}", out.lines().last().unwrap_or(""));
    Ok(())
}

/// The points a DBA notes before disaster strikes.
struct Marks {
    /// A time (`now()`) between rows 6 and 7.
    time: String,
    /// An LSN after row 9.
    lsn: String,
}

/// [3]-[5] More rows, noting a time, a named restore point and an LSN in between.
fn note_marks(lab: &Lab) -> Result<Marks, CliError> {
    println!("\n[3] more rows; note the time (as the seeds tell DBAs to)");
    lab.psql("INSERT INTO lab (id, note) VALUES (4, 'after backup'), (5, 'after backup'), (6, 'after backup')")?;
    std::thread::sleep(Duration::from_millis(1100));
    let time = lab.psql("SELECT now()")?;
    std::thread::sleep(Duration::from_millis(1100));
    println!("    rows: {}   noted time T = {time}", lab.rows()?);

    println!("\n[4] a named restore point, then a WAL switch");
    lab.psql("INSERT INTO lab (id, note) VALUES (7, 'before the restore point')")?;
    let rp = lab.psql("SELECT pg_create_restore_point('punto_laboratorio')")?;
    lab.psql("SELECT pg_switch_wal()")?;
    println!(
        "    rows: {}   restore point 'punto_laboratorio' at {rp}",
        lab.rows()?
    );

    println!("\n[5] more rows; note the LSN");
    lab.psql("INSERT INTO lab (id, note) VALUES (8, 'last good'), (9, 'last good')")?;
    let lsn = lab.psql("SELECT pg_current_wal_lsn()")?;
    println!("    rows: {}   noted LSN L = {lsn}", lab.rows()?);
    Ok(Marks { time, lsn })
}

/// [6] The table is dropped; the WAL that did it is archived and the primary stopped.
fn disaster(lab: &Lab, pgdata: &Path) -> Result<(), CliError> {
    println!("\n[6] disaster");
    lab.psql("INSERT INTO lab (id, note) VALUES (10, 'doomed')")?;
    lab.psql("DROP TABLE lab")?;
    let last = lab.psql("SELECT pg_walfile_name(pg_switch_wal())")?;
    lab.show("psql -c 'DROP TABLE lab'");
    wait_archived(lab, &last)?;
    lab.stop(pgdata);
    println!("    the table is gone; the primary is stopped; WAL up to {last} is archived");
    Ok(())
}

/// One recovery of the lab: where to, the rows it must bring back, and what that proves.
struct RestoreCase {
    dirname: &'static str,
    target: [String; 2],
    expected: &'static str,
    proof: &'static str,
}

/// [7]-[9] The three recoveries: to the time, to the restore point, to the LSN.
fn restore_cases(marks: &Marks) -> [RestoreCase; 3] {
    [
        RestoreCase {
            dirname: "restore-time",
            target: ["--target-time".into(), marks.time.clone()],
            expected: "1,2,3,4,5,6",
            proof: "rows committed before T are back; the backup alone had only 1-3, so WAL was replayed up to T and no further",
        },
        RestoreCase {
            dirname: "restore-name",
            target: ["--target-name".into(), "punto_laboratorio".into()],
            expected: "1,2,3,4,5,6,7",
            proof: "recovery stopped exactly at the named restore point: row 7 (written before it) is there, 8-9 are not",
        },
        RestoreCase {
            dirname: "restore-lsn",
            target: ["--target-lsn".into(), marks.lsn.clone()],
            expected: "1,2,3,4,5,6,7,8,9",
            proof: "every row committed before L is back, and the DROP TABLE (after L) was never replayed",
        },
    ]
}

/// Step `n`: `pitr restore --start` to the case's target, then check the rows that came back.
fn restore_case(lab: &Lab, n: usize, case: &RestoreCase) -> Result<(), CliError> {
    let [flag, value] = &case.target;
    let dest = lab.dir.join(case.dirname);
    println!(
        "\n[{n}] restore to {} {value}",
        flag.trim_start_matches("--target-")
    );
    let dest_s = dest.display().to_string();
    let pg_bin = lab.bin.display().to_string();
    let args = [
        "restore", "--pgdata", &dest_s, flag, value, "--start", "--pg-bin", &pg_bin,
    ];
    lab.show(&format!(
        "pitr restore --pgdata {dest_s} {flag} {value} --start"
    ));
    let report = lab.pitr(&args)?;
    // The chosen backup, then pitr's account of where recovery stopped.
    let keep = [
        "backup:",
        "restored ",
        "recovery ",
        "stopped:",
        "at LSN:",
        "last transaction",
        "timeline:",
    ];
    for line in report
        .lines()
        .filter(|l| keep.iter().any(|k| l.trim_start().starts_with(k)))
    {
        println!("      {}", line.trim_start());
    }
    let rows = lab.rows()?;
    println!("    rows back: {rows}");
    if rows != case.expected {
        return Err(fail(format!(
            "restore to {flag} {value}: expected rows {}, got {rows}",
            case.expected
        )));
    }
    println!("    what this proves: {}", case.proof);
    lab.stop(&dest);
    Ok(())
}

fn wait_archived(lab: &Lab, wal: &str) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let done = lab.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
        if done.as_str() >= wal {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(fail(format!(
        "{wal} was not archived within 60 s; see {}",
        lab.dir.join("server.log").display()
    )))
}
