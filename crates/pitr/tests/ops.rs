//! `pitr metrics` (printed and served over HTTP) and `pitr report` (the recovery-window page,
//! rendered by a real headless Chromium) against a repository filled by real PostgreSQL 14–18.
//! One server per major serves every assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use pitr_testkit::{pg_test_matrix, scratch_dir, Cluster, ClusterOptions, PgInstall};

/// Samples of a text exposition: `name{labels}` -> value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(key.to_string(), v);
    }
    out
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; have:\n{:#?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn unix(rfc3339: &str) -> f64 {
    let t: jiff::Timestamp = rfc3339.parse().unwrap_or_else(|e| panic!("{rfc3339}: {e}"));
    t.as_microsecond() as f64 / 1e6
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Fills a repository: a full backup, writes, an incremental one, a restore point, a dropped
/// table, and the WAL switched and archived. Returns the backup labels.
fn fill(c: &Cluster, repo: &Path) -> (String, String) {
    c.psql("CREATE TABLE t (id int, note text)");
    c.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 2000) g");
    let full = pitr_on(c, repo, "backup", &[])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    c.psql("INSERT INTO t SELECT g, 'between' FROM generate_series(1, 2000) g");
    c.psql("CREATE TABLE doomed (id int)");
    c.psql("INSERT INTO doomed SELECT g FROM generate_series(1, 100) g");
    let incr = pitr_on(c, repo, "backup", &["--type", "incr"])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    c.psql("SELECT pg_create_restore_point('before_drop')");
    c.psql("DROP TABLE doomed");
    c.psql("INSERT INTO t VALUES (0, 'after')");
    let last = c.switch_wal();
    assert!(c.wait_archived(&last, Duration::from_secs(60)), "{last}");
    (full, incr)
}

