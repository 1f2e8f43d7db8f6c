//! `pitr report`: what a picture of the recovery window needs, per cluster: the backups and the
//! window of `pitr info` ([`crate::info`]), the archived WAL of each timeline as runs of
//! consecutive segments with the times the WAL itself carries (commits, restore points,
//! checkpoints), the gaps between them, where each timeline branched, restore points, and with
//! `incidents` the transactions `pitr wal incidents` flags.
//!
//! Plan, then execute: [`plan`] cuts each timeline's archived segments into runs from the info
//! report; [`execute`] decodes each run once (times, restore points) and reads the history
//! files. A run that cannot be decoded keeps its LSNs and gets a warning, not an error: the
//! page should still show what is there. Rendering (HTML, SVG) is the CLI's job.

use jiff::Timestamp;
use pitr_pg::{Lsn, SegNo, TimelineHistory, TimelineId, WalFileName, WalSegSize};
use pitr_repo::{ClusterRepo, Repo, RepoResult};
use serde::Serialize;

use crate::info::{BackupInfo, ClusterInfo};
use crate::restore::choose::Window;
use crate::walscan::{self, names::Namer, Bound, CommandContext, Event, Incident, ScanOptions};

/// What [`execute`] decodes.
#[derive(Debug, Clone)]
pub struct ReportPlan {
    /// The info report of the cluster.
    pub info: ClusterInfo,
    /// Segment size.
    pub seg_size: WalSegSize,
    /// Runs of consecutive archived segments, per timeline.
    pub runs: Vec<(TimelineId, SegNo, SegNo)>,
    /// With incidents: the row threshold (`pitr wal incidents --threshold`).
    pub incidents: Option<u64>,
}

/// The picture's data for one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// Cluster name.
    pub cluster: String,
    /// System identifier (a string: it exceeds 2^53).
    pub system_id: String,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// When the report was made.
    pub generated_at: Timestamp,
    /// Base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The recovery window.
    pub window: Option<Window>,
    /// Archived WAL per timeline.
    pub timelines: Vec<TimelineCoverage>,
    /// Restore points found in the WAL.
    pub restore_points: Vec<RestorePoint>,
    /// Incidents (with `incidents`).
    pub incidents: Vec<Incident>,
    /// What could not be read.
    pub warnings: Vec<String>,
}

/// The archived WAL of one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineCoverage {
    /// Timeline.
    pub timeline: u32,
    /// The timeline it branched from, and where (from its history file).
    pub parent: Option<u32>,
    /// The branch LSN.
    pub branch_lsn: Option<String>,
    /// Runs of consecutive archived segments.
    pub runs: Vec<WalRun>,
    /// Missing runs of segments between them.
    pub gaps: Vec<WalRun>,
}

/// A run of segments (archived, or missing for a gap).
#[derive(Debug, Clone, Serialize)]
pub struct WalRun {
    /// First segment.
    pub first: String,
    /// Last segment.
    pub last: String,
    /// Start LSN of the first segment.
    pub start_lsn: String,
    /// End LSN of the last segment.
    pub end_lsn: String,
    /// Earliest time found in the WAL of the run (for a gap: the end of the run before it).
    pub start_time: Option<Timestamp>,
    /// Latest time found (for a gap: the start of the run after it).
    pub end_time: Option<Timestamp>,
}

/// A named restore point (`pg_create_restore_point`).
#[derive(Debug, Clone, Serialize)]
pub struct RestorePoint {
    /// Name.
    pub name: String,
    /// Its LSN.
    pub lsn: String,
    /// Its time.
    pub time: Option<Timestamp>,
    /// Timeline of the WAL it was found in.
    pub timeline: u32,
}

/// The plan for `cluster` in the info report; `None` when it has no identity yet (nothing
/// archived).
pub fn plan(info: &ClusterInfo, incidents: Option<u64>) -> Option<ReportPlan> {
    let seg_size = WalSegSize::new(info.identity.as_ref()?.wal_seg_size).ok()?;
    let mut runs = Vec::new();
    for t in &info.timelines {
        let segno = |n: &Option<String>| {
            n.as_deref()
                .and_then(|n| WalFileName::parse(n).ok())
                .and_then(|f| f.segno(seg_size))
        };
        let (Some(first), Some(last)) = (segno(&t.first), segno(&t.last)) else {
            continue;
        };
        let tli = TimelineId(t.timeline);
        let mut start = first;
        for [a, b] in &t.gaps {
            let (Some(a), Some(b)) = (segno(&Some(a.clone())), segno(&Some(b.clone()))) else {
                continue;
            };
            runs.push((tli, start, SegNo(a.0.saturating_sub(1))));
            start = b.next();
        }
        runs.push((tli, start, last));
    }
    Some(ReportPlan {
        info: info.clone(),
        seg_size,
        runs,
        incidents,
    })
}

