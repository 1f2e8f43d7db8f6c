//! `pitr metrics`: the numbers a monitoring system watches, per cluster, built on the report
//! `pitr info` gathers ([`crate::info`]): the last backup of each type, the last archived
//! segment and its age, the recovery window, gaps, and (with a server) the archiver's counters.
//!
//! Plan, then execute: [`plan`] picks from the info report what needs a further look (the
//! last archived segment, whose archive time the storage knows, and whose WAL holds the last
//! commit time, the end of the recovery window); [`execute`] looks and returns the report.
//! Rendering (Prometheus text) is the CLI's job.

use std::time::SystemTime;

use jiff::Timestamp;
use pitr_pg::{Lsn, TimelineId, WalFileName, WalSegSize};
use pitr_proto::ArchiverStatus;
use pitr_repo::{Repo, RepoResult};
use serde::Serialize;

use crate::info::{ClusterInfo, RepoInfo};
use crate::walscan::{self, names::Namer, Bound, Event, ScanOptions};

/// What [`execute`] will look at, per cluster.
#[derive(Debug, Clone)]
pub struct MetricsPlan {
    /// One entry per cluster.
    pub clusters: Vec<ClusterPlan>,
}

/// The part of the plan for one cluster.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The info report of the cluster.
    pub info: ClusterInfo,
    /// The newest archived segment (highest timeline, then highest segment number).
    pub last_segment: Option<WalFileName>,
    /// The segment size, when the identity is recorded.
    pub seg_size: Option<WalSegSize>,
}

/// The metrics of every cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsReport {
    /// When they were gathered.
    pub at: Timestamp,
    /// Per cluster.
    pub clusters: Vec<ClusterMetrics>,
}

/// The metrics of one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterMetrics {
    /// Cluster name.
    pub cluster: String,
    /// System identifier (a string: it exceeds 2^53).
    pub system_id: Option<String>,
    /// PostgreSQL major version.
    pub pg_major: Option<u32>,
    /// Per backup type (`full`, `incr`), the ones present.
    pub backups: Vec<BackupTypeMetrics>,
    /// The newest archived segment.
    pub last_segment: Option<LastSegment>,
    /// Complete segments archived, all timelines.
    pub wal_segments: u64,
    /// Bytes the archived WAL uses in the repository.
    pub wal_stored_bytes: u64,
    /// Missing runs of segments, all timelines.
    pub gaps: u64,
    /// Missing segments in those runs.
    pub missing_segments: u64,
    /// The recovery window, when something is reachable.
    pub window: Option<WindowMetrics>,
    /// `pg_stat_archiver` of the server given, when one was and answered.
    pub archiver: Option<ArchiverMetrics>,
    /// With a server given: whether it answered.
    pub server_up: Option<bool>,
    /// Where WAL received by `pitr stream` ends (its newest `.partial`), when there is one.
    pub streamed: Option<crate::info::StreamedEnd>,
    /// Backups pinned (`pitr pin`): expire keeps them.
    pub pinned_backups: u64,
    /// The newest restore drill in the repository's history.
    pub last_drill: Option<DrillMetrics>,
}

/// The newest restore drill (`pitr drill`).
#[derive(Debug, Clone, Serialize)]
pub struct DrillMetrics {
    /// When it started.
    pub at: Timestamp,
    /// It passed.
    pub passed: bool,
    /// Restore plus replay: the measured recovery time (RTO), in seconds.
    pub total_seconds: f64,
    /// The backup it restored.
    pub backup: String,
}

/// Backups of one type.
#[derive(Debug, Clone, Serialize)]
pub struct BackupTypeMetrics {
    /// `full` or `incr`.
    pub kind: String,
    /// How many the repository holds.
    pub count: u64,
    /// The newest one's label.
    pub last_label: String,
    /// When it finished.
    pub last_time: Timestamp,
    /// How long it took, in seconds.
    pub last_duration_seconds: f64,
    /// Its original size.
    pub last_size_bytes: u64,
    /// Its size in the repository.
    pub last_stored_bytes: u64,
}

/// The newest archived segment.
#[derive(Debug, Clone, Serialize)]
pub struct LastSegment {
    /// File name.
    pub name: String,
    /// Timeline.
    pub timeline: u32,
    /// The LSN where it ends (the archive reaches this far).
    #[serde(serialize_with = "opt_display")]
    pub end_lsn: Option<Lsn>,
    /// When it was archived (written to the repository), when the storage tells.
    pub archived_at: Option<Timestamp>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
}

