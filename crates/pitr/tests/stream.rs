//! `pitr stream` against real PostgreSQL 14–18: completed segments become the objects
//! archive-push makes, on a slot that follows what is stored, across a server restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn object(repo: &Path, segment: &str) -> PathBuf {
    repo.join("main/wal").join(&segment[..8]).join(segment)
}

/// Writes a little and switches segments; returns the segment switched away from.
fn fill_segment(c: &Cluster, n: u32) -> String {
    c.psql(&format!("INSERT INTO t VALUES ({n})"));
    c.switch_wal()
}

struct Streamer(Child);

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server archives into repository A while `pitr stream` stores into repository B on a slot
/// it creates: every completed segment is in B, byte for byte the object archive-push made in
/// A; the slot's restart position follows what B holds; after a server restart the stream
/// reconnects and goes on; SIGTERM stops it cleanly with its report.
fn stream_stores_segments_as_archive_push_does(install: &PgInstall) {
    let scratch = scratch_dir();
    let archived = scratch.path().join("archived");
    let streamed = scratch.path().join("streamed");
    pitr_as_postgres(&["init", "--repo", s(&archived)]).expect_code(0);
    pitr(&["init", "--repo", s(&streamed)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            archive_command: Some(archive_command(&archived, "")),
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t (id int)");
    let port = c.port().to_string();
    let log = fs::File::create(scratch.path().join("stream.log")).unwrap();
    let child = Command::new(pitr_bin())
        .args(["--repo", s(&streamed), "--json", "stream", "-h"])
        .arg(c.socket_dir())
        .args([
            "-p",
            &port,
            "-U",
            "postgres",
            "--slot",
            "pitr_s",
            "--create-slot",
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut streamer = Streamer(child);
    let slot_active = || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pitr_s' AND active")
            == "1"
    };
    wait_until("the stream to use its slot", 30, slot_active);

    let mut segments = Vec::new();
    for n in 0..2 {
        segments.push(fill_segment(&c, n));
    }
    for seg in &segments {
        wait_until(&format!("{seg} to be streamed"), 30, || {
            object(&streamed, seg).is_file()
        });
        assert!(c.wait_archived(seg, Duration::from_secs(30)));
        // The same content, length and checksum (the trailer), so that either one makes the
        // other a duplicate; only the payload's cut into zstd frames may differ.
        let (a, b) = (
            fs::read(object(&streamed, seg)).unwrap(),
            fs::read(object(&archived, seg)).unwrap(),
        );
        assert_eq!(a[..16], b[..16], "{seg}: frame headers differ");
        assert_eq!(
            a[a.len() - 48..],
            b[b.len() - 48..],
            "{seg}: streamed and archived objects hold different WAL"
        );
        let (ga, gb) = (scratch.path().join("a"), scratch.path().join("b"));
        fs::create_dir_all(&ga).unwrap();
        fs::create_dir_all(&gb).unwrap();
        let (ga, gb) = (ga.join(seg), gb.join(seg));
        pitr(&["--repo", s(&streamed), "archive-get", seg, s(&ga)]).expect_code(0);
        pitr(&["--repo", s(&archived), "archive-get", seg, s(&gb)]).expect_code(0);
        assert!(fs::read(&ga).unwrap() == fs::read(&gb).unwrap());
        // Archived into the streamed repository as well: a duplicate, not a conflict.
        let push = pitr(&["--repo", s(&streamed), "archive-push", s(&gb)]).expect_code(0);
        assert!(format!("{push:?}").contains("already"), "{push:?}");
    }
    // The slot keeps only what is not stored yet.
    let last = segments.last().unwrap();
    wait_until("the slot to follow the stored segments", 30, || {
        c.psql(&format!(
            // pg_walfile_name names the segment that ends at a boundary.
            "SELECT pg_walfile_name(restart_lsn) >= '{last}' FROM pg_replication_slots \
             WHERE slot_name = 'pitr_s'"
        )) == "t"
    });

    // pitr status sees the stream and its slot.
    let port_s = c.port().to_string();
    let st = json(
        &pitr(&[
            "--json",
            "status",
            "-h",
            s(c.socket_dir()),
            "-p",
            &port_s,
            "-U",
            "postgres",
        ])
        .expect_code(0),
    );
    let links = st["standbys"].as_array().unwrap();
    assert!(
        links
            .iter()
            .any(|l| l["pitr_stream"] == true && l["application_name"] == "pitr"),
        "{st}"
    );
    assert!(
        st["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "pitr_s" && l["active"] == true),
        "{st}"
    );

    // A restart of the server: the stream comes back by itself.
    c.restart();
    wait_until("the stream to reconnect", 60, slot_active);
    let after = fill_segment(&c, 10);
    wait_until(
        &format!("{after} to be streamed after the restart"),
        30,
        || object(&streamed, &after).is_file(),
    );
    pitr(&["--repo", s(&streamed), "verify"]).expect_code(0);
    // A backup into the streamed repository: its WAL arrives through the stream.
    pitr(&[
        "--repo",
        s(&streamed),
        "backup",
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
        "-U",
        "postgres",
    ])
    .expect_code(0);
    // WAL in a segment not complete yet, received before the stop.
    c.psql("INSERT INTO t VALUES (99)");
    wait_until("the stream to receive the last commit", 30, || {
        c.psql("SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= pg_current_wal_lsn()")
            == "1"
    });

    // SIGTERM: a clean stop with the report.
    let pid = streamer.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = streamer.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "pitr stream ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(streamer.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let log = fs::read_to_string(scratch.path().join("stream.log")).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    let rep: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{log}"));
    assert!(rep["segments"].as_u64().unwrap() >= 3, "{rep}");
    assert!(rep["connections"].as_u64().unwrap() >= 2, "{rep}");
    wait_until("the slot to be released", 10, || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE active") == "0"
    });

    // The stream left the segment in progress as a `.partial`; once that segment is archived
    // whole, expire removes the `.partial` (and keeps it while it is the only copy).
    let in_progress = c.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    let partial = partial_object(&streamed, &in_progress);
    assert!(partial.is_file(), "no {partial:?} after the stop");
    let expire = |dry: bool| {
        let mut args = vec![
            "--repo",
            s(&streamed),
            "--json",
            "expire",
            "--retain-full",
            "1",
        ];
        if dry {
            args.push("--dry-run");
        }
        json(&pitr(&args).expect_code(0))
    };
    expire(false);
    assert!(
        partial.is_file(),
        "expire removed the only copy of {in_progress}"
    );
    c.switch_wal();
    let whole = c.datadir().join("pg_wal").join(&in_progress);
    pitr(&["--repo", s(&streamed), "archive-push", s(&whole)]).expect_code(0);
    assert_eq!(
        expire(true)["wal_files"],
        1,
        "the superseded .partial, counted"
    );
    assert!(partial.is_file(), "a dry run removed {partial:?}");
    expire(false);
    assert!(!partial.exists(), "expire kept the superseded {partial:?}");
    pitr(&["--repo", s(&streamed), "verify"]).expect_code(0);
}
pg_test_matrix!(stream_stores_segments_as_archive_push_does);

/// A started primary with a table `t` and a streaming standby made by `pg_basebackup -R`.
fn primary_and_standby(install: &PgInstall) -> (Cluster, Cluster) {
    let primary = Cluster::init(install, ClusterOptions::default());
    primary.start();
    primary.psql("CREATE TABLE t (id int)");
    let standby = Cluster::empty(install, ClusterOptions::default());
    let mut bb = primary.command("pg_basebackup");
    bb.arg("-D")
        .arg(standby.datadir())
        .args(["-R", "-X", "stream", "-c", "fast"]);
    pitr_testkit::as_postgres(&mut bb);
    pitr_testkit::run_ok(&mut bb);
    standby.write_conf();
    standby.start();
    (primary, standby)
}

/// Streaming from a standby that is then promoted: the stream follows the new timeline, stores
/// its history file and its segments, and a segment of the old timeline stays as it was.
fn stream_follows_a_promotion(install: &PgInstall) {
    let scratch = scratch_dir();
    let streamed = scratch.path().join("streamed");
    pitr(&["init", "--repo", s(&streamed)]).expect_code(0);
    let (primary, standby) = primary_and_standby(install);

    let port = standby.port().to_string();
    let log = fs::File::create(scratch.path().join("stream.log")).unwrap();
    let child = Command::new(pitr_bin())
        .args(["--repo", s(&streamed), "--json", "stream", "-h"])
        .arg(standby.socket_dir())
        .args(["-p", &port, "-U", "postgres"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut streamer = Streamer(child);
    wait_until("the stream to start", 30, || {
        standby.psql("SELECT count(*) FROM pg_stat_replication") == "1"
    });
    let old = fill_segment(&primary, 1);
    wait_until(&format!("{old} to be streamed"), 30, || {
        object(&streamed, &old).is_file()
    });

    standby.psql("SELECT pg_promote()");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "f");
    let new = fill_segment(&standby, 2);
    assert!(new.starts_with("00000002"), "{new}");
    wait_until(&format!("{new} to be streamed"), 30, || {
        object(&streamed, &new).is_file()
    });
    assert!(streamed
        .join("main/wal/00000002/00000002.history")
        .is_file());
    // The segment holding the switch exists on both timelines, each its own object.
    let verify = pitr(&["--repo", s(&streamed), "verify"]).expect_code(0);
    assert!(verify.stdout.contains("everything verified"), "{verify:?}");

    let pid = streamer.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let st = streamer.0.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(streamer.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let log = fs::read_to_string(scratch.path().join("stream.log")).unwrap();
    assert!(st.success(), "{st:?}\n{log}");
    let rep: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{log}"));
    assert_eq!(rep["timeline_switches"], 1, "{rep}");
}
pg_test_matrix!(stream_follows_a_promotion);

/// A failover the stream saw more of than the new primary: the stream received WAL from the old
/// primary that its standby never got; the old primary dies, the standby takes over its address
/// (socket and port) and is promoted. The reconnected stream cannot resume where it was (that
/// point is past the fork on the new server's history): it keeps what it had as the old
/// timeline's end, warns, and follows the new timeline from the fork point instead of retrying
/// forever.
fn stream_follows_a_failover_past_the_fork_point(install: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("streamed");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let (primary, standby) = primary_and_standby(install);
    let log = scratch.path().join("stream.log");
    let streamer = start_stream(&primary, &repo, &log, &[]);
    // Connected before the switch below, so that it streams `first` from its start (else it
    // may start at the server's position after the switch).
    wait_until("the stream to start", 30, || {
        primary.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr'")
            == "1"
    });
    let both_caught_up =
        "SELECT count(*) FILTER (WHERE write_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication";
    let first = fill_segment(&primary, 1);
    wait_until("the standby and the stream to catch up", 30, || {
        primary.psql(both_caught_up) == "2"
    });
    // The standby stops; the stream alone receives what the primary writes next.
    standby.stop();
    primary.psql("INSERT INTO t SELECT g FROM generate_series(100, 5100) g");
    wait_until("the stream to receive the last commit", 30, || {
        primary.psql(both_caught_up) == "1"
    });
    primary.stop_mode("immediate");

    // The standby takes over the old primary's address and is promoted.
    let auto = standby.datadir().join("postgresql.auto.conf");
    let kept: String = fs::read_to_string(&auto)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("primary_conninfo"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&auto, kept).unwrap();
    let port = primary.port().to_string();
    standby.append_conf(&[
        ("port", &port),
        ("unix_socket_directories", s(primary.socket_dir())),
    ]);
    standby.start();
    let sql = |q: &str| psql_port(install, primary.socket_dir(), primary.port(), q);
    sql("SELECT pg_promote()");
    sql("INSERT INTO t VALUES (2)");
    let new = sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(
        new.starts_with("00000002"),
        "promoted onto timeline 2: {new}"
    );
    sql("SELECT pg_switch_wal()");
    wait_until(&format!("{new} (timeline 2) to be streamed"), 60, || {
        object(&repo, &new).is_file()
    });
    assert!(
        object(&repo, &first).is_file(),
        "{first} was streamed before"
    );
    assert!(repo.join("main/wal/00000002/00000002.history").is_file());
    let rep = stop_stream(streamer, &log);
    assert_eq!(rep["timeline_switches"], 1, "{rep}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("never reached this server") && text.contains("following timeline 2"),
        "{text}"
    );
    let verify = pitr(&["--repo", s(&repo), "verify"]).expect_code(0);
    assert!(verify.stdout.contains("everything verified"), "{verify:?}");
}
pg_test_matrix!(stream_follows_a_failover_past_the_fork_point);

fn partial_object(repo: &Path, segment: &str) -> PathBuf {
    repo.join("main/stream")
        .join(&segment[..8])
        .join(format!("{segment}.partial"))
}

/// `pitr stream` as the postgres OS user, logging to `log`.
fn start_stream(c: &Cluster, repo: &Path, log: &Path, extra: &[&str]) -> Streamer {
    start_stream_env(c, s(repo), &[], log, extra)
}

/// [`start_stream`] into any repository location, with `env` added.
fn start_stream_env(
    c: &Cluster,
    repo: &str,
    env: &[(String, String)],
    log: &Path,
    extra: &[&str],
) -> Streamer {
    let port = c.port().to_string();
    let mut cmd = Command::new(pitr_bin());
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--repo", repo, "--json", "stream", "-h"])
        .arg(c.socket_dir())
        .args(["-p", &port, "-U", "postgres"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap());
    pitr_testkit::as_postgres(&mut cmd);
    Streamer(cmd.spawn().unwrap())
}

/// SIGTERM, then the JSON report of a clean exit.
fn stop_stream(mut st: Streamer, log: &Path) -> serde_json::Value {
    let pid = st.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = st.0.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(st.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let log = fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{log}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{log}"))
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// RPO 0: the primary has no archive_command (only the stream gets its WAL) and names the
/// stream in synchronous_standby_names. A commit acknowledged to the client is at once in the
/// streamed `.partial` (which `archive-get` serves under the segment's name and `info` shows);
/// after a switch the complete segment replaces it, and wins over a stale `.partial`; the
/// primary then dies (`-m immediate`) right after a last commit, and a restore to the end of
/// WAL from the repository has that commit.
fn stream_synchronous_loses_no_commit(install: &PgInstall) {
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    // Archiving on (backups need it) but no archive_command: the stream is the only way WAL
    // reaches the repository.
    let c = Cluster::init(install, ClusterOptions::default().set("archive_mode", "on"));
    c.start();
    let log = scratch.path().join("stream.log");
    let streamer = start_stream(
        &c,
        &repo,
        &log,
        &["--slot", "pitr", "--create-slot", "--synchronous"],
    );
    wait_until("the stream to start", 30, || {
        c.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr'") == "1"
    });
    c.psql("CREATE TABLE t (id int)");
    pitr_on(&c, &repo, "backup", &["--pgdata", s(c.datadir())]).expect_code(0);
    c.psql("ALTER SYSTEM SET synchronous_standby_names = 'pitr'");
    c.psql("SELECT pg_reload_conf()");
    wait_until("the stream to be the synchronous standby", 30, || {
        c.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pitr'")
            == "sync"
    });

    // Acknowledged means stored: the .partial holds the commit the moment it returns.
    c.psql("INSERT INTO t VALUES (1)");
    let at = lsn(&c.psql("SELECT pg_current_wal_lsn()"));
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(
        partial_object(&repo, &seg).is_file(),
        "no .partial for {seg}"
    );
    let info = json(&pitr(&["--repo", s(&repo), "--json", "info"]).expect_code(0));
    let st = &info["clusters"][0]["streamed"];
    assert_eq!(st["segment"], seg.as_str(), "{info}");
    assert!(lsn(st["end_lsn"].as_str().unwrap()) >= at, "{st} < {at:X}");
    let m = pitr(&["--repo", s(&repo), "metrics"]).expect_code(0).stdout;
    let want = "pitr_stream_end_lsn_bytes{cluster=\"main\",timeline=\"1\"} ";
    let line = m
        .lines()
        .find(|l| l.starts_with(want))
        .unwrap_or_else(|| panic!("{m}"));
    assert!(
        line[want.len()..].parse::<f64>().unwrap() >= at as f64,
        "{line}"
    );
    assert!(m.contains("pitr_stream_partial_age_seconds{"), "{m}");
    // verify reads the .partial too.
    let v = json(&pitr(&["--repo", s(&repo), "--json", "verify"]).expect_code(0));
    assert!(v["wal_files"].as_u64().unwrap() >= 2, "{v}");
    let seg_bytes = fs::metadata(c.datadir().join("pg_wal").join(&seg))
        .unwrap()
        .len();
    let got = scratch.path().join("got");
    pitr(&["--repo", s(&repo), "archive-get", &seg, s(&got)]).expect_code(0);
    assert_eq!(
        fs::metadata(&got).unwrap().len(),
        seg_bytes,
        "padded to a segment"
    );
    let stale = fs::read(partial_object(&repo, &seg)).unwrap();

    // A switch: the complete segment is stored and its .partial deleted.
    c.switch_wal();
    wait_until(&format!("{seg} to be stored complete"), 30, || {
        object(&repo, &seg).is_file() && !partial_object(&repo, &seg).exists()
    });
    // A .partial left over (an earlier run's) never hides the complete segment.
    fs::write(partial_object(&repo, &seg), &stale).unwrap();
    pitr(&["--repo", s(&repo), "archive-get", &seg, s(&got)]).expect_code(0);
    assert!(
        fs::read(&got).unwrap() == fs::read(c.datadir().join("pg_wal").join(&seg)).unwrap(),
        "archive-get served the stale .partial, not the complete {seg}"
    );

    // The last commit, then the primary is lost at once.
    c.psql("INSERT INTO t VALUES (42)");
    c.stop_mode("immediate");
    let rep = stop_stream(streamer, &log);
    assert!(rep["partial_writes"].as_u64().unwrap() >= 2, "{rep}");

    let dir = scratch.path().join("restored");
    let rep = json(
        &pitr(&[
            "--repo",
            s(&repo),
            "--json",
            "restore",
            "--pgdata",
            s(&dir),
            "--start",
            "--pg-bin",
            s(&install.bindir),
            "--wait-timeout",
            "120",
        ])
        .expect_code(0),
    );
    assert_eq!(rep["start"]["outcome"], "promoted", "{rep}");
    let rows = psql_port(
        install,
        c.socket_dir(),
        c.port(),
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
    );
    let mut stop = Command::new(install.bin("pg_ctl"));
    stop.arg("-D")
        .arg(&dir)
        .args(["-m", "immediate", "-w", "stop"]);
    pitr_testkit::as_postgres(&mut stop);
    let _ = stop.output();
    assert_eq!(rows, "1,42", "the last acknowledged commit is missing");
}
pg_test_matrix!(stream_synchronous_loses_no_commit);

/// On S3 (a real SeaweedFS), without --synchronous and with `--partial-interval 1`: the segment
/// in progress reaches the bucket within the interval, byte for byte what the server has so far;
/// archive-get serves it from the bucket, then, after a switch, the complete segment.
#[test]
fn stream_uploads_the_partial_to_s3_at_its_interval() {
    let install = newest_pg();
    let server = pitr_testkit::SeaweedFs::shared();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let url = format!(
        "s3://{}/stream-{}-{nanos}",
        server.bucket(),
        std::process::id()
    );
    let env = server.env();
    let with_env = |args: &[&str]| {
        let mut cmd = Command::new(pitr_bin());
        cmd.envs(env.iter().map(|(k, v)| (k, v))).args(args);
        let o = cmd.output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    with_env(&["init", "--repo", &url]).expect_code(0);
    let c = Cluster::init(&install, ClusterOptions::default());
    c.start();
    c.psql("CREATE TABLE t (id int)");
    let scratch = scratch_dir();
    let log = scratch.path().join("stream.log");
    let streamer = start_stream_env(&c, &url, &env, &log, &["--partial-interval", "1"]);
    wait_until("the stream to start", 30, || {
        c.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pitr'") == "1"
    });
    c.psql("INSERT INTO t SELECT generate_series(1, 1000)");
    let at = lsn(&c.psql("SELECT pg_current_wal_lsn()"));
    let seg = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let streamed = || {
        let info = json(&with_env(&["--repo", &url, "--json", "info"]).expect_code(0));
        info["clusters"][0]["streamed"].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = streamed();
        if st["segment"] == seg.as_str() && lsn(st["end_lsn"].as_str().unwrap()) >= at {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the .partial of {seg} up to {at:X} never reached the bucket: {st}\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let received = streamed()["bytes"].as_u64().unwrap() as usize;
    let got = scratch.path().join("got");
    with_env(&["--repo", &url, "archive-get", &seg, s(&got)]).expect_code(0);
    let served = fs::read(&got).unwrap();
    let local = fs::read(c.datadir().join("pg_wal").join(&seg)).unwrap();
    assert_eq!(served.len(), local.len(), "padded to a segment");
    assert!(
        served[..received] == local[..received],
        "the .partial differs from the server's WAL"
    );
    assert!(
        served[received..].iter().all(|&b| b == 0),
        "not zero-padded"
    );

    c.switch_wal();
    let complete = fs::read(c.datadir().join("pg_wal").join(&seg)).unwrap();
    wait_until(&format!("{seg} to be stored complete"), 30, || {
        streamed()["segment"] != seg.as_str()
            && with_env(&["--repo", &url, "archive-get", &seg, s(&got)]).code == 0
            && fs::read(&got).unwrap() == complete
    });
    let rep = stop_stream(streamer, &log);
    assert!(rep["partial_writes"].as_u64().unwrap() >= 1, "{rep}");
}
