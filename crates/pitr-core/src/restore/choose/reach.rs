//! The path recovery from one backup follows and how far the archived WAL takes it.

use pitr_pg::{Lsn, SegNo, TimelineId, WalFileName, WalSegSize};

use super::{located_what, show_time, BackupPoint, LocatedTarget, PathStep, Reach, WalIndex};
use crate::restore::target::{RecoveryTarget, TargetSpec, TimelineGoal};

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

/// What is known about where a name/xid target is, for one backup.
#[derive(Debug, Clone, Copy)]
pub(super) enum Whereabouts<'a> {
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

pub(super) fn evaluate(
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