/// The recovery window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowMetrics {
    /// The oldest backup it starts from.
    pub start_backup: String,
    /// Its consistency time.
    pub start_time: Timestamp,
    /// Its consistency LSN.
    #[serde(serialize_with = "display")]
    pub start_lsn: Lsn,
    /// End of archived WAL reachable.
    #[serde(serialize_with = "display")]
    pub end_lsn: Lsn,
    /// On this timeline.
    pub end_timeline: u32,
    /// The last commit, restore point or checkpoint time in the last segment (the latest
    /// time a target can name), when it has one.
    pub end_time: Option<Timestamp>,
}

/// `pg_stat_archiver`'s counters.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiverMetrics {
    /// Files archived since the counters were reset.
    pub archived_count: u64,
    /// Failed attempts since then.
    pub failed_count: u64,
    /// The last success.
    pub last_archived_time: Option<Timestamp>,
    /// The last failure.
    pub last_failed_time: Option<Timestamp>,
}

/// Chooses what to look at, from the info report (all clusters, or only `cluster`).
pub fn plan(info: &RepoInfo, cluster: Option<&str>) -> MetricsPlan {
    let clusters = info
        .clusters
        .iter()
        .filter(|c| cluster.is_none_or(|n| n == c.name))
        .map(|c| {
            let seg_size = c
                .identity
                .as_ref()
                .and_then(|i| WalSegSize::new(i.wal_seg_size).ok());
            let last_segment = c
                .timelines
                .iter()
                .filter_map(|t| t.last.as_deref())
                .filter_map(|n| WalFileName::parse(n).ok())
                .max_by_key(|n| (n.timeline(), seg_size.and_then(|s| n.segno(s))));
            ClusterPlan {
                info: c.clone(),
                last_segment,
                seg_size,
            }
        })
        .collect();
    MetricsPlan { clusters }
}

/// Looks at what the plan chose; `server` is, when a server was given, the cluster it belongs
/// to and its `pg_stat_archiver` (`None` when it did not answer: the repository's metrics matter
/// most when the server is down).
pub async fn execute(
    repo: &Repo,
    plan: &MetricsPlan,
    server: Option<(&str, Option<&ArchiverStatus>)>,
) -> RepoResult<MetricsReport> {
    let now = Timestamp::now();
    let mut clusters = Vec::new();
    for p in &plan.clusters {
        let cluster = repo.cluster(&p.info.name)?;
        let last_segment = match &p.last_segment {
            None => None,
            Some(name) => {
                let at = repo
                    .storage()
                    .modified(&cluster.wal_key(name))
                    .await?
                    .and_then(system_time);
                Some(LastSegment {
                    name: name.to_string(),
                    timeline: name.timeline().0,
                    end_lsn: p
                        .seg_size
                        .and_then(|s| name.segno(s).and_then(|n| s.start_of(n.next()))),
                    archived_at: at,
                    age_seconds: at.map(|t| seconds_between(t, now)),
                })
            }
        };
        let window = match &p.info.window {
            Some(crate::restore::choose::Window {
                from: Some(from),
                to: Some(to),
            }) => {
                let end_lsn: Lsn = to.lsn.parse().unwrap_or(Lsn(0));
                let end_time = match p.seg_size {
                    Some(size) => {
                        let seg = WalFileName::segment(
                            TimelineId(to.timeline),
                            size.segno_of(Lsn(end_lsn.0.saturating_sub(1))),
                            size,
                        );
                        last_time_in(&cluster, &seg).await
                    }
                    None => None,
                };
                Some(WindowMetrics {
                    start_backup: from.backup.clone(),
                    start_time: from.time,
                    start_lsn: from.lsn.parse().unwrap_or(Lsn(0)),
                    end_lsn,
                    end_timeline: to.timeline,
                    end_time,
                })
            }
            _ => None,
        };
        let mine = server.filter(|(name, _)| *name == p.info.name);
        let archiver = mine.and_then(|(_, a)| a).map(|a| ArchiverMetrics {
            archived_count: a.archived_count,
            failed_count: a.failed_count,
            last_archived_time: a.last_archived_time.and_then(system_time),
            last_failed_time: a.last_failed_time.and_then(system_time),
        });
        clusters.push(ClusterMetrics {
            cluster: p.info.name.clone(),
            system_id: p.info.identity.as_ref().map(|i| i.system_id.to_string()),
            pg_major: p.info.identity.as_ref().map(|i| i.pg_major),
            backups: backup_metrics(&p.info),
            last_segment,
            wal_segments: p.info.timelines.iter().map(|t| t.segments).sum(),
            wal_stored_bytes: p.info.timelines.iter().map(|t| t.stored_bytes).sum(),
            gaps: p.info.timelines.iter().map(|t| t.gaps.len() as u64).sum(),
            missing_segments: missing_segments(&p.info, p.seg_size),
            window,
            archiver,
            server_up: mine.map(|(_, a)| a.is_some()),
            streamed: p.info.streamed.clone(),
            pinned_backups: p.info.backups.iter().filter(|b| b.pinned).count() as u64,
            last_drill: last_drill(&cluster).await?,
        });
    }
    Ok(MetricsReport { at: now, clusters })
}

