//! `pitr metrics [--listen ADDR]`: the metrics report ([`pitr_core::metrics`]) in Prometheus'
//! text exposition (OpenMetrics, which node_exporter's textfile collector and Prometheus read),
//! printed once, or served at `/metrics` by a small HTTP/1.1 server on tokio (a scrape every
//! few seconds needs nothing more; no HTTP framework).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use jiff::Timestamp;
use pitr_core::metrics::{ClusterMetrics, MetricsReport};
use pitr_core::{info, metrics};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{conn_params, open_repo, print_json, DEFAULT_CLUSTER};
use crate::cli::{GlobalArgs, MetricsArgs};
use crate::error::CliError;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn run(g: &GlobalArgs, a: MetricsArgs) -> Result<u8, CliError> {
    match a.listen {
        None => {
            let report = gather(g).await?;
            if g.json {
                print_json(&report);
            } else {
                out!("{}", render(&report));
            }
            Ok(0)
        }
        Some(addr) => serve(g, &addr).await,
    }
}

/// Builds the report: the info report, the plan, then its execution (with the server's
/// `pg_stat_archiver` when `-h`/`-p` name one).
async fn gather(g: &GlobalArgs) -> Result<MetricsReport, CliError> {
    let repo = open_repo(g).await?;
    let report = info::info(&repo).await?;
    let plan = metrics::plan(&report, g.cluster.as_deref());
    let given = g.host.is_some() || g.port.is_some();
    let archiver = if given {
        let status = async {
            pitr_proto::connect(&conn_params(g))
                .await?
                .archiver_status()
                .await
        };
        match status.await {
            Ok(a) => Some(a),
            Err(e) => {
                // The repository's metrics matter most when the server is down: report it.
                tracing::warn!("metrics: the server did not answer: {e}");
                eprintln!("pitr: warning: no archiver metrics: {e}");
                None
            }
        }
    } else {
        None
    };
    let cluster = g.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
    let server = given.then_some((cluster, archiver.as_ref()));
    Ok(metrics::execute(&repo, &plan, server).await?)
}

type Labels = Vec<(String, String)>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;

/// The metric families, registered once per rendering.
struct Families {
    info: FGauge,
    backups: FGauge,
    backup_time: FGauge,
    backup_duration: FGauge,
    backup_size: FGauge,
    backup_stored: FGauge,
    wal_segments: FGauge,
    wal_stored: FGauge,
    last_lsn: FGauge,
    last_time: FGauge,
    last_age: FGauge,
    stream_lsn: FGauge,
    stream_age: FGauge,
    gaps: FGauge,
    missing: FGauge,
    win_start_time: FGauge,
    win_start_lsn: FGauge,
    win_end_time: FGauge,
    win_end_lsn: FGauge,
    win_length: FGauge,
    pinned: FGauge,
    drill_time: FGauge,
    drill_success: FGauge,
    drill_rto: FGauge,
    archived: Family<Labels, Counter<u64>>,
    failed: Family<Labels, Counter<u64>>,
    last_failed: FGauge,
    last_archived: FGauge,
    server_up: FGauge,
}

