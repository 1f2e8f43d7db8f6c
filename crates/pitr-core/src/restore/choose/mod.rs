//! Which base backup can reach the recovery target: pure functions over manifests, timeline
//! histories and the list of archived WAL, so every rule is unit-tested without a repository.
//!
//! A backup taken on timeline `T` reaches a point on timeline `U` only if `T` is `U` or one of
//! its ancestors and the backup was complete (its stop LSN) before `U`'s history left `T`. The
//! archived WAL must then be continuous along that path: from the backup's start segment,
//! through every timeline switch (the segment holding a switchpoint is read from the newer
//! timeline, as PostgreSQL does), up to the segment holding the target — or to the end of the
//! archived WAL when the target has no position (time, end of WAL). A name or xid target is
//! first located per backup by decoding the archived WAL ([`super::locate`]) and then treated
//! like an LSN.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use jiff::Timestamp;
use pitr_pg::{Lsn, SegNo, TimelineHistory, TimelineId, WalFileName, WalSegSize};
use pitr_repo::BackupManifest;
use serde::Serialize;

use super::target::{RecoveryTarget, TargetSpec};

mod branch;
mod reach;
mod window;

pub use branch::{branch_warnings, BranchWarning};
pub use reach::{newest_first, reach, reach_from, resolve_timeline, timeline_path};
pub use window::{recovery_window, Window, WindowEnd, WindowStart};

use reach::{evaluate, Whereabouts};
use window::window;

/// The archived WAL as far as backup choice cares: complete segments per timeline and the
/// timeline histories.
#[derive(Debug, Clone)]
pub struct WalIndex {
    seg_size: WalSegSize,
    segments: BTreeMap<TimelineId, BTreeSet<SegNo>>,
    histories: BTreeMap<TimelineId, TimelineHistory>,
}

impl WalIndex {
    /// An empty index for segments of `seg_size`.
    pub fn new(seg_size: WalSegSize) -> WalIndex {
        WalIndex {
            seg_size,
            segments: BTreeMap::new(),
            histories: BTreeMap::new(),
        }
    }

    /// Segment size.
    pub fn seg_size(&self) -> WalSegSize {
        self.seg_size
    }

    /// Records an archived file (segments only; history files go through
    /// [`WalIndex::add_history`], partial and backup history files are not replayed).
    pub fn add_file(&mut self, name: &WalFileName) {
        if let WalFileName::Segment { tli, .. } = name {
            if let Some(segno) = name.segno(self.seg_size) {
                self.segments.entry(*tli).or_default().insert(segno);
            }
        }
    }

    /// Records an archived segment.
    pub fn add_segment(&mut self, tli: TimelineId, segno: SegNo) {
        self.segments.entry(tli).or_default().insert(segno);
    }

    /// Records an archived timeline history.
    pub fn add_history(&mut self, h: TimelineHistory) {
        self.histories.insert(h.timeline, h);
    }

    fn has(&self, tli: TimelineId, segno: SegNo) -> bool {
        self.segments.get(&tli).is_some_and(|s| s.contains(&segno))
    }

    /// True when segment `segno` of timeline `tli` is archived.
    pub fn has_segment(&self, tli: TimelineId, segno: SegNo) -> bool {
        self.has(tli, segno)
    }

    /// The history of `tli`: timeline 1 needs no file; others must be archived.
    pub fn history(&self, tli: TimelineId) -> Option<TimelineHistory> {
        match self.histories.get(&tli) {
            Some(h) => Some(h.clone()),
            None if tli == TimelineId(1) => Some(TimelineHistory::root(tli)),
            None => None,
        }
    }

    /// What `recovery_target_timeline = 'latest'` finds when recovery starts on `start`:
    /// PostgreSQL probes `start+1`, `start+2`, … and keeps the last history file that exists.
    pub fn latest_from(&self, start: TimelineId) -> TimelineId {
        let mut tli = start;
        while let Some(next) = tli.0.checked_add(1) {
            if !self.histories.contains_key(&TimelineId(next)) {
                break;
            }
            tli = TimelineId(next);
        }
        tli
    }

    /// Every timeline with archived segments or a history.
    pub fn timelines(&self) -> BTreeSet<TimelineId> {
        self.segments
            .keys()
            .chain(self.histories.keys())
            .copied()
            .collect()
    }
}

/// The facts about a backup that choice needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPoint {
    /// Label.
    pub label: String,
    /// Timeline the backup was taken on.
    pub tli: TimelineId,
    /// Start LSN (WAL is needed from here).
    pub start: Lsn,
    /// Consistency LSN (recovery cannot stop before).
    pub stop: Lsn,
    /// Wall-clock start.
    pub start_time: Timestamp,
    /// Wall-clock stop.
    pub stop_time: Timestamp,
}

impl BackupPoint {
    /// From a manifest.
    pub fn of(m: &BackupManifest) -> BackupPoint {
        BackupPoint {
            label: m.label.clone(),
            tli: m.tli(),
            start: m.start(),
            stop: m.stop(),
            start_time: m.start_time,
            stop_time: m.stop_time,
        }
    }
}

