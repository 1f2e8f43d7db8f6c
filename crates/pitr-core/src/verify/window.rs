//! What `verify` checks beyond each object's checksum: that the whole recovery window can be
//! replayed. Every timeline's archived segments from the oldest backup's start to the end of
//! its archived WAL, with no hole; the `.history` file of every timeline after the first; and
//! the chain of every incremental backup. Each problem says which targets it makes unreachable.

use std::collections::{BTreeMap, BTreeSet};

use pitr_pg::{Lsn, SegNo, TimelineId, WalFileName, WalSegSize};
use pitr_repo::{BackupKind, BackupManifest, WalEntry};

use super::Problem;
use crate::info::gaps;
use crate::restore::choose::show_time;

/// Holes in the archived WAL of each timeline after the oldest backup's start, each with the
/// targets it makes unreachable.
pub fn wal_holes(wal: &[WalEntry], backups: &[BackupManifest]) -> Vec<Problem> {
    let Some(seg_size) = backups
        .first()
        .and_then(|b| WalSegSize::new(b.wal_seg_size).ok())
    else {
        return Vec::new(); // no backup: no recovery window
    };
    let Some(oldest) = backups.iter().map(|b| seg_size.segno_of(b.start())).min() else {
        return Vec::new();
    };
    let mut segs: BTreeMap<TimelineId, BTreeSet<SegNo>> = BTreeMap::new();
    for e in wal {
        if let (WalFileName::Segment { .. }, Some(n)) = (&e.name, e.name.segno(seg_size)) {
            segs.entry(e.name.timeline()).or_default().insert(n);
        }
    }
    let mut out = Vec::new();
    for (tli, set) in &segs {
        // From the start of the oldest backup on this timeline (WAL before it may be missing
        // or expired), else from its first archived segment.
        let sorted: Vec<SegNo> = set.iter().copied().filter(|n| *n >= oldest).collect();
        let first_backup = backups
            .iter()
            .filter(|b| b.tli() == *tli)
            .map(|b| seg_size.segno_of(b.start()))
            .min();
        if let (Some(start), Some(first)) = (first_backup, sorted.first()) {
            if *first > start {
                out.push(hole(*tli, start, SegNo(first.0 - 1), seg_size, backups));
            }
        }
        for (a, b) in gaps(&sorted) {
            out.push(hole(*tli, a, b, seg_size, backups));
        }
    }
    out
}

/// The problem for segments `a..=b` missing on `tli`.
fn hole(
    tli: TimelineId,
    a: SegNo,
    b: SegNo,
    size: WalSegSize,
    backups: &[BackupManifest],
) -> Problem {
    let from = Lsn(a.0.saturating_mul(size.bytes()));
    let to = Lsn(b.0.saturating_add(1).saturating_mul(size.bytes()));
    let before: Vec<&BackupManifest> = backups.iter().filter(|m| m.start() < from).collect();
    let after = backups
        .iter()
        .filter(|m| m.start() >= to)
        .min_by_key(|m| m.start());
    let since = before
        .iter()
        .map(|m| m.stop_time)
        .max()
        .map(|t| format!(" (after {})", show_time(t)))
        .unwrap_or_default();
    let until = match after {
        Some(m) => format!(
            "up to {} (backup {}, consistent at {}) cannot be reached",
            m.stop(),
            m.label,
            show_time(m.stop_time)
        ),
        None => "up to the end of the archived WAL cannot be reached".to_string(),
    };
    let from_backups = if before.is_empty() {
        String::new()
    } else {
        format!(
            " from backup{} {}",
            if before.len() == 1 { "" } else { "s" },
            before
                .iter()
                .map(|m| m.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let missing = if a == b {
        format!("{} is not archived", a.file_name(tli, size))
    } else {
        format!(
            "{} .. {} are not archived",
            a.file_name(tli, size),
            b.file_name(tli, size)
        )
    };
    Problem {
        object: format!("WAL timeline {}", tli.0),
        problem: format!(
            "no WAL between {from} and {to} on timeline {} ({missing}): targets from {from}{since} {until}{from_backups}",
            tli.0,
        ),
    }
}

/// Timelines after the first whose `.history` file is not archived: recovery cannot follow them.
pub fn missing_histories(wal: &[WalEntry], backups: &[BackupManifest]) -> Vec<Problem> {
    let mut used: BTreeSet<TimelineId> = wal.iter().map(|e| e.name.timeline()).collect();
    used.extend(backups.iter().map(|b| b.tli()));
    let have: BTreeSet<TimelineId> = wal
        .iter()
        .filter(|e| matches!(e.name, WalFileName::History { .. }))
        .map(|e| e.name.timeline())
        .collect();
    used.into_iter()
        .filter(|t| t.0 > 1 && !have.contains(t))
        .map(|t| Problem {
            object: format!("WAL timeline {}", t.0),
            problem: format!(
                "{:08X}.history is not archived: targets on timeline {} cannot be reached (recovery cannot tell where it branched)",
                t.0, t.0
            ),
        })
        .collect()
}

/// Incremental backups whose parent, or a backup their files are stored in, is gone.
pub fn broken_chains(backups: &[BackupManifest]) -> Vec<Problem> {
    let labels: BTreeSet<&str> = backups.iter().map(|b| b.label.as_str()).collect();
    let mut out = Vec::new();
    for b in backups.iter().filter(|b| b.kind == BackupKind::Incr) {
        let mut missing: BTreeSet<&str> = BTreeSet::new();
        match b.parent.as_deref() {
            Some(p) if !labels.contains(p) => {
                missing.insert(p);
            }
            Some(_) => {}
            None => out.push(Problem {
                object: format!("backup {}", b.label),
                problem: "incremental backup without a parent".into(),
            }),
        }
        missing.extend(
            b.files
                .iter()
                .filter_map(|f| f.stored_in.as_deref())
                .filter(|l| !labels.contains(l)),
        );
        if !missing.is_empty() {
            out.push(Problem {
                object: format!("backup {}", b.label),
                problem: format!(
                    "incremental backup needs backup{} {} which {} not in the repository: it cannot be restored",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.iter().copied().collect::<Vec<_>>().join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                ),
            });
        }
    }
    out
}