/// The newest drill recorded in the cluster's history.
async fn last_drill(cluster: &pitr_repo::ClusterRepo) -> RepoResult<Option<DrillMetrics>> {
    let history: Vec<crate::history::HistoryRecord> = cluster.history().await?;
    Ok(history
        .into_iter()
        .filter(|r| r.kind == "drill")
        .filter_map(|r| {
            Some(DrillMetrics {
                at: r.at.parse().ok()?,
                passed: r.outcome == "passed",
                total_seconds: r.total_seconds,
                backup: r.backup,
            })
        })
        .max_by_key(|d| d.at))
}

fn backup_metrics(info: &ClusterInfo) -> Vec<BackupTypeMetrics> {
    let mut out: Vec<BackupTypeMetrics> = Vec::new();
    for kind in ["full", "incr"] {
        let mine: Vec<_> = info.backups.iter().filter(|b| b.kind == kind).collect();
        let newest = mine
            .iter()
            .filter_map(|b| Some((b.stop_time.parse::<Timestamp>().ok()?, b)))
            .max_by_key(|(t, _)| *t);
        let Some((stop, b)) = newest else { continue };
        let start = b.start_time.parse::<Timestamp>().unwrap_or(stop);
        out.push(BackupTypeMetrics {
            kind: kind.to_string(),
            count: mine.len() as u64,
            last_label: b.label.clone(),
            last_time: stop,
            last_duration_seconds: seconds_between(start, stop),
            last_size_bytes: b.size,
            last_stored_bytes: b.stored_size,
        });
    }
    out
}

fn missing_segments(info: &ClusterInfo, seg_size: Option<WalSegSize>) -> u64 {
    let Some(size) = seg_size else { return 0 };
    let segno = |n: &str| WalFileName::parse(n).ok().and_then(|f| f.segno(size));
    info.timelines
        .iter()
        .flat_map(|t| &t.gaps)
        .filter_map(|[a, b]| Some(segno(b)?.0.saturating_sub(segno(a)?.0) + 1))
        .sum()
}

/// The time of the last record that carries one (commit, abort, restore point, checkpoint)
/// in `segment`; `None` when it has none or cannot be read.
pub async fn last_time_in(
    cluster: &pitr_repo::ClusterRepo,
    segment: &WalFileName,
) -> Option<Timestamp> {
    let opts = ScanOptions {
        from: Some(Bound::Segment(*segment)),
        to: Some(Bound::Segment(*segment)),
        timeline: Some(segment.timeline()),
        incidents_only: None,
    };
    let plan = walscan::plan(cluster, &opts).await.ok()?;
    let mut namer = Namer::new(cluster, &plan, None).await;
    let mut last: Option<Timestamp> = None;
    walscan::scan(cluster, &plan, &opts, &mut namer, |e| {
        let t = match &e {
            Event::Transaction(t) => &t.time,
            Event::RestorePoint(r) => &r.time,
            Event::Checkpoint(c) => &c.time,
        };
        if let Ok(t) = t.parse::<Timestamp>() {
            last = Some(last.map_or(t, |l| l.max(t)));
        }
    })
    .await
    .ok()?;
    last
}

fn system_time(t: SystemTime) -> Option<Timestamp> {
    Timestamp::try_from(t).ok()
}

fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.as_microsecond() - a.as_microsecond()) as f64 / 1e6
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}