/// Where a name/xid target is, found by decoding the archived WAL along a backup's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LocatedTarget {
    /// LSN of the record that is the target (commit, abort or restore point).
    #[serde(serialize_with = "super::ser_display")]
    pub lsn: Lsn,
    /// Timeline that record is on.
    #[serde(serialize_with = "ser_tli")]
    pub tli: TimelineId,
    /// Its time, when the record carries one.
    pub time: Option<Timestamp>,
}

/// One stretch of the timeline path a recovery replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStep {
    /// Timeline.
    #[serde(serialize_with = "ser_tli")]
    pub tli: TimelineId,
    /// First LSN replayed on it.
    #[serde(serialize_with = "super::ser_display")]
    pub from: Lsn,
    /// Where the path leaves it (switchpoint), `None` for the target timeline.
    #[serde(serialize_with = "super::ser_opt_display")]
    pub until: Option<Lsn>,
}

/// How far archived WAL is continuous from a backup along a timeline path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The target timeline.
    pub target_tli: TimelineId,
    /// The path, from the backup's timeline to the target timeline.
    pub path: Vec<PathStep>,
    /// First LSN that is not available (the start of the first missing segment).
    pub end: Lsn,
    /// Timeline `end` is on.
    pub end_tli: TimelineId,
    /// The first segment needed but missing, when a gap (not the end of the archive) stops it.
    pub gap: Option<String>,
    /// The first segment needed.
    pub first_segment: String,
    /// The last segment available on the path.
    pub last_segment: Option<String>,
}

impl Reach {
    /// True when the WAL is continuous up to the last archived segment of the target timeline.
    pub fn to_end(&self) -> bool {
        self.gap.is_none()
    }
}

/// Why a backup cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Backup label.
    pub label: String,
    /// Why.
    pub reason: String,
}

/// The chosen backup and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// Label of the backup to restore.
    pub label: String,
    /// The timeline recovery will end on (what `recovery_target_timeline` resolves to).
    #[serde(serialize_with = "ser_tli")]
    pub target_tli: TimelineId,
    /// The timeline path replayed.
    pub path: Vec<PathStep>,
    /// First WAL segment recovery needs.
    pub first_segment: String,
    /// Last WAL segment recovery may need (the end of continuous archived WAL).
    pub last_segment: Option<String>,
    /// End of continuously archived WAL on the path.
    #[serde(serialize_with = "super::ser_display")]
    pub wal_end: Lsn,
    /// Why this backup (one sentence).
    pub reason: String,
    /// Caveats worth telling the user.
    pub notes: Vec<String>,
    /// Newer backups that were passed over, and why.
    pub rejected: Vec<Rejection>,
}

/// A target the repository cannot reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{summary}; {window}{}", details(.rejected))]
pub struct Unreachable {
    /// The target, described.
    pub target: String,
    /// What is wrong, one sentence.
    pub summary: String,
    /// The reachable window.
    pub window: Window,
    /// Every backup considered, and why it was rejected.
    pub rejected: Vec<Rejection>,
}

fn details(rejected: &[Rejection]) -> String {
    let mut s = String::new();
    for r in rejected.iter().take(12) {
        let _ = write!(s, "\n  backup {}: {}", r.label, r.reason);
    }
    if rejected.len() > 12 {
        let _ = write!(s, "\n  … and {} more", rejected.len() - 12);
    }
    s
}

/// Timestamps in messages: UTC, microseconds (PostgreSQL's precision), PostgreSQL-like.
pub fn show_time(t: Timestamp) -> String {
    let t = t.round(jiff::Unit::Microsecond).unwrap_or(t);
    jiff::fmt::strtime::format(
        "%Y-%m-%d %H:%M:%S%.f+00",
        &t.to_zoned(jiff::tz::TimeZone::UTC),
    )
    .unwrap_or_else(|_| t.to_string())
}

pub(super) fn located_what(t: &RecoveryTarget) -> &'static str {
    match t {
        RecoveryTarget::Name(_) => "restore point",
        _ => "transaction",
    }
}

