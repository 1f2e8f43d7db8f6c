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

use super::target::{RecoveryTarget, TargetSpec, TimelineGoal};

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
    #[serde(serialize_with = "super::ser_display")]
    pub tli: TimelineId,
    /// Its time, when the record carries one.
    pub time: Option<Timestamp>,
}

/// One stretch of the timeline path a recovery replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStep {
    /// Timeline.
    #[serde(serialize_with = "super::ser_display")]
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
    #[serde(serialize_with = "super::ser_display")]
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

/// The reachable window, for messages and `pitr info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Where it starts: the oldest backup that is consistent with the archived WAL.
    pub from: Option<WindowStart>,
    /// Where it ends: the end of archived WAL reachable from it.
    pub to: Option<WindowEnd>,
}

/// The start of a [`Window`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowStart {
    /// The backup.
    pub backup: String,
    /// When it finished (its consistency point in time).
    pub time: Timestamp,
    /// Its consistency LSN.
    pub lsn: String,
}

/// The end of a [`Window`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowEnd {
    /// End of archived WAL.
    pub lsn: String,
    /// On this timeline.
    pub timeline: u32,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => write!(
                f,
                "reachable: from {} / {} (backup {} finished) to {} on timeline {} (end of archived WAL)",
                show_time(from.time),
                from.lsn,
                from.backup,
                to.lsn,
                to.timeline
            ),
            _ => write!(
                f,
                "reachable: nothing (no backup has the WAL it needs to become consistent)"
            ),
        }
    }
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

/// The timeline path from `(tli, start)` to `target` per `target`'s history, or why there is
/// none.
pub fn timeline_path(
    b: &BackupPoint,
    target: TimelineId,
    wal: &WalIndex,
) -> Result<Vec<PathStep>, String> {
    let Some(h) = wal.history(target) else {
        return Err(format!(
            "timeline {target}'s history file ({}) is not archived",
            WalFileName::History { tli: target }
        ));
    };
    if b.tli == target {
        return Ok(vec![PathStep {
            tli: target,
            from: b.start,
            until: None,
        }]);
    }
    let Some(idx) = h.entries.iter().position(|e| e.parent == b.tli) else {
        return Err(format!(
            "it is on timeline {}, which is not an ancestor of timeline {target}",
            b.tli
        ));
    };
    // A timeline ends at its switchpoint or at a later line's smaller one (PostgreSQL writes
    // such lines after a recovery that stopped before a later fork; see pitr_pg::history).
    let end_at = |k: usize| {
        h.entries[k..]
            .iter()
            .map(|e| e.switchpoint)
            .min()
            .unwrap_or(Lsn(u64::MAX))
    };
    let left = end_at(idx);
    if b.stop > left {
        return Err(format!(
            "timeline {target} left timeline {} at {left}, before the backup was consistent ({})",
            b.tli, b.stop
        ));
    }
    let mut path = Vec::new();
    let mut from = b.start;
    for k in idx..h.entries.len() {
        let until = end_at(k);
        if from < until {
            path.push(PathStep {
                tli: h.entries[k].parent,
                from,
                until: Some(until),
            });
        }
        from = from.max(until);
    }
    path.push(PathStep {
        tli: target,
        from,
        until: None,
    });
    Ok(path)
}

/// How far WAL is continuous along `path`.
pub fn reach(path: Vec<PathStep>, wal: &WalIndex) -> Reach {
    let size = wal.seg_size;
    let name = |tli: TimelineId, s: SegNo| s.file_name(tli, size);
    let start_of = |s: SegNo| size.start_of(s).unwrap_or(Lsn(u64::MAX));
    let target_tli = path.last().map(|p| p.tli).unwrap_or(TimelineId(1));
    // The first segment read: from the first step that needs one of its own.
    let first_segment = path
        .iter()
        .find(|p| {
            p.until
                .is_none_or(|u| size.segno_of(p.from) < size.segno_of(u))
        })
        .map(|p| name(p.tli, size.segno_of(p.from)))
        .unwrap_or_default();
    let mut last: Option<(TimelineId, SegNo)> = None;
    for step in &path {
        let from = size.segno_of(step.from);
        match step.until {
            Some(until) => {
                // The segment holding the switchpoint belongs to the next timeline.
                let end = size.segno_of(until);
                let mut s = from;
                while s < end {
                    if !wal.has(step.tli, s) {
                        return Reach {
                            target_tli,
                            end: start_of(s),
                            end_tli: step.tli,
                            gap: Some(name(step.tli, s)),
                            first_segment,
                            last_segment: last.map(|(t, s)| name(t, s)),
                            path,
                        };
                    }
                    last = Some((step.tli, s));
                    s = s.next();
                }
            }
            None => {
                let mut s = from;
                while wal.has(step.tli, s) {
                    last = Some((step.tli, s));
                    s = s.next();
                }
                // Anything archived beyond the first missing segment is cut off by a gap.
                let more = wal
                    .segments
                    .get(&step.tli)
                    .and_then(|set| set.range(s..).next())
                    .is_some();
                return Reach {
                    target_tli,
                    end: start_of(s),
                    end_tli: step.tli,
                    gap: more.then(|| name(step.tli, s)),
                    first_segment,
                    last_segment: last.map(|(t, s)| name(t, s)),
                    path,
                };
            }
        }
    }
    // A path always ends with the target timeline; an empty one reaches nothing.
    Reach {
        target_tli,
        end: Lsn::INVALID,
        end_tli: target_tli,
        gap: None,
        first_segment,
        last_segment: None,
        path,
    }
}

