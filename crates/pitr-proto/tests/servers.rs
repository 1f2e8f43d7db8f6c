//! pitr-proto against real PostgreSQL 14–18 servers: connecting over a Unix socket, server
//! facts checked against `pg_controldata` and `SHOW`, a full non-exclusive backup cycle whose
//! backup_label and tablespace_map pitr-pg parses, WAL switch / restore point / archiver
//! queries, and the typed errors for a wrong database, a wrong or missing password and an
//! unreachable server.
//!
//! Servers come from `$PITR_PG_ROOT/<major>/bindir` (default `/opt/pitr-pg`, filled by
//! `scripts/install-test-deps.sh`). The small helper below is local on purpose; the shared
//! harness is `pitr-testkit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pitr_pg::{BackupFrom, BackupLabel, Lsn, TablespaceMap, TimelineId, WalLevel};
use pitr_proto::{
    connect_with_env, ArchiveMode, BackupSession, ConnEnv, ConnParams, Host, ProtoError,
};

const PORT: u16 = 5432;

/// A throwaway cluster listening only on a socket in its own directory; stopped and deleted
/// when dropped.
struct Server {
    bindir: PathBuf,
    root: tempfile::TempDir,
    data: PathBuf,
    sock: PathBuf,
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a server binary as the postgres OS user when we are root.
fn as_postgres(program: &Path) -> Command {
    let (uid, _) = postgres_ids();
    let running_as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if running_as_root && uid != 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Server {
    fn start(major: u32) -> Server {
        let root_dir = std::env::var("PITR_PG_ROOT").unwrap_or_else(|_| "/opt/pitr-pg".into());
        let bindir_file = Path::new(&root_dir).join(major.to_string()).join("bindir");
        let bindir = std::fs::read_to_string(&bindir_file).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL {major} is not installed ({}: {e}); run scripts/install-test-deps.sh",
                bindir_file.display()
            )
        });
        let bindir = PathBuf::from(bindir.trim());
        let root = tempfile::Builder::new()
            .prefix(&format!("pitr-proto-pg{major}-"))
            .tempdir_in("/tmp")
            .unwrap();
        let (uid, gid) = postgres_ids();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["sock", "archive", "ts dir"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
            std::os::unix::fs::chown(root.path().join(d), Some(uid), Some(gid)).unwrap();
        }
        std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).unwrap();
        let data = root.path().join("data");
        let sock = root.path().join("sock");
        run(as_postgres(&bindir.join("initdb"))
            .args([
                "-k",
                "--locale=C",
                "-E",
                "UTF8",
                "-U",
                "postgres",
                "-A",
                "trust",
                "-D",
            ])
            .arg(&data));
        let conf = format!(
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\n\
             wal_level = replica\narchive_mode = on\narchive_command = 'cp %p \"{}/%f\"'\n",
            sock.display(),
            root.path().join("archive").display()
        );
        let append = |file: &str, text: &str| {
            let path = data.join(file);
            let old = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, format!("{old}\n{text}")).unwrap();
        };
        append("postgresql.conf", &conf);
        // pwuser must authenticate with a password; everyone else is trusted.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all pwuser scram-sha-256\nlocal all all trust\n",
        )
        .unwrap();
        run(as_postgres(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.path().join("server.log"))
            .args(["-w", "start"]));
        Server {
            bindir,
            root,
            data,
            sock,
        }
    }

    fn psql(&self, sql: &str) -> String {
        run(Command::new(self.bindir.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.sock)
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ]))
        .trim()
        .to_string()
    }

    fn controldata(&self) -> HashMap<String, String> {
        run(Command::new(self.bindir.join("pg_controldata"))
            .arg("-D")
            .arg(&self.data))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
    }

    /// Connection parameters for this server, as `user`.
    fn params(&self, user: &str) -> ConnParams {
        ConnParams {
            host: Some(self.sock.display().to_string()),
            port: Some(PORT),
            user: Some(user.into()),
            dbname: Some("postgres".into()),
            ..ConnParams::default()
        }
    }

    /// An environment that cannot leak the caller's PG* variables or ~/.pgpass into a test.
    fn env(&self, vars: &[(&str, String)]) -> ConnEnv {
        ConnEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            os_user: Some("nobody-in-particular".into()),
            home: Some(self.root.path().join("home")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

async fn sql_client_against_a_real_server(major: u32) {
    let server = Server::start(major);
    let env = server.env(&[]);
    let client = connect_with_env(&server.params("postgres"), &env)
        .await
        .unwrap();
    assert_eq!(client.major().number(), major);
    assert!(matches!(client.endpoint().host, Host::Socket(ref d) if d == &server.sock));

    // server_info agrees with pg_controldata and SHOW.
    let info = client.server_info().await.unwrap();
    let cd = server.controldata();
    assert_eq!(info.major.number(), major);
    assert_eq!(
        info.version_num.to_string(),
        server.psql("show server_version_num")
    );
    assert_eq!(info.system_id.to_string(), cd["Database system identifier"]);
    assert_eq!(info.data_directory, server.data);
    assert_eq!(
        info.wal_segment_size.bytes().to_string(),
        cd["Bytes per WAL segment"]
    );
    assert_eq!(info.block_size.to_string(), cd["Database block size"]);
    assert_eq!(
        info.timeline.to_string(),
        cd["Latest checkpoint's TimeLineID"]
    );
    assert!(info.data_checksums, "initdb -k");
    assert_eq!(cd["Data page checksum version"], "1");
    assert!(!info.in_recovery);
    assert_eq!(info.archive_mode, ArchiveMode::On);
    assert_eq!(info.archive_command, server.psql("show archive_command"));
    assert_eq!(info.wal_level, WalLevel::Replica);
    assert_eq!(info.archive_library.is_some(), major >= 15);

    // A tablespace whose path has a space, so the backup has a tablespace_map.
    let ts_dir = server.root.path().join("ts dir");
    server.psql(&format!(
        "create tablespace proto_ts location '{}'",
        ts_dir.display()
    ));
    server.psql("create table t (i int) tablespace proto_ts; insert into t values (1)");
    let spaces = client.tablespaces().await.unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0].name, "proto_ts");
    assert_eq!(spaces[0].location, ts_dir);
    assert_eq!(
        spaces[0].oid.to_string(),
        server.psql("select oid from pg_tablespace where spcname = 'proto_ts'")
    );

    // A full non-exclusive backup cycle on one session.
    let backup = BackupSession::start(&client, "pitr proto test", true)
        .await
        .unwrap();
    assert_eq!(backup.timeline(), TimelineId(1));
    assert_ne!(backup.start_lsn(), Lsn::INVALID);
    // The session stays usable meanwhile, and a second backup on it is refused, typed.
    assert!(client.current_wal_lsn().await.unwrap() >= backup.start_lsn());
    let again = BackupSession::start(&client, "second", true)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, ProtoError::Query { server, .. } if server.code == "55000"),
        "{again}"
    );
    server.psql("insert into t values (2)");
    let start_lsn = backup.start_lsn();
    let stop = backup.stop(true).await.unwrap();
    assert!(stop.stop_lsn > start_lsn);
    let label = BackupLabel::parse(&stop.backup_label).unwrap();
    assert_eq!(label.start_wal_location, start_lsn);
    assert_eq!(label.label, "pitr proto test");
    assert_eq!(label.start_timeline, TimelineId(1));
    assert_eq!(label.backup_from, BackupFrom::Primary);
    assert_eq!(label.to_string(), stop.backup_label);
    let map = TablespaceMap::parse(stop.tablespace_map.as_deref().unwrap()).unwrap();
    assert_eq!(map.entries.len(), 1);
    assert_eq!(map.entries[0].oid, spaces[0].oid);
    assert_eq!(Path::new(&map.entries[0].path), ts_dir);

    // WAL switch, restore point and the archiver's view of them.
    let rp = client.create_restore_point("proto_rp").await.unwrap();
    assert!(rp > stop.stop_lsn);
    server.psql("insert into t values (3)");
    let (switch_lsn, file) = client.switch_wal().await.unwrap();
    assert!(switch_lsn > rp);
    assert_eq!(
        file.to_string(),
        server.psql(&format!("select pg_walfile_name('{switch_lsn}')"))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.archiver_status().await.unwrap();
        if status.last_archived_wal.as_deref() == Some(file.to_string().as_str()) {
            assert!(status.archived_count >= 1);
            assert_eq!(status.failed_count, 0);
            assert!(status.last_archived_time.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "{file} not archived: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server
        .root
        .path()
        .join("archive")
        .join(file.to_string())
        .exists());
    assert!(client.current_wal_lsn().await.unwrap() >= switch_lsn);

    // A database that does not exist.
    let mut params = server.params("postgres");
    params.dbname = Some("no_such_db".into());
    let err = connect_with_env(&params, &env).await.unwrap_err();
    assert!(
        matches!(&err, ProtoError::NoDatabase { dbname, .. } if dbname == "no_such_db"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"no_such_db\"") && msg.contains(".s.PGSQL.5432") && msg.contains("hint:"),
        "{msg}"
    );

    // Password authentication: missing, wrong, right, and from a password file.
    server.psql("create role pwuser login password 'right pw'");
    let err = connect_with_env(&server.params("pwuser"), &env)
        .await
        .unwrap_err();
    assert!(matches!(err, ProtoError::PasswordRequired { .. }), "{err}");
    let mut wrong = server.params("pwuser");
    wrong.password = Some("wrong".into());
    let err = connect_with_env(&wrong, &env).await.unwrap_err();
    assert!(
        matches!(&err, ProtoError::AuthFailed { user, server, .. } if user == "pwuser" && server.code == "28P01"),
        "{err}"
    );
    let with_env = server.env(&[("PGPASSWORD", "right pw".into())]);
    connect_with_env(&server.params("pwuser"), &with_env)
        .await
        .unwrap();
    let passfile = server.root.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("{}:{PORT}:*:pwuser:right pw\n", server.sock.display()),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_file = server.env(&[("PGPASSFILE", passfile.display().to_string())]);
    let c = connect_with_env(&server.params("pwuser"), &with_file)
        .await
        .unwrap();
    assert_eq!(c.user(), "pwuser");
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = connect_with_env(&server.params("pwuser"), &with_file)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::PasswordRequired { .. }),
        "a group-readable password file is ignored: {err}"
    );
}