/// Chooses the backup to restore for `spec`: the newest that can reach the target.
///
/// A name/xid target is placed per backup by `located` (label → the first matching record
/// after that backup's start on its timeline path, see [`super::locate`]); a backup missing
/// from the map has no such record and is passed over. Without `located` its position is
/// unknown and the oldest backup with continuous WAL to the end of the archive is taken (it can
/// reach anything after it). `forced` limits the choice to one label, validated the same way.
pub fn choose_backup(
    backups: &[BackupPoint],
    wal: &WalIndex,
    spec: &TargetSpec,
    located: Option<&BTreeMap<String, LocatedTarget>>,
    forced: Option<&str>,
) -> Result<Choice, Unreachable> {
    let mut order = newest_first(backups);
    let mut sorted = order.clone();
    sorted.reverse();
    let needs_locating = spec.target.needs_locating();
    let oldest_first = needs_locating && located.is_none();
    if oldest_first {
        order.reverse();
    }
    let whereabouts = |b: &BackupPoint| match located {
        Some(m) if needs_locating => m
            .get(&b.label)
            .map_or(Whereabouts::NotFound, Whereabouts::Found),
        _ => Whereabouts::Unknown,
    };
    let mut rejected = Vec::new();
    let mut reaches = BTreeMap::new();
    for b in &order {
        if forced.is_some_and(|f| f != b.label) {
            continue;
        }
        let (verdict, r) = evaluate(b, spec, whereabouts(b), wal);
        if let Some(r) = r {
            reaches.insert(b.label.clone(), r);
        }
        match verdict {
            Ok(r) => {
                let reason = if forced.is_some() {
                    format!(
                        "backup {} was asked for (--backup) and can reach the target",
                        b.label
                    )
                } else if oldest_first {
                    format!(
                        "the {} is not located in the WAL, so the oldest backup whose archived WAL continues to the end is used: it can reach any point after it",
                        located_what(&spec.target)
                    )
                } else if rejected.is_empty() {
                    "the newest backup that can reach the target".to_string()
                } else {
                    format!(
                        "the newest backup that can reach the target ({} newer one{} cannot)",
                        rejected.len(),
                        if rejected.len() == 1 { "" } else { "s" }
                    )
                };
                let mut notes = Vec::new();
                if oldest_first {
                    notes.push(
                        "recovery replays every transaction from this backup on until the target: the target must be after it, or PostgreSQL stops with \"recovery ended before configured recovery target was reached\"".to_string(),
                    );
                }
                if let RecoveryTarget::Time(_) = spec.target {
                    if located.is_none() {
                        notes.push("PostgreSQL stops just before the first transaction that ends after the target time".to_string());
                    }
                }
                return Ok(Choice {
                    label: b.label.clone(),
                    target_tli: r.target_tli,
                    first_segment: r.first_segment.clone(),
                    last_segment: r.last_segment.clone(),
                    wal_end: r.end,
                    path: r.path,
                    reason,
                    notes,
                    rejected,
                });
            }
            Err(reason) => rejected.push(Rejection {
                label: b.label.clone(),
                reason,
            }),
        }
    }
    // Nothing fits: explain with the window every backup allows.
    for b in &sorted {
        if !reaches.contains_key(&b.label) {
            if let (_, Some(r)) = evaluate(b, &TargetSpec::default(), Whereabouts::Unknown, wal) {
                reaches.insert(b.label.clone(), r);
            }
        }
    }
    let w = window(&sorted, &reaches);
    let target = spec.target.to_string();
    let summary = summarize(spec, located, &sorted, &w, forced, &rejected, &target);
    Err(Unreachable {
        target,
        summary,
        window: w,
        rejected,
    })
}

fn summarize(
    spec: &TargetSpec,
    located: Option<&BTreeMap<String, LocatedTarget>>,
    sorted: &[&BackupPoint],
    w: &Window,
    forced: Option<&str>,
    rejected: &[Rejection],
    target: &str,
) -> String {
    if sorted.is_empty() {
        return format!(
            "{target} cannot be reached: the repository holds no base backup that can be restored"
        );
    }
    if let Some(f) = forced {
        return match rejected.first() {
            Some(r) => format!("{target} cannot be reached from backup {f}: {}", r.reason),
            None => format!("backup {f} does not exist"),
        };
    }
    let first_consistent = sorted
        .iter()
        .find(|b| w.from.as_ref().is_some_and(|f| f.backup == b.label));
    let Some(oldest) = first_consistent else {
        return format!(
            "{target} cannot be reached: no backup has the WAL it needs to become consistent"
        );
    };
    let end =
        w.to.as_ref()
            .map(|t| format!("{} on timeline {}", t.lsn, t.timeline))
            .unwrap_or_default();
    match &spec.target {
        RecoveryTarget::Time(t) if t.at <= oldest.stop_time => format!(
            "{target} is before the oldest backup finished ({}, backup {})",
            show_time(oldest.stop_time),
            oldest.label
        ),
        RecoveryTarget::Lsn(l) if *l < oldest.stop => format!(
            "{target} is before the oldest backup's consistency point ({}, backup {})",
            oldest.stop, oldest.label
        ),
        RecoveryTarget::Lsn(l)
            if w.to
                .as_ref()
                .is_some_and(|t| t.lsn.parse::<Lsn>().is_ok_and(|e| *l >= e)) =>
        {
            format!("{target} is beyond the end of archived WAL ({end})")
        }
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_)
            if located.is_some_and(|m| m.is_empty()) =>
        {
            format!(
                "{target} is not in the archived WAL (searched from the start of backup {} at {} to the end of archived WAL, {end})",
                oldest.label, oldest.start
            )
        }
        _ => {
            let loc = located
                .and_then(|m| m.values().min_by_key(|l| l.lsn))
                .map(|l| format!(" (located at {} on timeline {})", l.lsn, l.tli))
                .unwrap_or_default();
            format!("no backup can reach {target}{loc}")
        }
    }
}

#[cfg(test)]
mod tests;

/// A timeline as a JSON number (as everywhere else in pitr's JSON).
fn ser_tli<S: serde::Serializer>(t: &TimelineId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(t.0)
}