impl Families {
    /// Registers the families; the archiver's only `with_archiver` (a server was given).
    fn register(r: &mut Registry, with_archiver: bool) -> Families {
        let mut g = |name: &str, help: &str, unit: Option<Unit>| {
            let f = FGauge::default();
            match unit {
                Some(u) => r.register_with_unit(name, help, u, f.clone()),
                None => r.register(name, help, f.clone()),
            }
            f
        };
        let s = Some(Unit::Seconds);
        let b = Some(Unit::Bytes);
        let f = Families {
            info: g("cluster_info", "The cluster in the repository (value 1)", None),
            backups: g("backups", "Base backups in the repository, per type", None),
            backup_time: g("backup_last_time", "When the newest backup of the type finished (Unix time)", s.clone()),
            backup_duration: g("backup_last_duration", "How long the newest backup of the type took", s.clone()),
            backup_size: g("backup_last_size", "Original size of the newest backup of the type", b.clone()),
            backup_stored: g("backup_last_stored", "Repository size of the newest backup of the type", b.clone()),
            wal_segments: g("wal_segments", "Complete WAL segments archived, all timelines", None),
            wal_stored: g("wal_stored", "Repository size of the archived WAL", b.clone()),
            last_lsn: g("wal_last_archived_lsn", "End LSN of the newest archived segment, as a byte position", b.clone()),
            last_time: g("wal_last_archived_time", "When the newest segment was archived (Unix time)", s.clone()),
            last_age: g("wal_last_archived_age", "Seconds since the newest segment was archived", s.clone()),
            stream_lsn: g("stream_end_lsn", "End of the WAL pitr stream keeps in the repository (its newest .partial), as a byte position", b.clone()),
            stream_age: g("stream_partial_age", "Seconds since pitr stream last wrote its newest .partial (grows while the stream is stalled or the server idle)", s.clone()),
            gaps: g("wal_gaps", "Missing runs of WAL segments between the first and last archived, all timelines", None),
            missing: g("wal_missing_segments", "WAL segments missing in those runs", None),
            win_start_time: g("recovery_window_start_time", "Earliest time recovery can reach: the oldest usable backup's consistency time (Unix time)", s.clone()),
            win_start_lsn: g("recovery_window_start_lsn", "Earliest LSN recovery can reach, as a byte position", b.clone()),
            win_end_time: g("recovery_window_end_time", "Latest commit, restore point or checkpoint time in the archived WAL recovery reaches (Unix time)", s.clone()),
            win_end_lsn: g("recovery_window_end_lsn", "End of archived WAL recovery reaches, as a byte position", b.clone()),
            win_length: g("recovery_window_length", "Length of the recovery window", s.clone()),
            pinned: g("backups_pinned", "Base backups pinned (pitr pin): expire keeps them", None),
            drill_time: g("drill_last_time", "When the newest restore drill started (Unix time)", s.clone()),
            drill_success: g("drill_last_success", "Whether the newest restore drill passed (1) or failed (0)", None),
            drill_rto: g("drill_last_rto", "Measured recovery time (restore plus replay) of the newest restore drill", s),
            last_failed: FGauge::default(),
            last_archived: FGauge::default(),
            server_up: FGauge::default(),
            archived: Family::default(),
            failed: Family::default(),
        };
        if !with_archiver {
            return f;
        }
        r.register(
            "server_up",
            "Whether the server given with -h/-p answered (1) or not (0)",
            f.server_up.clone(),
        );
        r.register_with_unit(
            "archiver_last_failed_time",
            "pg_stat_archiver.last_failed_time of the server given (Unix time)",
            Unit::Seconds,
            f.last_failed.clone(),
        );
        r.register_with_unit(
            "archiver_last_archived_time",
            "pg_stat_archiver.last_archived_time of the server given (Unix time)",
            Unit::Seconds,
            f.last_archived.clone(),
        );
        r.register(
            "archiver_archived",
            "pg_stat_archiver.archived_count of the server given",
            f.archived.clone(),
        );
        r.register(
            "archiver_failed",
            "pg_stat_archiver.failed_count of the server given",
            f.failed.clone(),
        );
        f
    }
}

fn labels(c: &ClusterMetrics, extra: &[(&str, String)]) -> Labels {
    let mut l = vec![("cluster".to_string(), c.cluster.clone())];
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    l
}

fn unix(t: Timestamp) -> f64 {
    t.as_microsecond() as f64 / 1e6
}

