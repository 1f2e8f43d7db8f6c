//! Memory stays bounded whatever the object size: `archive-get` and `verify` of a repository
//! holding a 128 MB WAL segment stored uncompressed (a large object), plain and encrypted, peak
//! at a small fraction of the object's size (the real binary on a real repository; the peak is
//! the child's `VmHWM`, polled from `/proc` while it runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pitr_testkit::{postgres_uid_gid, scratch_dir, Cluster, ClusterOptions};

/// The bound: a few read pieces, the decoder's buffers and the binary itself, far below the
/// 128 MB object.
const BOUND_KB: u64 = 100 << 10;

/// The bound for a restore on two threads: a few more pieces in flight.
const RESTORE_BOUND_KB: u64 = 120 << 10;

/// `VmHWM` (peak resident set, kB) of process `pid`, while it exists.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs pitr with `args`, expecting exit code 0; returns its peak resident set in kB (the last
/// `VmHWM` read before it exited: a high-water mark only grows).
fn peak_rss_kb(args: &[&str]) -> u64 {
    let mut child = Command::new(pitr_bin())
        .args(args)
        .env_remove("PITR_REPO")
        .env_remove("PITR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some(kb) = vm_hwm(child.id()) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "pitr {args:?} failed: {status}\n{err}");
    assert!(peak > 0, "no VmHWM read for pitr {args:?}");
    peak
}

/// The first segment of a freshly initialised cluster's pg_wal.
fn run(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn first_segment(c: &Cluster) -> PathBuf {
    let mut names: Vec<PathBuf> = fs::read_dir(c.datadir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    names.sort();
    names.remove(0)
}

/// archive-get and verify of a 128 MB segment stored uncompressed, in a plain and an encrypted
/// repository: the segment comes back exactly, and neither command's peak RSS reaches
/// [`BOUND_KB`].
#[test]
fn archive_get_and_verify_of_a_large_object_stay_within_bounded_memory() {
    let install = newest_pg();
    let scratch = scratch_dir();
    let a = Cluster::init(
        &install,
        ClusterOptions {
            wal_segsize_mb: Some(128),
            ..Default::default()
        },
    );
    let seg = first_segment(&a);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let original_len = fs::metadata(&seg).unwrap().len();
    let original = blake3::hash(&fs::read(&seg).unwrap());
    let key = scratch.path().join("key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let mut figures = Vec::new();
    for encrypted in [false, true] {
        let repo = scratch
            .path()
            .join(if encrypted { "enc-repo" } else { "repo" });
        let mut base: Vec<&str> = vec!["--repo", s(&repo)];
        if encrypted {
            base.extend(["--encryption-key-file", s(&key)]);
        }
        let with = |rest: &[&str]| -> Vec<String> {
            base.iter().chain(rest).map(|a| a.to_string()).collect()
        };
        pitr(&run(&with(&["init"]))).expect_code(0);
        pitr(&run(&with(&[
            "--compress",
            "none",
            "archive-push",
            s(&seg),
        ])))
        .expect_code(0);
        let stored = stored_size(&repo, &name);
        assert!(stored >= original_len, "stored in {stored} bytes");

        let dest = scratch.path().join(format!("dest-{encrypted}"));
        let get = peak_rss_kb(&run(&with(&["archive-get", &name, s(&dest)])));
        assert!(blake3::hash(&fs::read(&dest).unwrap()) == original);
        fs::remove_file(&dest).unwrap();
        let verify = peak_rss_kb(&run(&with(&["verify"])));
        figures.push(format!(
            "{}: archive-get {} MB, verify {} MB",
            if encrypted { "encrypted" } else { "plain" },
            get >> 10,
            verify >> 10
        ));
        assert!(
            get < BOUND_KB && verify < BOUND_KB,
            "peak RSS over {} MB for a {} MB object: {figures:?}",
            BOUND_KB >> 10,
            stored >> 20
        );
    }
    eprintln!(
        "peak RSS for a {} MB object: {}",
        original_len >> 20,
        figures.join("; ")
    );
}

/// Size of the stored object of WAL file `name`, wherever the repository keeps it.
fn stored_size(repo: &Path, name: &str) -> u64 {
    fn find(dir: &Path, name: &str) -> Option<u64> {
        for e in fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if let Some(n) = find(&p, name) {
                    return Some(n);
                }
            } else if e.file_name().to_string_lossy() == name {
                return Some(e.metadata().ok()?.len());
            }
        }
        None
    }
    find(repo, name).expect("the segment is stored")
}

/// A restore (`--jobs 2`) of a backup holding a 128 MB file of barely compressible bytes
/// (stored at about its size): the file comes back exactly and the restore's peak RSS stays
/// under [`RESTORE_BOUND_KB`], below the object's size plus the binary's own (the object is
/// read in pieces and decoded on two threads, each holding a compressed and a decoded 8 MB
/// piece).
#[test]
fn restore_of_a_large_file_stays_within_bounded_memory() {
    let Some((uid, gid)) = postgres_uid_gid() else {
        eprintln!(
            "not root: the server runs as the postgres OS user; this check runs in CI as root"
        );
        return;
    };
    let install = newest_pg();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        &install,
        ClusterOptions {
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    let big = c.datadir().join("big_noise");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..128u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&big, &noise).unwrap();
    std::os::unix::fs::chown(&big, Some(uid), Some(gid)).unwrap();
    let expected = blake3::hash(&noise);
    drop(noise);
    let port = c.port().to_string();
    pitr_as_postgres(&[
        "--repo",
        s(&repo),
        "backup",
        "--pgdata",
        s(c.datadir()),
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
    ])
    .expect_code(0);
    c.stop();
    let target = scratch.path().join("restored");
    let peak = peak_rss_kb(
        &[
            "--repo".to_string(),
            s(&repo).to_string(),
            "restore".to_string(),
            "--pgdata".to_string(),
            s(&target).to_string(),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert!(blake3::hash(&fs::read(target.join("big_noise")).unwrap()) == expected);
    eprintln!(
        "peak RSS of a restore with a 128 MB file: {} MB",
        peak >> 10
    );
    assert!(
        peak < RESTORE_BOUND_KB,
        "restore peaked at {} MB",
        peak >> 10
    );
}
