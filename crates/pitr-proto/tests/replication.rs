//! The replication client against real PostgreSQL 14–18 servers (`pitr-testkit`), with
//! PostgreSQL's own tools as oracles: `pg_controldata` for IDENTIFY_SYSTEM, the files in
//! `pg_wal` for streamed WAL and timeline history, `pg_replication_slots` and
//! `pg_stat_replication` for slots and status updates, the server's backup manifest,
//! `pg_verifybackup`, `pg_basebackup -Ft` and a server started on the extracted backup for
//! BASE_BACKUP, `pg_combinebackup` for incremental backups (17+), and `pg_stat_ssl` for TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pitr_pg::{Lsn, TimelineId};
use pitr_proto::repl::{
    AuthMethod, BackupEvent, BackupTablespace, BaseBackupOptions, SlotOptions, StandbyStatus,
    StartReplication, StreamEnd, WalEvent,
};
use pitr_proto::tar::{EntryKind, TarEvent, TarParser};
use pitr_proto::{
    connect_replication_with_env, connect_with_env, ConnEnv, ConnParams, ProtoError,
    ReplConnection, SslMode,
};
use pitr_testkit::{
    as_postgres, chown_to_postgres, create_postgres_dir, pg_test_matrix, run_ok, scratch_dir,
    Cluster, ClusterOptions, PgInstall,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An environment that cannot leak the caller's PG* variables or ~/.pgpass into a test.
fn env(vars: &[(&str, &str)]) -> ConnEnv {
    ConnEnv {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        os_user: Some("postgres".into()),
        home: None,
    }
}

/// Connection parameters for the cluster's socket, as superuser `postgres`.
fn params(c: &Cluster) -> ConnParams {
    ConnParams {
        host: Some(c.socket_dir().display().to_string()),
        port: Some(c.port()),
        user: Some("postgres".into()),
        application_name: Some("pitr-test".into()),
        ..ConnParams::default()
    }
}

async fn connect(c: &Cluster) -> ReplConnection {
    connect_replication_with_env(&params(c), &env(&[]))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn controldata(c: &Cluster, key: &str) -> String {
    c.controldata()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("pg_controldata has no {key:?}"))
        .1
}

fn lsn(c: &Cluster, sql: &str) -> Lsn {
    c.psql(sql).parse().unwrap()
}

fn segment_size(c: &Cluster) -> u64 {
    c.psql("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
        .parse()
        .unwrap()
}

/// The WAL file name of segment `segno` on `tli`.
fn wal_name(tli: u32, segno: u64, seg: u64) -> String {
    let per_id = 0x1_0000_0000 / seg;
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Polls `sql` until it prints `want` (10 s).
fn wait_for(c: &Cluster, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c.psql(sql);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} gave {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn identify_system_matches_pg_controldata(pg: &PgInstall) {
    let c = Cluster::init(pg, ClusterOptions::default());
    c.start();
    rt().block_on(async {
        let mut conn = connect(&c).await;
        assert_eq!(conn.version_num() / 10_000, pg.major);
        assert_eq!(conn.features().major, pg.major);
        assert!(!conn.is_tls(), "no TLS over a Unix socket");
        assert_eq!(conn.auth_method(), AuthMethod::None, "trust");
        let id = conn.identify_system().await.unwrap();
        assert_eq!(
            id.system_id.to_string(),
            controldata(&c, "Database system identifier")
        );
        assert_eq!(id.timeline, TimelineId(1));
        assert_eq!(id.dbname, None, "physical replication has no database");
        let current = lsn(&c, "SELECT pg_current_wal_flush_lsn()");
        assert!(
            id.xlogpos <= current && id.xlogpos > Lsn(0),
            "{} vs {current}",
            id.xlogpos
        );
        // The connection takes further commands, and closes without the server seeing an
        // unexpected end.
        let again = conn.identify_system().await.unwrap();
        assert_eq!(again.system_id, id.system_id);
        conn.close().await.unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let log = fs::read_to_string(c.log_path()).unwrap();
        assert!(!log.contains("unexpected EOF"), "{log}");
    });
}

fn physical_slots_are_created_read_and_dropped(pg: &PgInstall) {
    let c = Cluster::init(pg, ClusterOptions::default());
    c.start();
    rt().block_on(async {
        let mut conn = connect(&c).await;
        let reserve = SlotOptions {
            reserve_wal: true,
            ..SlotOptions::default()
        };
        let created = conn
            .create_physical_slot("pitr_keep", reserve)
            .await
            .unwrap();
        assert_eq!(created.name, "pitr_keep");
        let row = c.psql(
            "SELECT slot_type, temporary, restart_lsn IS NOT NULL FROM pg_replication_slots \
             WHERE slot_name = 'pitr_keep'",
        );
        assert_eq!(row, "physical|f|t");
        let restart = lsn(
            &c,
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pitr_keep'",
        );
        if pg.major >= 15 {
            let info = conn.read_slot("pitr_keep").await.unwrap().unwrap();
            assert_eq!(info.slot_type, "physical");
            assert_eq!(info.restart_lsn, Some(restart));
            assert_eq!(info.restart_tli, Some(TimelineId(1)));
            assert_eq!(conn.read_slot("pitr_none").await.unwrap(), None);
        } else {
            let err = conn.read_slot("pitr_keep").await.unwrap_err();
            assert!(
                matches!(err, ProtoError::NotSupported { needs: 15, .. }),
                "{err}"
            );
        }

        // Without RESERVE_WAL nothing is retained yet; a temporary slot lives with the session.
        conn.create_physical_slot("pitr_lazy", SlotOptions::default())
            .await
            .unwrap();
        conn.create_physical_slot(
            "pitr_tmp",
            SlotOptions {
                temporary: true,
                reserve_wal: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            c.psql(
                "SELECT slot_name, temporary, restart_lsn IS NULL FROM pg_replication_slots \
                 WHERE slot_name <> 'pitr_keep' ORDER BY 1"
            ),
            "pitr_lazy|f|t\npitr_tmp|t|f"
        );

        conn.drop_slot("pitr_keep", false).await.unwrap();
        conn.drop_slot("pitr_lazy", true).await.unwrap();
        let err = conn.drop_slot("pitr_keep", false).await.unwrap_err();
        match &err {
            ProtoError::Query { server, .. } => assert_eq!(server.code, "42704", "{err}"),
            other => panic!("{other}"),
        }
        let err = conn
            .create_physical_slot("Bad-Name", SlotOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::InvalidSlotName { .. }), "{err}");
        // The connection survived the errors.
        conn.identify_system().await.unwrap();
        drop(conn);
        wait_for(&c, "SELECT count(*) FROM pg_replication_slots", "0");
    });
}

fn streamed_wal_matches_the_segment_file_and_status_advances_the_slot(pg: &PgInstall) {
    let c = Cluster::init(pg, ClusterOptions::default());
    c.start();
    let seg = segment_size(&c);
    c.psql("CREATE TABLE t (x int, pad text)");
    rt().block_on(async {
        let mut conn = connect(&c).await;
        let reserve = SlotOptions {
            reserve_wal: true,
            ..SlotOptions::default()
        };
        conn.create_physical_slot("pitr_stream", reserve)
            .await
            .unwrap();
        let l0 = lsn(&c, "SELECT pg_current_wal_insert_lsn()");
        let seg_start = l0.0 - l0.0 % seg;
        c.psql("INSERT INTO t SELECT g, repeat('p', 100) FROM generate_series(1, 3000) g");
        c.psql("SELECT pg_logical_emit_message(false, 'pitr', repeat('m', 100000))");
        c.psql("SELECT pg_switch_wal()");
        let file = c
            .datadir()
            .join("pg_wal")
            .join(wal_name(1, seg_start / seg, seg));
        let expected = fs::read(&file).unwrap();
        assert_eq!(expected.len() as u64, seg);

        let mut stream = conn
            .start_replication(&StartReplication {
                slot: Some("pitr_stream".into()),
                start: Lsn(seg_start),
                timeline: Some(TimelineId(1)),
            })
            .await
            .unwrap();
        let mut got: Vec<u8> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (got.len() as u64) < seg {
            assert!(
                Instant::now() < deadline,
                "only {} bytes streamed",
                got.len()
            );
            match stream.next_event().await.unwrap() {
                Some(WalEvent::Data(d)) => {
                    assert_eq!(d.start.0, seg_start + got.len() as u64, "contiguous chunks");
                    assert_eq!(d.end().0, d.start.0 + d.data.len() as u64);
                    assert!(d.wal_end >= d.end() || d.wal_end == Lsn(0));
                    got.extend_from_slice(&d.data);
                }
                Some(WalEvent::Keepalive(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            got[..seg as usize] == expected[..],
            "streamed WAL differs from {}",
            file.display()
        );

        // A status update moves the slot and shows in pg_stat_replication.
        let seg_end = Lsn(seg_start + seg);
        let status = StandbyStatus {
            write: seg_end,
            flush: seg_end,
            apply: Lsn(0),
        };
        stream.send_status(status, true).await.unwrap();
        assert_eq!(stream.status(), status);
        wait_for(
            &c,
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pitr_stream'",
            &seg_end.to_string(),
        );
        wait_for(
            &c,
            "SELECT flush_lsn, write_lsn, state FROM pg_stat_replication \
             WHERE application_name = 'pitr-test'",
            &format!("{seg_end}|{seg_end}|streaming"),
        );
        assert_eq!(stream.stop().await.unwrap(), StreamEnd::Stopped);
        // After the stream the connection takes commands again.
        conn.identify_system().await.unwrap();
        conn.drop_slot("pitr_stream", true).await.unwrap();
    });
}

fn keepalives_asking_for_a_reply_keep_the_stream_alive(pg: &PgInstall) {
    let c = Cluster::init(
        pg,
        ClusterOptions::default().set("wal_sender_timeout", "2s"),
    );
    c.start();
    rt().block_on(async {
        let mut conn = connect(&c).await;
        let start = conn.identify_system().await.unwrap().xlogpos;
        let mut stream = conn
            .start_replication(&StartReplication {
                slot: None,
                start,
                timeline: None,
            })
            .await
            .unwrap();
        // Only answers to the server's requests keep the stream alive: no periodic updates.
        stream.set_status_interval(None);
        let until = Instant::now() + Duration::from_secs(7);
        let mut asked = 0;
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(1), stream.next_event()).await {
                Err(_) => {}
                Ok(Ok(Some(WalEvent::Keepalive(k)))) => {
                    assert!(k.wal_end >= start);
                    asked += usize::from(k.reply_requested);
                }
                Ok(Ok(Some(WalEvent::Data(_)))) => {}
                Ok(other) => panic!("stream ended after {asked} requests: {other:?}"),
            }
        }
        assert!(asked >= 2, "the server asked for {asked} replies in 7 s");
        assert_eq!(
            c.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr-test'"),
            "1"
        );
        assert_eq!(stream.stop().await.unwrap(), StreamEnd::Stopped);
    });
}

fn timeline_history_and_timeline_end_after_promotion(pg: &PgInstall) {
    let a = Cluster::init(pg, ClusterOptions::default());
    a.start();
    a.psql("CREATE TABLE t AS SELECT 1 AS x");
    a.stop();
    // A clone of the stopped primary, started as a standby and promoted: timeline 2.
    let b = Cluster::empty(pg, ClusterOptions::default());
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .arg(format!("{}/.", a.datadir().display()))
        .arg(b.datadir());
    run_ok(as_postgres(&mut cp));
    drop(a);
    b.write_conf();
    fs::write(b.datadir().join("standby.signal"), "").unwrap();
    chown_to_postgres(&b.datadir().join("standby.signal"));
    b.start();
    let mut promote = Command::new(pg.bin("pg_ctl"));
    promote.arg("-D").arg(b.datadir()).args(["-w", "promote"]);
    run_ok(as_postgres(&mut promote));
    wait_for(&b, "SELECT pg_is_in_recovery()", "f");
    let seg = segment_size(&b);
    rt().block_on(async {
        let mut conn = connect(&b).await;
        let id = conn.identify_system().await.unwrap();
        assert_eq!(id.timeline, TimelineId(2));
        let file = conn.timeline_history(TimelineId(2)).await.unwrap();
        assert_eq!(file.file_name, "00000002.history");
        let on_disk = fs::read(b.datadir().join("pg_wal/00000002.history")).unwrap();
        assert_eq!(&file.content[..], &on_disk[..]);
        let history = file.history().unwrap();
        assert_eq!(history.entries.len(), 1);
        assert_eq!(history.entries[0].parent, TimelineId(1));
        let switch = history.entries[0].switchpoint;
        let err = conn.timeline_history(TimelineId(1)).await.unwrap_err();
        assert!(matches!(err, ProtoError::Query { .. }), "{err}");

        // Timeline 1 streamed from its last segment's start ends at the switch point.
        let seg_start = switch.0 - switch.0 % seg;
        assert!(
            seg_start < switch.0,
            "switch point {switch} is on a segment boundary"
        );
        let mut stream = conn
            .start_replication(&StartReplication {
                slot: None,
                start: Lsn(seg_start),
                timeline: Some(TimelineId(1)),
            })
            .await
            .unwrap();
        let mut got = Vec::new();
        let end = loop {
            match stream.next_event().await.unwrap() {
                Some(WalEvent::Data(d)) => {
                    assert_eq!(d.start.0, seg_start + got.len() as u64);
                    got.extend_from_slice(&d.data);
                }
                Some(WalEvent::Keepalive(_)) => {}
                Some(WalEvent::End(end)) => break end,
                None => panic!("stream ended without an end event"),
            }
        };
        assert_eq!(
            end,
            StreamEnd::TimelineEnd {
                next_timeline: TimelineId(2),
                next_start: switch
            }
        );
        assert!(stream.next_event().await.unwrap().is_none());
        assert_eq!(got.len() as u64, switch.0 - seg_start);
        // Timeline 2's first segment starts with a copy of timeline 1 up to the switch.
        let tl2 = fs::read(
            b.datadir()
                .join("pg_wal")
                .join(wal_name(2, seg_start / seg, seg)),
        )
        .unwrap();
        assert!(got[..] == tl2[..got.len()], "timeline 1 WAL differs");

        // Asking for timeline 1 exactly at its end: no COPY, just the next timeline.
        let mut stream = conn
            .start_replication(&StartReplication {
                slot: None,
                start: switch,
                timeline: Some(TimelineId(1)),
            })
            .await
            .unwrap();
        assert_eq!(
            stream.next_event().await.unwrap(),
            Some(WalEvent::End(StreamEnd::TimelineEnd {
                next_timeline: TimelineId(2),
                next_start: switch
            }))
        );
        assert_eq!(
            conn.identify_system().await.unwrap().timeline,
            TimelineId(2)
        );
    });
}

/// What a base backup streamed into a directory looked like.
#[derive(Debug, Default)]
struct Extracted {
    /// Archive names in order.
    archives: Vec<String>,
    /// Every tar entry as (archive, path).
    entries: BTreeSet<(String, String)>,
    /// Regular files by path relative to the data directory, with their size.
    files: BTreeMap<String, u64>,
    /// Symbolic links and their targets.
    symlinks: BTreeMap<String, String>,
    manifest: Vec<u8>,
    tablespaces: Vec<BackupTablespace>,
    start: Lsn,
    end: Lsn,
    timeline: u32,
    last_progress: Option<u64>,
    archive_bytes: u64,
}

/// Runs BASE_BACKUP and extracts it under `dest` as it streams (tablespace archives into
/// `pg_tblspc/<oid>/`), writing the manifest to `dest/backup_manifest`.
async fn take_backup(
    conn: &mut ReplConnection,
    opts: &BaseBackupOptions,
    dest: &Path,
) -> Extracted {
    let mut out = Extracted::default();
    let mut bb = conn.base_backup(opts).await.unwrap();
    out.start = bb.start_lsn();
    out.tablespaces = bb.tablespaces().to_vec();
    let mut parser: Option<(TarParser, PathBuf, String)> = None;
    let mut file: Option<(fs::File, String, u64)> = None;
    while let Some(event) = bb.next_event().await.unwrap() {
        match event {
            BackupEvent::ArchiveStart(a) => {
                assert!(parser.is_none(), "archive started inside another");
                let (root, prefix) = match a.tablespace.oid {
                    None => (dest.to_path_buf(), String::new()),
                    Some(oid) => (
                        dest.join(format!("pg_tblspc/{oid}")),
                        format!("pg_tblspc/{oid}/"),
                    ),
                };
                fs::create_dir_all(&root).unwrap();
                out.archives.push(a.name.clone());
                parser = Some((TarParser::new(), root, prefix));
            }
            BackupEvent::ArchiveData(chunk) => {
                out.archive_bytes += chunk.len() as u64;
                let (p, root, prefix) = parser.as_mut().expect("data outside an archive");
                let archive = out.archives.last().unwrap().clone();
                let mut rest = &chunk[..];
                loop {
                    let (n, ev) = p.parse(rest).unwrap();
                    rest = &rest[n..];
                    match ev {
                        Some(TarEvent::Entry(e)) => {
                            out.entries.insert((archive.clone(), e.path.clone()));
                            let path = root.join(&e.path);
                            match e.kind {
                                EntryKind::Directory => fs::create_dir_all(&path).unwrap(),
                                EntryKind::File => {
                                    let f = fs::File::create(&path).unwrap();
                                    file = Some((f, format!("{prefix}{}", e.path), e.size));
                                }
                                // Recorded, not created: the tablespace's own archive is
                                // extracted at that place.
                                EntryKind::Symlink => {
                                    out.symlinks.insert(e.path.clone(), e.link_target.unwrap());
                                }
                                other => panic!("unexpected entry kind {other:?}"),
                            }
                        }
                        Some(TarEvent::Data(d)) => file.as_mut().unwrap().0.write_all(d).unwrap(),
                        Some(TarEvent::EntryEnd) => {
                            if let Some((f, name, size)) = file.take() {
                                assert_eq!(f.metadata().unwrap().len(), size, "{name}");
                                out.files.insert(name, size);
                            }
                        }
                        Some(TarEvent::End) => {}
                        None if rest.is_empty() => break,
                        None => {}
                    }
                }
            }
            BackupEvent::ArchiveEnd => {
                let (mut p, _, _) = parser.take().expect("end outside an archive");
                while let (0, Some(ev)) = p.parse(&[]).unwrap() {
                    if ev == TarEvent::EntryEnd {
                        let (f, name, size) = file.take().unwrap();
                        assert_eq!(f.metadata().unwrap().len(), size, "{name}");
                        out.files.insert(name, size);
                    }
                }
                p.finish().unwrap();
                assert!(file.is_none());
            }
            BackupEvent::ManifestData(d) => out.manifest.extend_from_slice(&d),
            BackupEvent::Progress(done) => {
                assert!(out.last_progress.is_none_or(|p| p <= done));
                out.last_progress = Some(done);
            }
            BackupEvent::End {
                start_lsn,
                end_lsn,
                timeline,
            } => {
                assert_eq!(start_lsn, out.start);
                out.end = end_lsn;
                out.timeline = timeline.0;
            }
        }
    }
    assert!(parser.is_none(), "an archive was not ended");
    fs::write(dest.join("backup_manifest"), &out.manifest).unwrap();
    out
}

/// (path, size) of every file the manifest lists.
fn manifest_files(manifest: &serde_json::Value) -> BTreeMap<String, u64> {
    manifest["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["Path"].as_str().unwrap().to_string(),
                f["Size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Paths in a tar file according to GNU tar (directories without their trailing `/`).
fn tar_list(path: &Path) -> BTreeSet<String> {
    let out = run_ok(Command::new("tar").arg("-tf").arg(path));
    out.lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

/// A WAL segment the backup includes (the manifest lists no WAL, only its range).
fn is_wal_file(path: &str) -> bool {
    path.strip_prefix("pg_wal/")
        .is_some_and(|name| name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A WAL segment or its `.done` marker: their names depend on when a backup ran.
fn is_wal_or_marker(path: &str) -> bool {
    is_wal_file(path)
        || path
            .strip_prefix("pg_wal/archive_status/")
            .and_then(|m| m.strip_suffix(".done"))
            .is_some_and(|seg| is_wal_file(&format!("pg_wal/{seg}")))
}

fn base_backup_is_complete_verifiable_and_restorable(pg: &PgInstall) {
    let c = Cluster::init(pg, ClusterOptions::default().set("autovacuum", "off"));
    c.start();
    let scratch = scratch_dir();
    let ts_dir = create_postgres_dir(&scratch.path().join("ts"));
    c.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        ts_dir.display()
    ));
    c.psql("CREATE TABLE big (x int, pad text) TABLESPACE ts");
    c.psql("INSERT INTO big SELECT g, repeat('b', 200) FROM generate_series(1, 20000) g");
    c.psql("CREATE TABLE main_t AS SELECT generate_series(1, 1000) AS x");
    let ts_oid: u32 = c
        .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        .parse()
        .unwrap();

    let restore = Cluster::empty(pg, ClusterOptions::default());
    let (got, plain_symlinks) = rt().block_on(async {
        let mut conn = connect(&c).await;
        let opts = BaseBackupOptions {
            label: "pitr 'test' backup".into(),
            fast_checkpoint: true,
            wait_for_archive: false,
            include_wal: true,
            progress: true,
            ..BaseBackupOptions::default()
        };
        let got = take_backup(&mut conn, &opts, restore.datadir()).await;
        // The connection is usable after the backup: a second one, without manifest.
        let bare = scratch_dir();
        let plain = take_backup(
            &mut conn,
            &BaseBackupOptions {
                manifest: false,
                tablespace_map: false,
                fast_checkpoint: true,
                wait_for_archive: false,
                ..BaseBackupOptions::default()
            },
            bare.path(),
        )
        .await;
        assert!(plain.manifest.is_empty());
        assert!(plain.files.contains_key("backup_label") && plain.end >= got.end);
        assert!(!plain.files.contains_key("tablespace_map"));
        assert!(got.symlinks.is_empty(), "a tablespace map, no symlinks");
        (got, plain.symlinks)
    });

    // The tablespace list: the tablespace and the main directory, with size estimates.
    assert_eq!(got.tablespaces.len(), 2, "{:?}", got.tablespaces);
    let ts = got
        .tablespaces
        .iter()
        .find(|t| t.oid == Some(ts_oid))
        .unwrap();
    assert_eq!(ts.location.as_deref(), Some(ts_dir.as_path()));
    // Without a tablespace map the main archive links pg_tblspc/<oid> to the location.
    assert_eq!(
        plain_symlinks,
        BTreeMap::from([(format!("pg_tblspc/{ts_oid}"), ts_dir.display().to_string())])
    );
    assert!(ts.size_kb.unwrap() > 1000, "{ts:?}");
    assert!(got
        .tablespaces
        .iter()
        .any(|t| t.oid.is_none() && t.location.is_none()));
    let mut names = got.archives.clone();
    names.sort();
    assert_eq!(names, vec![format!("{ts_oid}.tar"), "base.tar".to_string()]);
    assert!(got.start <= got.end && got.start > Lsn(0));
    assert_eq!(got.timeline, 1);
    // Progress at least at the end of each archive (the server's on 15+, ours on 14).
    assert!(got.last_progress.unwrap() > 0);
    if pg.major == 14 {
        assert_eq!(got.last_progress, Some(got.archive_bytes));
    }

    // Oracle 1: the manifest the server computed names exactly the files we extracted, with
    // their sizes, and the WAL range of the backup.
    let manifest: serde_json::Value = serde_json::from_slice(&got.manifest).unwrap();
    let ours: BTreeMap<String, u64> = got
        .files
        .iter()
        .filter(|(p, _)| !is_wal_file(p))
        .map(|(p, s)| (p.clone(), *s))
        .collect();
    assert_eq!(ours, manifest_files(&manifest));
    assert!(ours.contains_key("backup_label") && ours.contains_key("tablespace_map"));
    assert_eq!(ours.get("global/pg_control"), Some(&8192));
    let range = &manifest["WAL-Ranges"][0];
    assert_eq!(range["Start-LSN"].as_str().unwrap(), got.start.to_string());
    assert_eq!(range["End-LSN"].as_str().unwrap(), got.end.to_string());
    assert!(
        got.files.keys().any(|p| is_wal_file(p)),
        "WAL was asked for"
    );

    // Oracle 2: pg_verifybackup checks every file's checksum and parses the included WAL.
    run_ok(Command::new(pg.bin("pg_verifybackup")).arg(restore.datadir()));

    // Oracle 3: pg_basebackup -Ft gets the same entries from the same server.
    let pgbb = scratch.path().join("pg_basebackup");
    run_ok(c.command("pg_basebackup").arg("-D").arg(&pgbb).args([
        "-Ft",
        "-X",
        "fetch",
        "-c",
        "fast",
        "--no-sync",
    ]));
    for archive in &got.archives {
        let theirs: BTreeSet<String> = tar_list(&pgbb.join(archive))
            .into_iter()
            .filter(|p| !is_wal_or_marker(p))
            .collect();
        let ours: BTreeSet<String> = got
            .entries
            .iter()
            .filter(|(a, p)| a == archive && !is_wal_or_marker(p))
            .map(|(_, p)| p.clone())
            .collect();
        let only_ours: Vec<_> = ours.difference(&theirs).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "entries of {archive}: only ours {only_ours:?}, only pg_basebackup's {only_theirs:?}"
        );
    }

    // Oracle 4: a server starts on the extracted backup (tablespace moved, map rewritten) and
    // has every row.
    let ts_restore = scratch.path().join("ts_restore");
    fs::rename(
        restore.datadir().join(format!("pg_tblspc/{ts_oid}")),
        &ts_restore,
    )
    .unwrap();
    fs::write(
        restore.datadir().join("tablespace_map"),
        format!("{ts_oid} {}\n", ts_restore.display()),
    )
    .unwrap();
    chown_to_postgres(restore.datadir());
    chown_to_postgres(&ts_restore);
    fs::set_permissions(&ts_restore, fs::Permissions::from_mode(0o700)).unwrap();
    restore.write_conf();
    restore.start();
    assert_eq!(restore.psql("SELECT count(*) FROM big"), "20000");
    assert_eq!(restore.psql("SELECT sum(x) FROM main_t"), "500500");
    assert_eq!(restore.system_id(), c.system_id());
}

fn incremental_backup_combines_with_its_full_backup(pg: &PgInstall) {
    let opts = if pg.major >= 17 {
        ClusterOptions::default().set("summarize_wal", "on")
    } else {
        ClusterOptions::default()
    };
    let c = Cluster::init(pg, opts);
    c.start();
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS x");
    let scratch = scratch_dir();
    let full_dir = scratch.path().join("full");
    let incr_dir = scratch.path().join("incr");
    fs::create_dir_all(&full_dir).unwrap();
    fs::create_dir_all(&incr_dir).unwrap();
    rt().block_on(async {
        let mut conn = connect(&c).await;
        if pg.major < 17 {
            let err = conn.upload_manifest(b"{}").await.unwrap_err();
            assert!(
                matches!(err, ProtoError::NotSupported { needs: 17, .. }),
                "{err}"
            );
            let err = conn
                .base_backup(&BaseBackupOptions {
                    incremental: true,
                    ..BaseBackupOptions::default()
                })
                .await
                .unwrap_err();
            assert!(
                matches!(err, ProtoError::NotSupported { needs: 17, .. }),
                "{err}"
            );
            return;
        }
        let base = BaseBackupOptions {
            fast_checkpoint: true,
            wait_for_archive: false,
            include_wal: true,
            ..BaseBackupOptions::default()
        };
        let full = take_backup(&mut conn, &base, &full_dir).await;
        c.psql("INSERT INTO t SELECT generate_series(5001, 8000)");
        // WAL summaries must reach the backup's start before an incremental backup.
        c.psql("CHECKPOINT");
        conn.upload_manifest(&full.manifest).await.unwrap();
        let incr = take_backup(
            &mut conn,
            &BaseBackupOptions {
                incremental: true,
                ..base
            },
            &incr_dir,
        )
        .await;
        assert!(
            incr.files.keys().any(|p| p.contains("/INCREMENTAL.")),
            "no incremental file in {:?}",
            incr.files.keys().take(20).collect::<Vec<_>>()
        );
        assert!(incr.start > full.end);
    });
    if pg.major < 17 {
        return;
    }
    let restore = Cluster::empty(pg, ClusterOptions::default());
    // pg_combinebackup wants an output directory that does not exist yet.
    fs::remove_dir(restore.datadir()).unwrap();
    let mut combine = Command::new(pg.bin("pg_combinebackup"));
    combine
        .arg(&full_dir)
        .arg(&incr_dir)
        .arg("-o")
        .arg(restore.datadir());
    run_ok(&mut combine);
    chown_to_postgres(restore.datadir());
    fs::set_permissions(restore.datadir(), fs::Permissions::from_mode(0o700)).unwrap();
    restore.write_conf();
    restore.start();
    assert_eq!(restore.psql("SELECT count(*), max(x) FROM t"), "8000|8000");
}

/// A CA and a server certificate for 127.0.0.1 signed by it (and an unrelated CA).
fn make_certs(dir: &Path) {
    let sh = |script: &str| {
        run_ok(Command::new("sh").arg("-c").arg(script).current_dir(dir));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -subj /CN=pitr-test-ca -days 2 -keyout ca.key -out ca.crt 2>/dev/null"
    ));
    sh(&format!(
        "openssl req -x509 {ec} -subj /CN=other-ca -days 2 -keyout other.key -out other.crt 2>/dev/null"
    ));
    sh(&format!(
        "openssl req {ec} -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null"
    ));
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out server.crt 2>/dev/null",
    );
}

/// A port below 32768 that nothing listens on now.
fn free_port(major: u32) -> u16 {
    let base = 20_000 + (std::process::id() % 500) as u16 * 10 + major as u16 % 10;
    (0..200u16)
        .map(|i| base.wrapping_add(i * 7) % 12_000 + 20_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap()
}

fn password_and_tls_authentication(pg: &PgInstall) {
    let certs = scratch_dir();
    make_certs(certs.path());
    let port = free_port(pg.major);
    let c = Cluster::init(
        pg,
        ClusterOptions::default()
            .set("listen_addresses", "127.0.0.1")
            .set("port", &port.to_string()),
    );
    c.prepend_hba(&[
        "local replication scram_user scram-sha-256",
        "local replication md5_user md5",
        "hostssl replication scram_user 127.0.0.1/32 scram-sha-256",
        "hostnossl replication scram_user 127.0.0.1/32 reject",
    ]);
    c.start();
    // Some PostgreSQL builds used here have no SSL support (the PyPI wheels of 14, 16, 18).
    let ssl_build = !c.psql("SHOW ssl_library").is_empty();
    if ssl_build {
        for f in ["server.crt", "server.key"] {
            let to = c.datadir().join(f);
            fs::copy(certs.path().join(f), &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
            chown_to_postgres(&to);
        }
        c.append_conf(&[
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ]);
        c.restart();
    }
    c.psql_script(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram-pw';
         SET password_encryption = 'md5';
         CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5-pw';",
    );
    let socket = |user: &str, password: Option<&str>| ConnParams {
        user: Some(user.into()),
        password: password.map(str::to_string),
        ..params(&c)
    };
    let tcp = |host: &str, mode: SslMode| ConnParams {
        host: Some(host.into()),
        port: Some(port),
        user: Some("scram_user".into()),
        password: Some("scram-pw".into()),
        sslmode: Some(mode),
        application_name: Some(format!("pitr-tls-{mode}")),
        ..ConnParams::default()
    };
    let system_id = c.system_id();
    rt().block_on(async {
        // SCRAM over the socket: right, wrong and missing password.
        let mut conn =
            connect_replication_with_env(&socket("scram_user", Some("scram-pw")), &env(&[]))
                .await
                .unwrap();
        assert_eq!(conn.auth_method(), AuthMethod::ScramSha256);
        assert_eq!(conn.identify_system().await.unwrap().system_id.0, system_id);
        let err = connect_replication_with_env(&socket("scram_user", Some("nope")), &env(&[]))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProtoError::AuthFailed { .. }), "{msg}");
        assert!(
            msg.contains("\"scram_user\"") && msg.contains("password authentication failed"),
            "{msg}"
        );
        assert!(msg.contains("hint:"), "{msg}");
        let err = connect_replication_with_env(&socket("scram_user", None), &env(&[]))
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::PasswordRequired { .. }), "{err}");
        // PGPASSWORD works like the flag.
        connect_replication_with_env(
            &socket("scram_user", None),
            &env(&[("PGPASSWORD", "scram-pw")]),
        )
        .await
        .unwrap();

        // MD5 with the password from a password file: the line for database `replication`.
        let pgpass = certs.path().join("pgpass");
        fs::write(
            &pgpass,
            "*:*:postgres:md5_user:wrong\n*:*:replication:md5_user:md5-pw\n",
        )
        .unwrap();
        fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
        let pgpass_env = env(&[("PGPASSFILE", pgpass.to_str().unwrap())]);
        let mut conn = connect_replication_with_env(&socket("md5_user", None), &pgpass_env)
            .await
            .unwrap();
        assert_eq!(conn.auth_method(), AuthMethod::Md5);
        conn.identify_system().await.unwrap();

        // The SQL client follows the same sslmode: never TLS on a Unix socket (as libpq), so
        // PGSSLMODE=require still connects there.
        let sql_params = |host: &str, mode: SslMode| ConnParams {
            host: Some(host.into()),
            port: Some(port),
            user: Some("postgres".into()),
            dbname: Some("postgres".into()),
            sslmode: Some(mode),
            ..ConnParams::default()
        };
        let socket_dir = c.socket_dir().display().to_string();
        let sql = connect_with_env(&sql_params(&socket_dir, SslMode::Require), &env(&[]))
            .await
            .unwrap();
        let ssl: bool = sql
            .inner()
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!ssl);
        if !ssl_build {
            let err = connect_with_env(&sql_params("127.0.0.1", SslMode::Require), &env(&[]))
                .await
                .unwrap_err();
            assert!(matches!(err, ProtoError::Tls { .. }), "{err}");
            // The server answers the SSL request with 'N': require is refused by name, prefer
            // goes on in the clear (and pg_hba's hostnossl line rejects it).
            let err = connect_replication_with_env(&tcp("127.0.0.1", SslMode::Require), &env(&[]))
                .await
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, ProtoError::TlsUnavailable { .. }) && msg.contains("hint:"),
                "{msg}"
            );
            let err = connect_replication_with_env(&tcp("127.0.0.1", SslMode::Prefer), &env(&[]))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ProtoError::AuthFailed { server, .. } if server.code == "28000"),
                "{err}"
            );
            eprintln!(
                "PostgreSQL {} is built without SSL: TLS handshakes not tested",
                pg.major
            );
            return;
        }
        // TLS over TCP: require encrypts without checking the certificate.
        let mut conn = connect_replication_with_env(&tcp("127.0.0.1", SslMode::Require), &env(&[]))
            .await
            .unwrap();
        assert!(conn.is_tls());
        // Over TLS the server offers SCRAM-SHA-256-PLUS: the exchange is bound to its
        // certificate (a wrong binding would fail authentication).
        assert_eq!(conn.auth_method(), AuthMethod::ScramSha256Plus);
        assert_eq!(conn.identify_system().await.unwrap().system_id.0, system_id);
        assert_eq!(
            c.psql(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'pitr-tls-require'"
            ),
            "t"
        );
        drop(conn);
        // prefer (the default) uses TLS when offered; disable is refused by pg_hba (hostnossl
        // reject) and allow then retries with TLS.
        for (mode, tls) in [(SslMode::Prefer, true), (SslMode::Allow, true)] {
            let conn = connect_replication_with_env(&tcp("127.0.0.1", mode), &env(&[]))
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(conn.is_tls(), tls, "{mode}");
        }
        let err = connect_replication_with_env(&tcp("127.0.0.1", SslMode::Disable), &env(&[]))
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::AuthFailed { .. }), "{err}");

        // verify-full: the CA that signed the certificate, and a name it carries.
        let ca = certs.path().join("ca.crt");
        let ca_env = env(&[("PGSSLROOTCERT", ca.to_str().unwrap())]);
        let conn = connect_replication_with_env(&tcp("127.0.0.1", SslMode::VerifyFull), &ca_env)
            .await
            .unwrap();
        assert!(conn.is_tls());
        // `localhost` is not in the certificate: verify-full refuses, verify-ca accepts.
        let err = connect_replication_with_env(&tcp("localhost", SslMode::VerifyFull), &ca_env)
            .await
            .unwrap_err();
        assert!(matches!(err, ProtoError::Tls { .. }), "{err}");
        connect_replication_with_env(&tcp("localhost", SslMode::VerifyCa), &ca_env)
            .await
            .unwrap();
        // Another CA: refused, with a hint at PGSSLROOTCERT.
        let other = certs.path().join("other.crt");
        let other_env = env(&[("PGSSLROOTCERT", other.to_str().unwrap())]);
        let err = connect_replication_with_env(&tcp("127.0.0.1", SslMode::VerifyCa), &other_env)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ProtoError::Tls { .. }) && msg.contains("PGSSLROOTCERT"),
            "{msg}"
        );
        // SQL sessions over TLS: encrypted, verified against the CA, refused with another CA.
        for (mode, env) in [
            (SslMode::Require, env(&[])),
            (SslMode::VerifyFull, ca_env.clone()),
        ] {
            let sql = connect_with_env(&sql_params("127.0.0.1", mode), &env)
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
            let ssl: bool = sql
                .inner()
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(ssl, "{mode}");
        }
        let err = connect_with_env(&sql_params("127.0.0.1", SslMode::VerifyCa), &other_env)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ProtoError::Tls { .. }) && msg.contains("hint:"),
            "{msg}"
        );
        // verify-ca without any root certificate is a clear error before connecting.
        let err = connect_replication_with_env(&tcp("127.0.0.1", SslMode::VerifyCa), &env(&[]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("needs a root certificate"),
            "{err}"
        );
    });
}

pg_test_matrix!(
    identify_system_matches_pg_controldata,
    physical_slots_are_created_read_and_dropped,
    streamed_wal_matches_the_segment_file_and_status_advances_the_slot,
    keepalives_asking_for_a_reply_keep_the_stream_alive,
    timeline_history_and_timeline_end_after_promotion,
    base_backup_is_complete_verifiable_and_restorable,
    incremental_backup_combines_with_its_full_backup,
    password_and_tls_authentication,
);
