//! archive-push / archive-get against real PostgreSQL 14–18.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use pitr_testkit::{
    pg_test_matrix, postgres_uid_gid, scratch_dir, Cluster, ClusterOptions, PgInstall,
};

/// Segments PostgreSQL marked as archived (`archive_status/*.done`), sorted.
fn archived_segments(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(c.datadir().join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".done").map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

fn init_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    repo
}

/// PostgreSQL archives through `pitr archive-push` under write load; every completed segment
/// lands; `archive-get` returns byte-identical files that pg_waldump accepts.
fn archives_every_segment_under_load(install: &PgInstall) {
    let major = install.major;
    let scratch = scratch_dir();
    let repo = init_repo(scratch.path());
    // Alternate segment sizes across versions: nothing may assume 16 MB.
    let seg_mb = if major % 2 == 1 { 1 } else { 16 };
    let c = Cluster::init(
        install,
        ClusterOptions {
            wal_segsize_mb: Some(seg_mb),
            archive_command: Some(archive_command(&repo, "")),
            conf: vec![
                ("wal_keep_size".into(), "4GB".into()),
                ("checkpoint_timeout".into(), "1h".into()),
            ],
            ..Default::default()
        },
    );
    c.start();
    c.pgbench_init(1);
    c.pgbench_run(4, 300);
    c.psql(
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    );
    c.switch_wal();
    c.psql("INSERT INTO big SELECT g, 'y' FROM generate_series(1, 1000) g");
    let last = c.switch_wal();
    assert!(
        c.wait_archived(&last, Duration::from_secs(120)),
        "{last} not archived:\n{}",
        c.log_tail(30)
    );

    let segments = archived_segments(&c);
    assert!(
        segments.len() >= 3,
        "expected several segments, got {segments:?}"
    );
    let got = scratch.path().join("got");
    fs::create_dir(&got).unwrap();
    for name in &segments {
        let dest = got.join(name);
        pitr(&["--repo", s(&repo), "archive-get", name, s(&dest)]).expect_code(0);
        let original = fs::read(c.datadir().join("pg_wal").join(name)).unwrap();
        assert_eq!(
            fs::read(&dest).unwrap(),
            original,
            "{name} differs from what PostgreSQL wrote"
        );
    }

    // pg_waldump decodes the restored WAL end to end.
    let first = &segments[0];
    let last_done = segments.last().unwrap();
    let out = Command::new(install.bin("pg_waldump"))
        .args(["--stats", "-p", s(&got), first, last_done])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Transaction") && stdout.contains("Heap"),
        "pg_waldump:\n{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("invalid") && !stderr.contains("incorrect"),
        "pg_waldump errors:\n{stderr}"
    );

    // info sees every archived segment of timeline 1 and no gaps.
    let info = pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    let cluster = &v["clusters"][0];
    assert_eq!(cluster["name"], "main");
    // A string: system identifiers exceed 2^53, which JSON numbers cannot hold exactly.
    assert_eq!(cluster["identity"]["system_id"], c.system_id().to_string());
    assert_eq!(
        cluster["identity"]["pg_major"].as_u64().unwrap(),
        u64::from(major)
    );
    assert_eq!(
        cluster["identity"]["wal_seg_size"].as_u64().unwrap(),
        u64::from(seg_mb) << 20
    );
    let tl = &cluster["timelines"][0];
    assert!(
        tl["segments"].as_u64().unwrap() >= segments.len() as u64,
        "{info:?}"
    );
    assert_eq!(tl["gaps"].as_array().unwrap().len(), 0, "{}", info.stdout);
    c.stop();
}
pg_test_matrix!(archives_every_segment_under_load);

