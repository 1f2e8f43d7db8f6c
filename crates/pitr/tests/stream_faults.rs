//! `pitr stream` killed (`kill -9`) at several points of a busy primary's WAL: after each kill
//! the repository holds whole segments and valid `.partial` objects only (`verify` passes), a
//! rerun on the same slot carries on, and every streamed segment is byte for byte the one
//! archive-push stored from the same server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pitr_testkit::{as_postgres, pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pitr stream` into `repo` on slot `pitr_k` (created on the first run), as the postgres OS
/// user.
fn start_stream(c: &Cluster, repo: &Path, log: &Path, create: bool) -> Child {
    let port = c.port().to_string();
    let mut cmd = Command::new(pitr_bin());
    cmd.args(["--repo", s(repo), "stream", "-h"])
        .arg(c.socket_dir())
        .args(["-p", &port, "-U", "postgres", "--slot", "pitr_k"])
        .args(create.then_some("--create-slot"))
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    as_postgres(&mut cmd);
    cmd.spawn().unwrap()
}

/// The segment names stored under `repo`'s cluster `main`, sorted.
fn stored_segments(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for tli in fs::read_dir(repo.join("main/wal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in fs::read_dir(tli.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Killed while idle, at several delays into a bulk insert that crosses segments, and right
/// after a segment switch; `verify` after each kill, a rerun after each; at the end every
/// streamed segment equals the archived one, and (15+, where the stream starts at the slot's
/// position) none is missing between the first and the last streamed.
fn stream_killed_anywhere_keeps_whole_segments_and_reruns_continue(install: &PgInstall) {
    let scratch = scratch_dir();
    let archived = scratch.path().join("archived");
    let streamed = scratch.path().join("streamed");
    pitr_as_postgres(&["init", "--repo", s(&archived)]).expect_code(0);
    pitr_as_postgres(&["init", "--repo", s(&streamed)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            archive_command: Some(archive_command(&archived, "")),
            ..Default::default()
        },
    );
    c.start();
    c.psql("CREATE TABLE t (id int, pad text)");
    let log = scratch.path().join("stream.log");
    let slot_active = || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pitr_k' AND active")
            == "1"
    };
    let (sock, port) = (c.socket_dir().to_path_buf(), c.port());
    // About 12 MB of WAL: the kills land before, during and after segment completions.
    let bulk = "INSERT INTO t SELECT g, repeat('x', 40) FROM generate_series(1, 120000) g";
    let delays_ms = [None, Some(0), Some(40), Some(150), Some(400), Some(900)];
    let (mut kills, mut with_partial) = (0, 0);
    for (round, delay) in delays_ms.iter().enumerate() {
        let mut child = start_stream(&c, &streamed, &log, round == 0);
        wait_until("the stream to use its slot", 30, slot_active);
        std::thread::scope(|sc| {
            let writer = delay.map(|_| {
                let sock = &sock;
                sc.spawn(move || {
                    psql_port(install, sock, port, bulk);
                    psql_port(install, sock, port, "SELECT pg_switch_wal()");
                })
            });
            std::thread::sleep(Duration::from_millis(delay.unwrap_or(0)));
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            if let Some(w) = writer {
                w.join().unwrap();
            }
        });
        let partials = fs::read_dir(streamed.join("main/stream"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|tli| fs::read_dir(tli.path()).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count();
        with_partial += usize::from(partials > 0);
        let log_text = fs::read_to_string(&log).unwrap_or_default();
        let v = pitr(&["--repo", s(&streamed), "verify"]);
        assert_eq!(
            v.code, 0,
            "verify after a kill at {delay:?} ms: {v:?}\nstream log:\n{log_text}"
        );
    }
    // The last rerun runs to the end: the switched-away segment arrives, then a clean stop.
    let mut child = start_stream(&c, &streamed, &log, false);
    wait_until("the stream to use its slot", 30, slot_active);
    c.psql("INSERT INTO t VALUES (0, 'last')");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)));
    wait_until(&format!("{last} to be streamed"), 60, || {
        stored_segments(&streamed).contains(&last)
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    pitr(&["--repo", s(&streamed), "verify"]).expect_code(0);

    let (in_a, in_b) = (stored_segments(&archived), stored_segments(&streamed));
    let get_dir = scratch.path().join("got");
    fs::create_dir_all(&get_dir).unwrap();
    for seg in &in_b {
        let (ga, gb) = (get_dir.join("a"), get_dir.join("b"));
        pitr(&["--repo", s(&archived), "archive-get", seg, s(&ga)]).expect_code(0);
        pitr(&["--repo", s(&streamed), "archive-get", seg, s(&gb)]).expect_code(0);
        assert!(
            fs::read(&ga).unwrap() == fs::read(&gb).unwrap(),
            "{seg}: streamed and archived differ"
        );
        fs::remove_file(&ga).unwrap();
        fs::remove_file(&gb).unwrap();
    }
    let (first, lastb) = (in_b.first().unwrap(), in_b.last().unwrap());
    let missing: Vec<&String> = in_a
        .iter()
        .filter(|n| *n >= first && *n <= lastb && !in_b.contains(n))
        .collect();
    // A rerun goes on from the slot's position (15+) or, on 14 (which cannot read it over a
    // replication connection), from where the repository's WAL ends: no gap either way.
    assert!(
        missing.is_empty(),
        "not streamed after a rerun: {missing:?}"
    );
    eprintln!(
        "PostgreSQL {}: stream killed at {kills} points ({with_partial} left a .partial), verify \
         passed after each, {} segments \
         streamed (of {} archived), all equal to archive-push's, {} missing between them",
        install.major,
        in_b.len(),
        in_a.len(),
        missing.len()
    );
    assert!(in_b.len() >= 3, "only {in_b:?} streamed");
}
pg_test_matrix!(stream_killed_anywhere_keeps_whole_segments_and_reruns_continue);