/// The report in the text exposition format.
pub fn render(report: &MetricsReport) -> String {
    let mut registry = Registry::with_prefix("pitr");
    let with_archiver = report.clusters.iter().any(|c| c.server_up.is_some());
    let f = Families::register(&mut registry, with_archiver);
    for c in &report.clusters {
        let l = labels(c, &[]);
        let set = |fam: &FGauge, l: &Labels, v: f64| {
            fam.get_or_create(l).set(v);
        };
        set(
            &f.info,
            &labels(
                c,
                &[
                    ("system_id", c.system_id.clone().unwrap_or_default()),
                    (
                        "pg_major",
                        c.pg_major.map(|m| m.to_string()).unwrap_or_default(),
                    ),
                ],
            ),
            1.0,
        );
        for kind in ["full", "incr"] {
            let lt = labels(c, &[("type", kind.to_string())]);
            match c.backups.iter().find(|b| b.kind == kind) {
                None => set(&f.backups, &lt, 0.0),
                Some(b) => {
                    set(&f.backups, &lt, b.count as f64);
                    set(&f.backup_time, &lt, unix(b.last_time));
                    set(&f.backup_duration, &lt, b.last_duration_seconds);
                    set(&f.backup_size, &lt, b.last_size_bytes as f64);
                    set(&f.backup_stored, &lt, b.last_stored_bytes as f64);
                }
            }
        }
        set(&f.wal_segments, &l, c.wal_segments as f64);
        set(&f.wal_stored, &l, c.wal_stored_bytes as f64);
        set(&f.gaps, &l, c.gaps as f64);
        set(&f.missing, &l, c.missing_segments as f64);
        if let Some(s) = &c.last_segment {
            let ls = labels(c, &[("timeline", s.timeline.to_string())]);
            if let Some(lsn) = s.end_lsn {
                set(&f.last_lsn, &ls, lsn.0 as f64);
            }
            if let Some(t) = s.archived_at {
                set(&f.last_time, &ls, unix(t));
            }
            if let Some(a) = s.age_seconds {
                set(&f.last_age, &ls, a);
            }
        }
        if let Some(st) = &c.streamed {
            let ls = labels(c, &[("timeline", st.timeline.to_string())]);
            if let Ok(lsn) = st.end_lsn.parse::<pitr_pg::Lsn>() {
                set(&f.stream_lsn, &ls, lsn.0 as f64);
            }
            if let Some(a) = st.age_seconds {
                set(&f.stream_age, &ls, a);
            }
        }
        if let Some(w) = &c.window {
            set(&f.win_start_time, &l, unix(w.start_time));
            set(&f.win_start_lsn, &l, w.start_lsn.0 as f64);
            let le = labels(c, &[("timeline", w.end_timeline.to_string())]);
            set(&f.win_end_lsn, &le, w.end_lsn.0 as f64);
            if let Some(t) = w.end_time {
                set(&f.win_end_time, &le, unix(t));
                set(&f.win_length, &l, unix(t) - unix(w.start_time));
            }
        }
        set(&f.pinned, &l, c.pinned_backups as f64);
        if let Some(d) = &c.last_drill {
            set(&f.drill_time, &l, unix(d.at));
            set(&f.drill_success, &l, if d.passed { 1.0 } else { 0.0 });
            set(&f.drill_rto, &l, d.total_seconds);
        }
        if let Some(up) = c.server_up {
            set(&f.server_up, &l, if up { 1.0 } else { 0.0 });
        }
        if let Some(a) = &c.archiver {
            f.archived.get_or_create(&l).inc_by(a.archived_count);
            f.failed.get_or_create(&l).inc_by(a.failed_count);
            if let Some(t) = a.last_failed_time {
                set(&f.last_failed, &l, unix(t));
            }
            if let Some(t) = a.last_archived_time {
                set(&f.last_archived, &l, unix(t));
            }
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// Serves `/metrics` on `addr` until killed; each scrape gathers afresh.
async fn serve(g: &GlobalArgs, addr: &str) -> Result<u8, CliError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::Usage(format!(
            "cannot listen on {addr:?}: {e}\nhint: give a free HOST:PORT, e.g. --listen 127.0.0.1:9187"
        ))
    })?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.into());
    eprintln!("pitr: serving metrics on http://{local}/metrics");
    loop {
        let (mut sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept on {local}: {e}");
                continue;
            }
        };
        // One scrape at a time: each reads the repository, and scrapes are seconds apart.
        let path =
            match tokio::time::timeout(Duration::from_secs(10), read_request(&mut sock)).await {
                Ok(Some(p)) => p,
                _ => {
                    tracing::debug!("bad or slow request from {peer}");
                    continue;
                }
            };
        let (status, ctype, body) = match path.as_str() {
            "/metrics" => match gather(g).await {
                Ok(r) => ("200 OK", CONTENT_TYPE, render(&r)),
                Err(e) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    format!("pitr: error: {e}\n"),
                ),
            },
            "/" => (
                "200 OK",
                "text/html; charset=utf-8",
                "<html><body><a href=\"/metrics\">metrics</a></body></html>\n".into(),
            ),
            _ => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found: try /metrics\n".into(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if let Err(e) = async {
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
            sock.shutdown().await
        }
        .await
        {
            tracing::debug!("writing to {peer}: {e}");
        }
    }
}

/// Reads a request's head; returns the path of a GET (query string dropped).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next()?.split_whitespace();
    let (method, target) = (words.next()?, words.next()?);
    if method != "GET" {
        return None;
    }
    Some(target.split('?').next().unwrap_or(target).to_string())
}