macro_rules! per_major {
    ($($name:ident => $major:literal),+) => {
        $(
            #[tokio::test]
            async fn $name() {
                sql_client_against_a_real_server($major).await;
            }
        )+
    };
}

per_major!(pg14 => 14, pg15 => 15, pg16 => 16, pg17 => 17, pg18 => 18);

#[tokio::test]
async fn unreachable_servers_give_a_typed_error_naming_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let env = ConnEnv {
        os_user: Some("postgres".into()),
        ..ConnEnv::default()
    };
    // A socket directory where nothing listens.
    let params = ConnParams {
        host: Some(dir.path().display().to_string()),
        port: Some(5999),
        ..ConnParams::default()
    };
    let err = connect_with_env(&params, &env).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProtoError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{}/.s.PGSQL.5999", dir.path().display())),
        "{msg}"
    );
    assert!(msg.contains("hint:") && msg.contains("-h/--host"), "{msg}");

    // A TCP port where nothing listens.
    let params = ConnParams {
        host: Some("127.0.0.1".into()),
        port: Some(1),
        ..ConnParams::default()
    };
    let err = connect_with_env(&params, &env).await.unwrap_err();
    assert!(
        matches!(&err, ProtoError::Unreachable { targets, .. } if targets.to_string() == "127.0.0.1:1"),
        "{err}"
    );
}
