//! pitr-proto against real PostgreSQL 14–18 servers: connecting over a Unix socket, server
//! facts checked against `pg_controldata` and `SHOW`, a full non-exclusive backup cycle whose
//! backup_label and tablespace_map pitr-pg parses, WAL switch / restore point / archiver
//! queries, and the typed errors for a wrong database, a wrong or missing password and an
//! unreachable server.
//!
//! Servers are `pitr-testkit` clusters, one test per major (`PITR_TEST_PG` narrows them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use pitr_pg::{BackupFrom, BackupLabel, Lsn, TablespaceMap, TimelineId, WalLevel};
use pitr_proto::{
    connect_with_env, ArchiveMode, BackupSession, ConnEnv, ConnParams, Host, ProtoError,
};
use pitr_testkit::{
    create_postgres_dir, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall,
};

/// A started cluster with data checksums, archiving with `cp` into `archive`, where `pwuser`
/// must authenticate with a password and every other role is trusted.
struct Server {
    cluster: Cluster,
    archive: tempfile::TempDir,
}

impl Server {
    fn start(pg: &PgInstall) -> Server {
        let archive = scratch_dir();
        let cluster = Cluster::init(
            pg,
            ClusterOptions {
                data_checksums: true,
                archive_command: Some(format!("cp %p \"{}/%f\"", archive.path().display())),
                ..ClusterOptions::default()
            }
            .hba_line("local all pwuser scram-sha-256"),
        );
        cluster.start();
        Server { cluster, archive }
    }

    fn root(&self) -> &Path {
        self.cluster.base_dir()
    }

    fn psql(&self, sql: &str) -> String {
        self.cluster.psql(sql)
    }

    fn controldata(&self) -> HashMap<String, String> {
        self.cluster.controldata().into_iter().collect()
    }

    /// Connection parameters for this server, as `user`.
    fn params(&self, user: &str) -> ConnParams {
        ConnParams {
            host: Some(self.cluster.socket_dir().display().to_string()),
            port: Some(self.cluster.port()),
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
            home: Some(self.root().join("home")),
        }
    }
}

async fn sql_client_against_a_real_server(pg: &PgInstall) {
    let major = pg.major;
    let server = Server::start(pg);
    let env = server.env(&[]);
    let client = connect_with_env(&server.params("postgres"), &env)
        .await
        .unwrap();
    assert_eq!(client.major().number(), major);
    assert!(
        matches!(client.endpoint().host, Host::Socket(ref d) if d == server.cluster.socket_dir())
    );

    // server_info agrees with pg_controldata and SHOW.
    let info = client.server_info().await.unwrap();
    let cd = server.controldata();
    assert_eq!(info.major.number(), major);
    assert_eq!(
        info.version_num.to_string(),
        server.psql("show server_version_num")
    );
    assert_eq!(info.system_id.to_string(), cd["Database system identifier"]);
    assert_eq!(info.data_directory, server.cluster.datadir());
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
    let ts_dir = create_postgres_dir(&server.root().join("ts dir"));
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
    assert!(server.archive.path().join(file.to_string()).exists());
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
    let passfile = server.root().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "{}:{}:*:pwuser:right pw\n",
            server.cluster.socket_dir().display(),
            server.cluster.port()
        ),
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

pg_test_matrix!(#[tokio::test] async sql_client_against_a_real_server);

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