/// The timeline recovery from `b` ends on, per `recovery_target_timeline`.
pub fn resolve_timeline(goal: TimelineGoal, b: &BackupPoint, wal: &WalIndex) -> TimelineId {
    match goal {
        TimelineGoal::Latest => wal.latest_from(b.tli),
        TimelineGoal::Current => b.tli,
        TimelineGoal::Id(t) => t,
    }
}

/// What one backup can do for the target: `Ok(reach)` or the reason it cannot.
/// What is known about where a name/xid target is, for one backup.
#[derive(Debug, Clone, Copy)]
enum Whereabouts<'a> {
    /// Not searched (no WAL decoding, or not a name/xid target).
    Unknown,
    /// The first matching record after the backup's start, on its path.
    Found(&'a LocatedTarget),
    /// Searched from the backup's start to the end of archived WAL on its path: not there.
    NotFound,
}

/// The path and WAL reach of recovery from `b` towards the timeline `spec` asks for, or why
/// there is no such path. Used to know which WAL to decode for a name/xid target.
pub fn reach_from(b: &BackupPoint, spec: &TargetSpec, wal: &WalIndex) -> Result<Reach, String> {
    let u = resolve_timeline(spec.timeline, b, wal);
    timeline_path(b, u, wal).map(|p| reach(p, wal))
}

/// Backups in the order choice considers them: newest (stop time, stop LSN, label) first.
pub fn newest_first(backups: &[BackupPoint]) -> Vec<&BackupPoint> {
    let mut sorted: Vec<&BackupPoint> = backups.iter().collect();
    sorted.sort_by(|a, b| (b.stop_time, b.stop, &b.label).cmp(&(a.stop_time, a.stop, &a.label)));
    sorted
}

fn evaluate(
    b: &BackupPoint,
    spec: &TargetSpec,
    located: Whereabouts<'_>,
    wal: &WalIndex,
) -> (Result<Reach, String>, Option<Reach>) {
    let u = resolve_timeline(spec.timeline, b, wal);
    let (verdict, r) = evaluate_on(b, u, spec, located, wal);
    match verdict {
        Err(e) if spec.timeline == TimelineGoal::Latest && u != b.tli => (
            Err(format!(
                "{e} (recovery_target_timeline 'latest' resolves to {u}; pass --target-timeline to follow another)"
            )),
            r,
        ),
        v => (v, r),
    }
}