/// System identifier of a (possibly stopped) cluster, from pg_controldata.
fn controldata_system_id(c: &Cluster) -> u64 {
    c.controldata()
        .into_iter()
        .find(|(k, _)| k == "Database system identifier")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

/// The first WAL segment of a freshly initialised, never started cluster.
fn first_segment(c: &Cluster) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(c.datadir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    segs.remove(0)
}

#[test]
fn duplicates_conflicts_and_foreign_clusters_are_handled() {
    let install = newest_pg();
    let scratch = scratch_dir();
    let repo = init_repo(scratch.path());
    let a = Cluster::init(&install, ClusterOptions::default());
    let seg = first_segment(&a);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let original = fs::read(&seg).unwrap();

    pitr(&["--repo", s(&repo), "archive-push", s(&seg)]).expect_code(0);
    // identical re-push: success with a notice
    let again = pitr(&["--repo", s(&repo), "archive-push", s(&seg)]).expect_code(0);
    assert!(again.stderr.contains("already archived"), "{again:?}");

    // a different file under the same name: refused, both checksums named, stored copy intact
    let other_dir = scratch.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let mut changed = original.clone();
    changed[100_000] ^= 0xFF;
    fs::write(other_dir.join(&name), &changed).unwrap();
    let refused = pitr(&[
        "--repo",
        s(&repo),
        "archive-push",
        s(&other_dir.join(&name)),
    ])
    .expect_code(4);
    let sum = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    assert!(refused.stderr.contains(&sum(&original)), "{refused:?}");
    assert!(refused.stderr.contains(&sum(&changed)), "{refused:?}");
    let dest = scratch.path().join("back");
    pitr(&["--repo", s(&repo), "archive-get", &name, s(&dest)]).expect_code(0);
    assert_eq!(fs::read(&dest).unwrap(), original);

    // a segment of another cluster (other system identifier) is refused in this cluster...
    let b = Cluster::init(&install, ClusterOptions::default());
    let seg_b = first_segment(&b);
    assert_eq!(seg_b.file_name(), seg.file_name());
    let foreign = pitr(&["--repo", s(&repo), "archive-push", s(&seg_b)]).expect_code(4);
    assert!(foreign.stderr.contains("system identifier"), "{foreign:?}");
    assert!(
        foreign
            .stderr
            .contains(&controldata_system_id(&b).to_string()),
        "{foreign:?}"
    );
    // ...and accepted under its own cluster name.
    pitr(&[
        "--repo",
        s(&repo),
        "--cluster",
        "other",
        "archive-push",
        s(&seg_b),
    ])
    .expect_code(0);

    // a segment of another major version than the one recorded is refused
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let storage = std::sync::Arc::new(pitr_storage::LocalFs::open(&repo).unwrap());
        let r = pitr_repo::Repo::new(storage);
        let id = pitr_repo::ClusterIdentity {
            system_id: controldata_system_id(&a),
            pg_major: install.major - 1,
            wal_seg_size: original.len() as u64,
        };
        r.cluster("upgraded").unwrap().register(&id).await.unwrap();
    });
    let version = pitr(&[
        "--repo",
        s(&repo),
        "--cluster",
        "upgraded",
        "archive-push",
        s(&seg),
    ])
    .expect_code(4);
    assert!(version.stderr.contains("major version"), "{version:?}");
}

#[test]
fn archive_get_tells_absence_from_corruption() {
    let install = oldest_pg();
    let scratch = scratch_dir();
    let repo = init_repo(scratch.path());
    let a = Cluster::init(&install, ClusterOptions::default());
    let seg = first_segment(&a);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    pitr(&["--repo", s(&repo), "archive-push", s(&seg)]).expect_code(0);
    let dest = scratch.path().join("dest");

    // absent: exit 1, quiet (PostgreSQL probes for history files that do not exist)
    let probe = pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        "00000002.history",
        s(&dest),
    ])
    .expect_code(1);
    assert!(probe.stderr.lines().count() <= 1, "{probe:?}");
    pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        "000000010000000000000099",
        s(&dest),
    ])
    .expect_code(1);
    assert!(!dest.exists());

    // a flipped byte in the stored object: not "absent" but a fatal status (> 125)
    let stored = repo.join("main/wal/00000001").join(&name);
    let good = fs::read(&stored).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(&stored, &bad).unwrap();
    let corrupt = pitr(&["--repo", s(&repo), "archive-get", &name, s(&dest)]).expect_code(255);
    assert!(
        corrupt.stderr.contains("corrupt") && corrupt.stderr.contains(&name),
        "{corrupt:?}"
    );
    assert!(
        !dest.exists(),
        "nothing may be written from a corrupt object"
    );

    // truncated object: fatal too
    fs::write(&stored, &good[..good.len() / 3]).unwrap();
    pitr(&["--repo", s(&repo), "archive-get", &name, s(&dest)]).expect_code(255);
    assert!(!dest.exists());

    // unreachable repository: fatal, not absent
    let gone = pitr(&[
        "--repo",
        "/nonexistent/pitr-repo",
        "archive-get",
        &name,
        s(&dest),
    ])
    .expect_code(255);
    assert!(gone.stderr.contains("/nonexistent/pitr-repo"), "{gone:?}");

    // restoring the good object works again
    fs::write(&stored, &good).unwrap();
    pitr(&["--repo", s(&repo), "archive-get", &name, s(&dest)]).expect_code(0);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&seg).unwrap());

    // a name that is not WAL is an error, not absence
    pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        "postgresql.conf",
        s(&dest),
    ])
    .expect_code(255);
}