/// The metrics match `pitr info --json` (backup sizes and times, the window's LSNs), the last
/// archived segment holds the last switch and is young, the window ends at the last commit,
/// no gaps; with `-h -p` the archiver counters are the server's, and a server that does not
/// answer is `pitr_server_up 0`; `--listen` serves the same over HTTP. `pitr info` draws the
/// window in one line (sizes in MiB, system_id a JSON string). `restore --start` refuses a
/// taken port. A promoted copy branches timeline 2; `pitr report` pictures all of it in
/// Chromium. A segment removed from the repository shows as one gap of one segment in the
/// metrics, the info line and the page.
fn metrics_describe_the_repository(install: &PgInstall) {
    let started = now();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    pitr_as_postgres(&["init", "--repo", s(&repo)]).expect_code(0);
    let c = Cluster::init(
        install,
        ClusterOptions {
            wal_segsize_mb: Some(1),
            archive_command: Some(archive_command(&repo, "")),
            ..Default::default()
        },
    );
    c.start();
    let (full, incr) = fill(&c, &repo);
    let switch_lsn = lsn(&c.psql("SELECT pg_current_wal_lsn()"));
    let info = json(&pitr(&["--repo", s(&repo), "info", "--json"]).expect_code(0));
    let ci = &info["clusters"][0];
    let text = pitr(&["--repo", s(&repo), "metrics"]).expect_code(0).stdout;
    let m = parse_metrics(&text);
    // Kept for people to look at, beside the report's screenshot.
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("metrics-pg{}.txt", install.major)),
        &text,
    );
    let sysid = c.system_id();
    assert_eq!(
        ci["identity"]["system_id"],
        sysid.to_string(),
        "system_id is a JSON string"
    );
    // `pitr info` draws the window in one line: both backups on recoverable WAL, sizes in MiB.
    let text_info = pitr(&["--repo", s(&repo), "info"]).expect_code(0).stdout;
    let strip = text_info
        .lines()
        .find(|l| l.contains("(F full, i incremental"))
        .unwrap_or_else(|| panic!("{text_info}"));
    let bar = strip.split('|').nth(1).unwrap();
    assert!(
        bar.contains('F') && bar.contains('i') && bar.contains('=') && !bar.contains('!'),
        "{strip}"
    );
    assert!(
        text_info.contains(" MiB") && !text_info.contains(" MB"),
        "{text_info}"
    );
    assert_eq!(
        metric(
            &m,
            &format!(
                "pitr_cluster_info{{cluster=\"main\",system_id=\"{sysid}\",pg_major=\"{}\"}}",
                install.major
            )
        ),
        1.0,
        "{text}"
    );
    for (kind, label) in [("full", &full), ("incr", &incr)] {
        let l = format!("{{cluster=\"main\",type=\"{kind}\"}}");
        let b = ci["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["label"] == **label)
            .unwrap();
        assert_eq!(b["kind"], kind);
        assert_eq!(metric(&m, &format!("pitr_backups{l}")), 1.0);
        assert_eq!(
            metric(&m, &format!("pitr_backup_last_size_bytes{l}")),
            b["size"].as_u64().unwrap() as f64
        );
        assert_eq!(
            metric(&m, &format!("pitr_backup_last_stored_bytes{l}")),
            b["stored_size"].as_u64().unwrap() as f64
        );
        let stop = unix(b["stop_time"].as_str().unwrap());
        assert!((metric(&m, &format!("pitr_backup_last_time_seconds{l}")) - stop).abs() < 0.001);
        let took = metric(&m, &format!("pitr_backup_last_duration_seconds{l}"));
        assert!((0.0..120.0).contains(&took), "duration {took}");
    }
    // The segment closed by the last switch is the newest: its end is past the switch.
    let tl = "{cluster=\"main\",timeline=\"1\"}";
    let end = metric(&m, &format!("pitr_wal_last_archived_lsn_bytes{tl}")) as u64;
    assert!(
        end >= switch_lsn && end - switch_lsn <= 1 << 20,
        "end {end:X} switch {switch_lsn:X}"
    );
    let age = metric(&m, &format!("pitr_wal_last_archived_age_seconds{tl}"));
    assert!((0.0..120.0).contains(&age), "age {age}");
    let archived = metric(&m, &format!("pitr_wal_last_archived_time_seconds{tl}"));
    assert!(
        archived >= started - 1.0 && archived <= now(),
        "archived at {archived}"
    );
    let w = &ci["window"];
    assert_eq!(
        metric(&m, "pitr_recovery_window_start_lsn_bytes{cluster=\"main\"}"),
        lsn(w["from"]["lsn"].as_str().unwrap()) as f64
    );
    assert_eq!(
        metric(
            &m,
            "pitr_recovery_window_start_time_seconds{cluster=\"main\"}"
        ),
        unix(w["from"]["time"].as_str().unwrap())
    );
    assert_eq!(
        metric(&m, &format!("pitr_recovery_window_end_lsn_bytes{tl}")),
        lsn(w["to"]["lsn"].as_str().unwrap()) as f64
    );
    let end_time = metric(&m, &format!("pitr_recovery_window_end_time_seconds{tl}"));
    assert!(
        end_time >= started - 1.0 && end_time <= now(),
        "window end {end_time}, started {started}"
    );
    assert!(metric(&m, "pitr_recovery_window_length_seconds{cluster=\"main\"}") > 0.0);
    assert_eq!(metric(&m, "pitr_wal_gaps{cluster=\"main\"}"), 0.0);
    assert_eq!(
        metric(&m, "pitr_wal_missing_segments{cluster=\"main\"}"),
        0.0
    );
    let segs = ci["timelines"][0]["segments"].as_u64().unwrap();
    assert_eq!(
        metric(&m, "pitr_wal_segments{cluster=\"main\"}"),
        segs as f64
    );
    assert!(
        text.contains("# TYPE pitr_backups gauge")
            && text.contains("# UNIT pitr_backup_last_size_bytes bytes"),
        "{text}"
    );

    // With a server: pg_stat_archiver's counters.
    let m = parse_metrics(&pitr_on(&c, &repo, "metrics", &[]).expect_code(0).stdout);
    let a = c.archiver();
    assert_eq!(
        metric(&m, "pitr_archiver_archived_total{cluster=\"main\"}"),
        a.archived_count as f64
    );
    assert_eq!(
        metric(&m, "pitr_archiver_failed_total{cluster=\"main\"}"),
        a.failed_count as f64
    );
    assert_eq!(metric(&m, "pitr_server_up{cluster=\"main\"}"), 1.0);
    // A server that does not answer: the repository's metrics still, and the server down.
    let port = (c.port() + 2).to_string();
    let down = pitr(&[
        "--repo",
        s(&repo),
        "metrics",
        "-h",
        s(c.socket_dir()),
        "-p",
        &port,
    ])
    .expect_code(0);
    let m = parse_metrics(&down.stdout);
    assert_eq!(metric(&m, "pitr_server_up{cluster=\"main\"}"), 0.0);
    assert_eq!(
        metric(&m, "pitr_backups{cluster=\"main\",type=\"full\"}"),
        1.0
    );
    assert!(
        down.stderr.contains("warning: no archiver metrics"),
        "{down:?}"
    );

    listen_serves_metrics(&repo, &full);
    branch_timeline_2(&c, &repo, &scratch.path().join("branch"));
    restore_start_refuses_a_taken_port(&repo, &scratch.path().join("taken"));
    report_renders_in_chromium(
        &repo,
        &scratch.path().join("page"),
        &[&full, &incr],
        install.major,
    );

    // A segment lost from the repository: one gap of one segment.
    let tli_dir = repo.join("main/wal/00000001");
    let mut names: Vec<String> = std::fs::read_dir(&tli_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    std::fs::remove_file(tli_dir.join(&names[names.len() - 2])).unwrap();
    let m = parse_metrics(&pitr(&["--repo", s(&repo), "metrics"]).expect_code(0).stdout);
    assert_eq!(metric(&m, "pitr_wal_gaps{cluster=\"main\"}"), 1.0);
    assert_eq!(
        metric(&m, "pitr_wal_missing_segments{cluster=\"main\"}"),
        1.0
    );
    let gap = &names[names.len() - 2];
    // The info line marks it.
    let text_info = pitr(&["--repo", s(&repo), "info"]).expect_code(0).stdout;
    let strip = text_info
        .lines()
        .find(|l| l.contains("(F full, i incremental"))
        .unwrap();
    assert!(strip.split('|').nth(1).unwrap().contains('!'), "{strip}");
    // The page marks it: a hatched mark whose title names the missing segment.
    let page = scratch.path().join("gap.html");
    pitr(&["--repo", s(&repo), "report", "--output", s(&page)]).expect_code(0);
    let html = std::fs::read_to_string(&page).unwrap();
    let _ = std::fs::copy(
        &page,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-gap-pg{}.html", install.major)),
    );
    assert!(
        html.contains("class=\"gap\"") && html.contains(&format!("missing {gap} .. {gap}")),
        "{html}"
    );
    c.stop();
}

/// `pitr metrics --listen 127.0.0.1:0`-style serving: a GET /metrics answers 200 with the
/// exposition (the full backup's size present), an unknown path 404.
fn listen_serves_metrics(repo: &Path, _full: &str) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(pitr_bin())
        .args(["--repo", s(repo), "metrics", "--listen", &addr])
        .env_remove("PITR_REPO")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<String> {
        let mut sock = std::net::TcpStream::connect(&addr).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(sock, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut resp = String::new();
        sock.read_to_string(&mut resp).ok()?;
        Some(resp)
    };
    let mut resp = None;
    for _ in 0..100 {
        resp = get("/metrics");
        if resp.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing = get("/nope");
    let _ = child.kill();
    let _ = child.wait();
    let resp = resp.expect("pitr metrics --listen never answered");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let m = parse_metrics(body);
    assert_eq!(
        metric(&m, "pitr_backups{cluster=\"main\",type=\"full\"}"),
        1.0
    );
    assert!(missing.unwrap().starts_with("HTTP/1.1 404"));
}

/// A restored copy (no target: all archived WAL, then it promotes), archiving into the same repository:
/// timeline 2 branches from timeline 1 (the original keeps running on 1). Stopped afterwards.
fn branch_timeline_2(c: &Cluster, repo: &Path, dir: &Path) {
    let install = c.install();
    let port: u16 = c.port() + 1;
    let out = pitr(&[
        "--repo",
        s(repo),
        "--json",
        "restore",
        "--pgdata",
        s(dir),
        "--start",
        "-p",
        &port.to_string(),
        "--pg-bin",
        s(&install.bindir),
        "--wait-timeout",
        "120",
    ])
    .expect_code(0);
    // Stopped however this function ends: a failed assertion leaves no server behind.
    let _stop = StopOnDrop(install.bin("pg_ctl"), dir.to_path_buf());
    let rep = json(&out);
    assert_eq!(rep["start"]["timeline"], 2, "{rep}");
    psql_port(
        install,
        c.socket_dir(),
        port,
        "CREATE TABLE on_two AS SELECT 1 AS x",
    );
    psql_port(install, c.socket_dir(), port, "SELECT pg_switch_wal()");
    let tl2 = repo.join("main/wal/00000002");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&tl2)
        .is_ok_and(|d| d.filter_map(Result::ok).any(|e| e.file_name().len() == 24))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no timeline 2 segment archived in {}",
            tl2.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pg_ctl stop -m fast` of a data directory when dropped.
struct StopOnDrop(std::path::PathBuf, std::path::PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut stop = Command::new(&self.0);
        stop.args(["-D", s(&self.1), "-m", "fast", "-w", "stop"]);
        pitr_testkit::as_postgres(&mut stop);
        let _ = stop.output();
    }
}

/// `restore --start -p PORT` with PORT taken: refused before anything is restored, naming the
/// port and saying to pass a free one with -p.
fn restore_start_refuses_a_taken_port(repo: &Path, dir: &Path) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let out = pitr_as_postgres(&[
        "--repo",
        s(repo),
        "restore",
        "--pgdata",
        s(dir),
        "--start",
        "-p",
        &port,
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("port {port} is already in use"))
            && out.stderr.contains("pass -p PORT"),
        "{out:?}"
    );
    assert!(
        std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
        "files restored into {}",
        dir.display()
    );
}

/// Chromium, which CI installs (scripts/install-test-deps.sh): its absence fails the test.
fn chromium() -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium not found in PATH: the report test renders the page in a real headless browser\n\
         hint: run scripts/install-test-deps.sh (apt-get install -y chromium)"
    );
}

fn chromium_run(dir: &Path, args: &[&str], page: &Path) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pitr report --incidents` writes a page that headless Chromium renders: the DOM holds the
/// SVG with every backup's label, the restore point and the dropped table's incident, each
/// mark with a `<title>` carrying its LSN; the screenshot is not blank (many non-white pixels,
/// several colours).
fn report_renders_in_chromium(repo: &Path, dir: &Path, labels: &[&str], major: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let page = dir.join("window.html");
    let out = pitr(&[
        "--repo",
        s(repo),
        "report",
        "--incidents",
        "--output",
        s(&page),
    ])
    .expect_code(0);
    assert_eq!(out.stdout.trim(), s(&page));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched (the SVG namespace URI is a name, not a fetch).
    for fetch in [
        "src=",
        "href=\"http",
        "<link",
        "url(http",
        "@import",
        "<script",
    ] {
        assert!(
            !html.contains(fetch),
            "the page is not self-contained: {fetch}"
        );
    }
    let dom = String::from_utf8(chromium_run(dir, &["--dump-dom"], &page).stdout).unwrap();
    let svg_start = dom
        .find("<svg")
        .unwrap_or_else(|| panic!("no <svg> in the DOM:\n{dom}"));
    let svg = &dom[svg_start
        ..dom[svg_start..]
            .find("</svg>")
            .map(|e| svg_start + e)
            .unwrap()];
    for l in labels {
        assert!(
            svg.contains(&format!("data-label=\"{l}\"")) && svg.contains(&format!(">{l}</text>")),
            "backup {l} not in the SVG:\n{svg}"
        );
    }
    assert!(svg.contains("class=\"wal\""), "{svg}");
    assert!(svg.contains("restore point before_drop: LSN"), "{svg}");
    assert!(
        svg.contains("class=\"incident\"") && svg.contains("DROP"),
        "{svg}"
    );
    assert!(svg.contains("<title>recovery window: from"), "{svg}");
    assert!(
        svg.contains("WAL timeline 2")
            && svg.contains("timeline 2 branched from timeline 1 at LSN"),
        "{svg}"
    );
    let png = dir.join("shot.png");
    chromium_run(
        dir,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,700",
        ],
        &page,
    );
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..frame.buffer_size()];
    let px = frame.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut non_white = 0usize;
    for p in bytes.chunks(px) {
        let rgb = (p[0], p[1], p[2]);
        colours.insert(rgb);
        if rgb != (255, 255, 255) {
            non_white += 1;
        }
    }
    let total = bytes.len() / px;
    assert!(
        non_white * 100 > total * 2,
        "screenshot {} nearly blank: {non_white} of {total} pixels not white",
        png.display()
    );
    assert!(
        colours.len() > 20,
        "screenshot {} has only {} colours",
        png.display(),
        colours.len()
    );
    // Kept for people to look at: target/tmp/report-pgNN.{png,html}.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-pg{major}"));
    let _ = std::fs::copy(&png, keep.with_extension("png"));
    let _ = std::fs::copy(&page, keep.with_extension("html"));
    eprintln!(
        "report screenshot: {}",
        keep.with_extension("png").display()
    );
}

pg_test_matrix!(metrics_describe_the_repository);