/// Decodes the runs, reads the histories and (with incidents) scans for incidents.
pub async fn execute(repo: &Repo, plan: &ReportPlan) -> RepoResult<WindowReport> {
    let cluster = repo.cluster(&plan.info.name)?;
    let size = plan.seg_size;
    let mut warnings = Vec::new();
    let mut restore_points: Vec<RestorePoint> = Vec::new();
    let mut timelines: Vec<TimelineCoverage> = Vec::new();
    for &(tli, a, b) in &plan.runs {
        let first = WalFileName::segment(tli, a, size);
        let last = WalFileName::segment(tli, b, size);
        let (times, points) = match decode_run(&cluster, &first, &last).await {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("WAL {first}..{last}: {e}"));
                ((None, None), Vec::new())
            }
        };
        for p in points {
            if !restore_points
                .iter()
                .any(|q| q.name == p.name && q.lsn == p.lsn)
            {
                restore_points.push(p);
            }
        }
        let run = WalRun {
            first: first.to_string(),
            last: last.to_string(),
            start_lsn: lsn_at(size, a),
            end_lsn: lsn_at(size, b.next()),
            start_time: times.0,
            end_time: times.1,
        };
        match timelines.iter_mut().find(|t| t.timeline == tli.0) {
            Some(t) => {
                let prev = t.runs.last().cloned();
                if let Some(prev) = prev {
                    t.gaps.push(WalRun {
                        first: WalFileName::segment(tli, seg(&prev.last, size).next(), size)
                            .to_string(),
                        last: WalFileName::segment(tli, SegNo(a.0.saturating_sub(1)), size)
                            .to_string(),
                        start_lsn: prev.end_lsn.clone(),
                        end_lsn: run.start_lsn.clone(),
                        start_time: prev.end_time,
                        end_time: run.start_time,
                    });
                }
                t.runs.push(run);
            }
            None => {
                let (parent, branch_lsn) = branch(&cluster, tli).await;
                timelines.push(TimelineCoverage {
                    timeline: tli.0,
                    parent: parent.map(|p| p.0),
                    branch_lsn: branch_lsn.map(|l| l.to_string()),
                    runs: vec![run],
                    gaps: Vec::new(),
                });
            }
        }
    }
    restore_points.sort_by_key(|a| a.time);
    let incidents = match plan.incidents {
        None => Vec::new(),
        Some(threshold) => match find_incidents(&cluster, threshold).await {
            Ok(i) => i,
            Err(e) => {
                warnings.push(format!("incidents: {e}"));
                Vec::new()
            }
        },
    };
    let id = plan.info.identity.as_ref();
    Ok(WindowReport {
        cluster: plan.info.name.clone(),
        system_id: id.map(|i| i.system_id.to_string()).unwrap_or_default(),
        pg_major: id.map(|i| i.pg_major).unwrap_or_default(),
        generated_at: Timestamp::now(),
        backups: plan.info.backups.clone(),
        window: plan.info.window.clone(),
        timelines,
        restore_points,
        incidents,
        warnings,
    })
}

fn seg(name: &str, size: WalSegSize) -> SegNo {
    WalFileName::parse(name)
        .ok()
        .and_then(|f| f.segno(size))
        .unwrap_or(SegNo(0))
}

fn lsn_at(size: WalSegSize, n: SegNo) -> String {
    size.start_of(n).map(|l| l.to_string()).unwrap_or_default()
}

type RunTimes = (Option<Timestamp>, Option<Timestamp>);

/// The earliest and latest times in the WAL of `first..=last`, and its restore points.
async fn decode_run(
    cluster: &ClusterRepo,
    first: &WalFileName,
    last: &WalFileName,
) -> Result<(RunTimes, Vec<RestorePoint>), walscan::WalScanError> {
    let opts = ScanOptions {
        from: Some(Bound::Segment(*first)),
        to: Some(Bound::Segment(*last)),
        timeline: Some(first.timeline()),
        incidents_only: None,
    };
    let plan = walscan::plan(cluster, &opts).await?;
    let mut namer = Namer::new(cluster, &plan, None).await;
    let (mut lo, mut hi): RunTimes = (None, None);
    let mut points = Vec::new();
    let tli = first.timeline().0;
    walscan::scan(cluster, &plan, &opts, &mut namer, |e| {
        let time = match &e {
            Event::Transaction(t) => &t.time,
            Event::RestorePoint(r) => &r.time,
            Event::Checkpoint(c) => &c.time,
        };
        let t = time.parse::<Timestamp>().ok();
        if let Some(t) = t {
            lo = Some(lo.map_or(t, |l| l.min(t)));
            hi = Some(hi.map_or(t, |h| h.max(t)));
        }
        if let Event::RestorePoint(r) = e {
            points.push(RestorePoint {
                name: r.name,
                lsn: r.lsn.to_string(),
                time: t,
                timeline: tli,
            });
        }
    })
    .await?;
    Ok(((lo, hi), points))
}

/// Where `tli` branched: its parent and the switch LSN, from its history file.
async fn branch(cluster: &ClusterRepo, tli: TimelineId) -> (Option<TimelineId>, Option<Lsn>) {
    if tli.0 <= 1 {
        return (None, None);
    }
    let Ok(Some(bytes)) = cluster.get_wal(&WalFileName::History { tli }).await else {
        return (None, None);
    };
    match TimelineHistory::parse(tli, &bytes) {
        Ok(h) => match h.entries.last() {
            Some(e) => (Some(e.parent), Some(e.switchpoint)),
            None => (None, None),
        },
        Err(_) => (None, None),
    }
}

/// The incidents along the newest timeline, as `pitr wal incidents` finds them.
async fn find_incidents(
    cluster: &ClusterRepo,
    threshold: u64,
) -> Result<Vec<Incident>, walscan::WalScanError> {
    let opts = ScanOptions {
        incidents_only: Some(threshold),
        ..Default::default()
    };
    let plan = walscan::plan(cluster, &opts).await?;
    let mut namer = Namer::new(cluster, &plan, None).await;
    let log = walscan::log(cluster, &plan, &opts, &mut namer).await?;
    let ctx = CommandContext {
        program: "pitr".into(),
        repo: cluster.repo().location(),
        cluster: Some(cluster.name().to_string()).filter(|c| c != "main"),
        extra: Vec::new(),
    };
    Ok(walscan::incidents(log, threshold, &ctx).incidents)
}
