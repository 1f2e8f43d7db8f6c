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
                .flat_map(|f| f.holders(&b.label))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wal(names: &[&str]) -> Vec<WalEntry> {
        names
            .iter()
            .map(|n| WalEntry {
                name: WalFileName::parse(n).unwrap(),
                stored_len: 1,
            })
            .collect()
    }

    fn backup(label: &str, tli: u32, start: &str, stop: &str) -> BackupManifest {
        BackupManifest {
            label: label.into(),
            kind: BackupKind::Full,
            parent: None,
            pg_major: 17,
            system_id: 7,
            wal_seg_size: 16 << 20,
            timeline: tli,
            start_lsn: start.into(),
            stop_lsn: stop.into(),
            start_time: "2026-12-02T12:00:00Z".parse().unwrap(),
            stop_time: "2026-12-02T12:01:00Z".parse().unwrap(),
            backup_label: String::new(),
            tablespace_map: None,
            tablespaces: Vec::new(),
            data_checksums: true,
            dirs: Vec::new(),
            files: Vec::new(),
            pitr_version: "test".into(),
        }
    }

    #[test]
    fn a_hole_after_the_oldest_backup_is_reported_with_the_unreachable_targets() {
        let b1 = backup("20261202T120000F", 1, "0/3000028", "0/3000100");
        let mut b2 = backup("20261202T130000F", 1, "0/7000028", "0/7000100");
        b2.stop_time = "2026-12-02T13:01:00Z".parse().unwrap();
        // 1 is before the oldest backup (not a hole); 5 is missing; 9 is the end.
        let w = wal(&[
            "000000010000000000000001",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000006",
            "000000010000000000000007",
            "000000010000000000000008",
            "000000010000000000000009",
        ]);
        let p = wal_holes(&w, &[b1.clone(), b2.clone()]);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].object, "WAL timeline 1");
        assert_eq!(
            p[0].problem,
            "no WAL between 0/5000000 and 0/6000000 on timeline 1 (000000010000000000000005 is not \
             archived): targets from 0/5000000 (after 2026-12-02 12:01:00+00) up to 0/7000100 \
             (backup 20261202T130000F, consistent at 2026-12-02 13:01:00+00) cannot be reached \
             from backup 20261202T120000F"
        );
        // Without the later backup, nothing after the hole can be reached.
        let p = wal_holes(&w, &[b1]);
        assert!(
            p[0].problem.contains("up to the end of the archived WAL"),
            "{p:#?}"
        );
        // The first segments of a backup missing: a hole from its start.
        let p = wal_holes(&w[3..], &[b2]);
        assert!(p.is_empty(), "{p:#?}");
        let b3 = backup("20261202T140000F", 1, "0/4000028", "0/4000100");
        let p = wal_holes(&w[3..], &[b3]);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0]
            .problem
            .contains("000000010000000000000004 .. 000000010000000000000005"));
    }

    #[test]
    fn histories_and_incremental_chains() {
        let w = wal(&["000000010000000000000003", "000000020000000000000004"]);
        let b1 = backup("20261202T120000F", 1, "0/3000028", "0/3000100");
        let p = missing_histories(&w, std::slice::from_ref(&b1));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].problem.starts_with("00000002.history is not archived"));
        let w = wal(&[
            "000000010000000000000003",
            "00000002.history",
            "000000020000000000000004",
        ]);
        assert!(missing_histories(&w, std::slice::from_ref(&b1)).is_empty());

        let mut incr = backup("20261202T130000I", 1, "0/5000028", "0/5000100");
        incr.kind = BackupKind::Incr;
        incr.parent = Some(b1.label.clone());
        assert!(broken_chains(&[b1.clone(), incr.clone()]).is_empty());
        let p = broken_chains(std::slice::from_ref(&incr));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].problem.contains("20261202T120000F"), "{p:#?}");
    }
}