fn evaluate_on(
    b: &BackupPoint,
    u: TimelineId,
    spec: &TargetSpec,
    located: Whereabouts<'_>,
    wal: &WalIndex,
) -> (Result<Reach, String>, Option<Reach>) {
    let path = match timeline_path(b, u, wal) {
        Ok(p) => p,
        Err(e) => return (Err(e), None),
    };
    let r = reach(path, wal);
    let size = wal.seg_size;
    if r.end < b.stop {
        let why = match &r.gap {
            Some(g) => format!(
                "the WAL it needs to become consistent ({} to {}) is incomplete: {g} is not archived",
                b.start, b.stop
            ),
            None => format!(
                "the WAL it needs to become consistent ({} to {}) is not archived yet (archived up to {}; {} is missing)",
                b.start,
                b.stop,
                r.end,
                size.segno_of(r.end).file_name(r.end_tli, size)
            ),
        };
        return (Err(why), Some(r));
    }
    let gap_note = |r: &Reach| {
        match &r.gap {
        Some(g) => format!(
            "archived WAL after it is not continuous ({g} is missing, recovery would end at {} on timeline {})",
            r.end, r.end_tli
        ),
        None => String::new(),
    }
    };
    let point = match (&spec.target, located) {
        (RecoveryTarget::Lsn(l), _) => Some((*l, None)),
        (_, Whereabouts::Found(loc)) => Some((loc.lsn, Some(loc.tli))),
        (_, Whereabouts::NotFound) => {
            return (
                Err(format!(
                    "the {} is not in the archived WAL from its start ({}) to the end of the archive on its path ({} on timeline {})",
                    located_what(&spec.target),
                    b.start,
                    r.end,
                    r.end_tli
                )),
                Some(r),
            )
        }
        _ => None,
    };
    if let RecoveryTarget::Time(t) = &spec.target {
        let usable = if spec.exclusive {
            b.stop_time < t.at
        } else {
            b.stop_time <= t.at
        };
        if !usable {
            return (
                Err(format!(
                    "it finished at {}, not before the target time",
                    show_time(b.stop_time)
                )),
                Some(r),
            );
        }
    }
    if let Some((lsn, tli)) = point {
        return match point_reached(&r, b, lsn, tli, size) {
            Ok(()) => (Ok(r.clone()), Some(r)),
            Err(why) => (Err(why), Some(r)),
        };
    }
    match &spec.target {
        RecoveryTarget::Immediate => (Ok(r.clone()), Some(r)),
        _ if r.gap.is_some() => (Err(gap_note(&r)), Some(r)),
        _ => (Ok(r.clone()), Some(r)),
    }
}

/// Whether recovery from `b` along `r` reaches the target position `lsn` (on timeline `tli`
/// when it was located in the WAL): after the backup's consistency point, on the path, and
/// archived up to the segment holding it.
fn point_reached(
    r: &Reach,
    b: &BackupPoint,
    lsn: Lsn,
    tli: Option<TimelineId>,
    size: WalSegSize,
) -> Result<(), String> {
    if lsn < b.stop {
        return Err(format!(
            "the target {lsn} is before its consistency point {}",
            b.stop
        ));
    }
    if let Some(tli) = tli {
        let on_path = r
            .path
            .iter()
            .any(|s| s.tli == tli && lsn >= s.from && s.until.is_none_or(|u| lsn < u));
        if !on_path {
            return Err(format!(
                "the target ({lsn} on timeline {tli}) is not on the path to timeline {}",
                r.target_tli
            ));
        }
    }
    // The segment holding the target must be archived, along the path.
    let needed_end = size
        .start_of(size.segno_of(lsn).next())
        .unwrap_or(Lsn(u64::MAX));
    if r.end < needed_end {
        let why = match &r.gap {
            Some(g) => {
                format!("WAL up to the target {lsn} is not continuous: {g} is not archived")
            }
            None => format!(
                "the target {lsn} is beyond the end of archived WAL ({} on timeline {})",
                r.end, r.end_tli
            ),
        };
        return Err(why);
    }
    Ok(())
}

/// What recovery can reach with these backups and this WAL: from the consistency point of the
/// oldest backup whose WAL is archived that far, to the end of archived WAL, following the
/// latest timeline (the window `pitr info` shows and refusals quote).
pub fn recovery_window(backups: &[BackupPoint], wal: &WalIndex) -> Window {
    let spec = TargetSpec::default();
    let mut sorted = newest_first(backups);
    sorted.reverse();
    let mut reaches = BTreeMap::new();
    for b in &sorted {
        if let (_, Some(r)) = evaluate(b, &spec, Whereabouts::Unknown, wal) {
            reaches.insert(b.label.clone(), r);
        }
    }
    window(&sorted, &reaches)
}

fn window(backups: &[&BackupPoint], reaches: &BTreeMap<String, Reach>) -> Window {
    let mut from = None;
    let mut to: Option<(Lsn, TimelineId)> = None;
    for b in backups {
        let Some(r) = reaches.get(&b.label) else {
            continue;
        };
        if r.end < b.stop {
            continue;
        }
        if from.is_none() {
            from = Some(WindowStart {
                backup: b.label.clone(),
                time: b.stop_time,
                lsn: b.stop.to_string(),
            });
        }
        if to.is_none_or(|(e, _)| r.end > e) {
            to = Some((r.end, r.end_tli));
        }
    }
    Window {
        from,
        to: to.map(|(lsn, tli)| WindowEnd {
            lsn: lsn.to_string(),
            timeline: tli.0,
        }),
    }
}

fn located_what(t: &RecoveryTarget) -> &'static str {
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