#[test]
fn source_and_permission_errors_name_the_path_and_the_user() {
    let scratch = scratch_dir();
    let repo = init_repo(scratch.path());
    let missing = scratch.path().join("pg_wal/000000010000000000000001");
    let r = pitr(&["--repo", s(&repo), "archive-push", s(&missing)]).expect_code(3);
    assert!(
        r.stderr.contains(s(&missing)) && r.stderr.contains("%p"),
        "{r:?}"
    );

    if postgres_uid_gid().is_none() {
        return; // permission checks need to run as root, switching to the postgres user
    }
    let install = oldest_pg();
    let a = Cluster::init(&install, ClusterOptions::default());
    let seg = first_segment(&a);
    // a repository the postgres user may not write
    let locked = scratch.path().join("locked");
    pitr(&["init", "--repo", s(&locked)]).expect_code(0);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    let denied = pitr_as_postgres(&["--repo", s(&locked), "archive-push", s(&seg)]).expect_code(3);
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    assert!(
        denied.stderr.contains(s(&locked)) && denied.stderr.contains("\"postgres\""),
        "{denied:?}"
    );
    // a WAL file the postgres user may not read
    let root_only = scratch.path().join("rootonly");
    fs::create_dir(&root_only).unwrap();
    fs::set_permissions(&root_only, fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = root_only.join(seg.file_name().unwrap());
    fs::copy(&seg, &hidden).unwrap();
    let unreadable =
        pitr_as_postgres(&["--repo", s(&repo), "archive-push", s(&hidden)]).expect_code(3);
    assert!(
        unreadable.stderr.contains(s(&hidden)) && unreadable.stderr.contains("postgres"),
        "{unreadable:?}"
    );
}

/// `--repo` pointing at a directory that holds something else (here, a data directory) is
/// refused by every command, archive-get included (255, not "absent"); an empty directory, or
/// one with only `lost+found`, becomes a repository.
#[test]
fn a_directory_that_is_not_a_repository_is_refused() {
    let scratch = scratch_dir();
    let install = oldest_pg();
    let a = Cluster::init(&install, ClusterOptions::default());
    let seg = first_segment(&a);
    let foreign = a.datadir();
    let not_a_repo = |r: &Run| {
        assert!(
            r.stderr.contains("is not a pitr repository") && r.stderr.contains(s(foreign)),
            "{r:?}"
        );
    };
    not_a_repo(&pitr(&["--repo", s(foreign), "archive-push", s(&seg)]).expect_code(4));
    let dest = scratch.path().join("RECOVERYXLOG");
    not_a_repo(
        &pitr(&[
            "--repo",
            s(foreign),
            "archive-get",
            "000000010000000000000001",
            s(&dest),
        ])
        .expect_code(255),
    );
    not_a_repo(&pitr(&["--repo", s(foreign), "info"]).expect_code(4));
    not_a_repo(&pitr(&["init", "--repo", s(foreign)]).expect_code(4));
    assert!(!foreign.join("pitr.repository").exists());
    assert!(!foreign.join("main").exists());

    let fresh = scratch.path().join("fresh");
    fs::create_dir_all(fresh.join("lost+found")).unwrap();
    pitr(&["--repo", s(&fresh), "archive-push", s(&seg)]).expect_code(0);
    assert!(fresh.join("pitr.repository").is_file());
}

#[test]
fn no_space_left_is_reported_and_nothing_is_published() {
    if postgres_uid_gid().is_none() {
        eprintln!("not root: cannot mount a small tmpfs; this check runs in CI as root");
        return;
    }
    let install = oldest_pg();
    let scratch = scratch_dir();
    let small = scratch.path().join("small");
    fs::create_dir(&small).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", s(&small)])
        .status()
        .unwrap();
    assert!(mount.success(), "mount tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let repo = small.join("repo");
    pitr(&["init", "--repo", s(&repo)]).expect_code(0);
    let a = Cluster::init(&install, ClusterOptions::default());
    let seg = first_segment(&a);
    let full = pitr(&[
        "--repo",
        s(&repo),
        "--compress",
        "none",
        "archive-push",
        s(&seg),
    ])
    .expect_code(3);
    assert!(full.stderr.contains("no space left"), "{full:?}");
    let leftovers: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| p.contains("pitr-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    let name = seg.file_name().unwrap().to_str().unwrap();
    pitr(&[
        "--repo",
        s(&repo),
        "archive-get",
        name,
        s(&scratch.path().join("x")),
    ])
    .expect_code(1);
}

fn walk(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}
