//! Backup choice, rule by rule, on hand-built WAL indexes and backups.

use super::*;
use crate::restore::target::{parse_time_in, TargetAction, TimelineGoal};

const MB16: u64 = 16 << 20;

fn seg16() -> WalSegSize {
    WalSegSize::new(MB16).unwrap()
}

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn backup(label: &str, tli: u32, start: &str, stop: &str, stop_time: &str) -> BackupPoint {
    BackupPoint {
        label: label.into(),
        tli: TimelineId(tli),
        start: lsn(start),
        stop: lsn(stop),
        start_time: ts(stop_time),
        stop_time: ts(stop_time),
    }
}

/// Timeline 1 segments 1..=n.
fn wal(n: u64) -> WalIndex {
    let mut w = WalIndex::new(seg16());
    for s in 1..=n {
        w.add_segment(TimelineId(1), SegNo(s));
    }
    w
}

fn spec(target: RecoveryTarget) -> TargetSpec {
    TargetSpec {
        target,
        ..Default::default()
    }
}

fn time(s: &str) -> RecoveryTarget {
    RecoveryTarget::Time(parse_time_in(s, &jiff::tz::TimeZone::UTC).unwrap())
}

fn two_backups() -> Vec<BackupPoint> {
    vec![
        backup("A", 1, "0/2000028", "0/2000100", "2025-07-10T10:00:00Z"),
        backup("B", 1, "0/5000028", "0/5000100", "2025-07-10T12:00:00Z"),
    ]
}

#[test]
fn end_of_wal_takes_the_newest_backup() {
    let c = choose_backup(
        &two_backups(),
        &wal(8),
        &spec(RecoveryTarget::EndOfWal),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "B");
    assert_eq!(c.first_segment, "000000010000000000000005");
    assert_eq!(c.last_segment.as_deref(), Some("000000010000000000000008"));
    assert_eq!(c.wal_end, lsn("0/9000000"));
    assert_eq!(c.target_tli, TimelineId(1));
}

#[test]
fn time_target_takes_the_newest_backup_finished_before_it() {
    let w = wal(8);
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(time("2025-07-10 11:00:00+00")),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    assert_eq!(c.rejected.len(), 1);
    assert!(c.rejected[0].reason.contains("not before the target time"));
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(time("2025-07-10 13:00:00+00")),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "B");
}

#[test]
fn exclusive_time_target_excludes_a_backup_finished_exactly_then() {
    let w = wal(8);
    let mut s = spec(time("2025-07-10 12:00:00+00"));
    assert_eq!(
        choose_backup(&two_backups(), &w, &s, None, None)
            .unwrap()
            .label,
        "B"
    );
    s.exclusive = true;
    assert_eq!(
        choose_backup(&two_backups(), &w, &s, None, None)
            .unwrap()
            .label,
        "A"
    );
}

#[test]
fn times_are_shown_to_the_microsecond() {
    assert_eq!(
        show_time(ts("2026-11-21T20:30:43.570854617Z")),
        "2026-11-21 20:30:43.570855+00"
    );
    assert_eq!(
        show_time(ts("2025-07-10T10:00:00Z")),
        "2025-07-10 10:00:00+00"
    );
}

#[test]
fn refuses_a_time_before_the_oldest_backup_with_the_window() {
    let e = choose_backup(
        &two_backups(),
        &wal(8),
        &spec(time("2025-07-10 09:00:00+00")),
        None,
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("target time 2025-07-10 09:00:00+00:00 is before the oldest backup finished (2025-07-10 10:00:00+00, backup A)"), "{msg}");
    assert!(msg.contains("reachable: from 2025-07-10 10:00:00+00 / 0/2000100 (backup A finished) to 0/9000000 on timeline 1 (end of archived WAL)"), "{msg}");
    assert!(msg.contains("backup A: it finished at"), "{msg}");
}

#[test]
fn lsn_target_needs_the_segment_holding_it() {
    let w = wal(8);
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/8FFFFFF"))),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "B");
    let e = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/9000000"))),
        None,
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "target LSN 0/9000000 is beyond the end of archived WAL (0/9000000 on timeline 1)"
        ),
        "{e}"
    );
    // Between the backups: the older one.
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/4000000"))),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    // Before the older backup was consistent.
    let e = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/2000000"))),
        None,
        None,
    )
    .unwrap_err();
    assert!(
        e.summary
            .contains("before the oldest backup's consistency point (0/2000100, backup A)"),
        "{e}"
    );
}

#[test]
fn a_gap_makes_older_backups_unusable_for_end_of_wal_but_not_for_an_lsn_before_it() {
    let mut w = WalIndex::new(seg16());
    for s in [2, 3, 4, 6, 7, 8] {
        w.add_segment(TimelineId(1), SegNo(s));
    }
    let backups = vec![backup(
        "A",
        1,
        "0/2000028",
        "0/2000100",
        "2025-07-10T10:00:00Z",
    )];
    let e = choose_backup(&backups, &w, &spec(RecoveryTarget::EndOfWal), None, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("000000010000000000000005 is missing"),
        "{e}"
    );
    let c = choose_backup(
        &backups,
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/4800000"))),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    let e = choose_backup(
        &backups,
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/6800000"))),
        None,
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("000000010000000000000005 is not archived"),
        "{e}"
    );
    // Immediate only needs the WAL up to consistency.
    assert!(choose_backup(&backups, &w, &spec(RecoveryTarget::Immediate), None, None).is_ok());
}

#[test]
fn a_backup_without_the_wal_to_become_consistent_is_skipped() {
    let mut w = wal(4); // B needs segment 5
    w.add_segment(TimelineId(1), SegNo(6));
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Immediate),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    assert!(c.rejected[0]
        .reason
        .contains("000000010000000000000005 is not archived"));
    assert!(c.reason.contains("1 newer one cannot"));
}

/// Timeline 2 forked from 1 at 0/6000100 (promotion), segments 1..=6 on 1 (6 is the old
/// timeline's copy) and 6..=9 on 2.
fn forked() -> WalIndex {
    let mut w = wal(6);
    w.add_history(
        TimelineHistory::parse(
            TimelineId(2),
            b"1\t0/6000100\tno recovery target specified\n",
        )
        .unwrap(),
    );
    for s in 6..=9 {
        w.add_segment(TimelineId(2), SegNo(s));
    }
    w
}

#[test]
fn follows_the_timeline_history_to_the_latest_timeline() {
    let w = forked();
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::EndOfWal),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "B");
    assert_eq!(c.target_tli, TimelineId(2));
    assert_eq!(c.path.len(), 2);
    assert_eq!(c.wal_end, lsn("0/A000000"));
    assert_eq!(c.last_segment.as_deref(), Some("000000020000000000000009"));
    // The switch segment is read from timeline 2: timeline 1's segment 6 is not needed.
    let mut w2 = w.clone();
    w2.segments
        .get_mut(&TimelineId(1))
        .unwrap()
        .remove(&SegNo(6));
    assert!(choose_backup(
        &two_backups(),
        &w2,
        &spec(RecoveryTarget::EndOfWal),
        None,
        None
    )
    .is_ok());
    // …but timeline 2's copy is.
    let mut w3 = w.clone();
    w3.segments
        .get_mut(&TimelineId(2))
        .unwrap()
        .remove(&SegNo(6));
    let e = choose_backup(
        &two_backups(),
        &w3,
        &spec(RecoveryTarget::EndOfWal),
        None,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("000000020000000000000006"), "{e}");
}

#[test]
fn warns_when_latest_branched_off_a_timeline_that_went_on() {
    // A promoted branch alone (timeline 1 stopped at the fork): nothing to say.
    let w = forked();
    assert!(branch_warnings(&two_backups(), &w, TimelineId(2)).is_empty());
    // Timeline 1 went on: more WAL past the fork, and a backup after it.
    let mut w = forked();
    for s in 7..=12 {
        w.add_segment(TimelineId(1), SegNo(s));
    }
    let mut backups = two_backups();
    backups.push(backup(
        "C",
        1,
        "0/8000028",
        "0/8000100",
        "2025-07-10T14:00:00Z",
    ));
    let warnings = branch_warnings(&backups, &w, TimelineId(2));
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let b = &warnings[0];
    assert_eq!((b.latest, b.parent), (2, 1));
    assert_eq!(b.branch_point, "0/6000100");
    assert_eq!(b.flag, "--target-timeline 1");
    assert_eq!(b.evidence.len(), 2, "{:?}", b.evidence);
    assert!(
        b.evidence[0].contains("up to 0/D000000"),
        "{:?}",
        b.evidence
    );
    assert!(b.evidence[1].starts_with("backup C"), "{:?}", b.evidence);
    let end = |w: &Window| w.to.clone().map(|t| (t.lsn, t.timeline));
    assert_eq!(end(&b.latest_reach), Some(("0/A000000".into(), 2)));
    assert_eq!(end(&b.parent_reach), Some(("0/D000000".into(), 1)));
    assert!(b.message.contains("--target-timeline 1"), "{}", b.message);
    assert!(
        b.message.contains("0/A000000 on timeline 2"),
        "{}",
        b.message
    );
    assert!(
        b.message.contains("0/D000000 on timeline 1"),
        "{}",
        b.message
    );
    // Only WAL after the fork (no later backup) is enough.
    assert_eq!(branch_warnings(&two_backups(), &w, TimelineId(2)).len(), 1);
}

#[test]
fn current_timeline_stays_on_the_backup_timeline() {
    let w = forked();
    let s = TargetSpec {
        target: RecoveryTarget::Lsn(lsn("0/6800000")),
        timeline: TimelineGoal::Current,
        action: Some(TargetAction::Promote),
        exclusive: false,
    };
    // Timeline 1 only has segment 6 as the old timeline's copy: the target is in it.
    let c = choose_backup(&two_backups(), &w, &s, None, None).unwrap();
    assert_eq!(c.target_tli, TimelineId(1));
    let s = TargetSpec {
        target: RecoveryTarget::Lsn(lsn("0/7800000")),
        ..s
    };
    assert!(choose_backup(&two_backups(), &w, &s, None, None).is_err());
}

#[test]
fn a_backup_taken_after_the_fork_on_the_old_timeline_cannot_reach_the_new_one() {
    let w = forked();
    let backups = vec![
        backup("A", 1, "0/2000028", "0/2000100", "2025-07-10T10:00:00Z"),
        // Still on timeline 1 after timeline 2 left it at 0/6000100.
        backup("C", 1, "0/6000200", "0/6000300", "2025-07-10T13:00:00Z"),
    ];
    let c = choose_backup(&backups, &w, &spec(RecoveryTarget::EndOfWal), None, None).unwrap();
    assert_eq!(c.label, "A");
    assert!(
        c.rejected[0]
            .reason
            .contains("timeline 2 left timeline 1 at 0/6000100"),
        "{:?}",
        c.rejected
    );
    // Asked for explicitly, it is refused with the reason.
    let e = choose_backup(
        &backups,
        &w,
        &spec(RecoveryTarget::EndOfWal),
        None,
        Some("C"),
    )
    .unwrap_err();
    assert!(
        e.summary
            .starts_with("end of archived WAL cannot be reached from backup C: timeline 2 left"),
        "{e}"
    );
    // On its own timeline it is fine.
    let s = TargetSpec {
        timeline: TimelineGoal::Id(TimelineId(1)),
        target: RecoveryTarget::Immediate,
        ..Default::default()
    };
    assert_eq!(
        choose_backup(&backups, &w, &s, None, Some("C"))
            .unwrap()
            .label,
        "C"
    );
}

#[test]
fn a_target_timeline_without_history_is_refused() {
    let w = wal(8);
    let s = TargetSpec {
        timeline: TimelineGoal::Id(TimelineId(3)),
        ..Default::default()
    };
    let e = choose_backup(&two_backups(), &w, &s, None, None).unwrap_err();
    assert!(
        e.to_string().contains("00000003.history) is not archived"),
        "{e}"
    );
}

#[test]
fn latest_probes_history_files_one_by_one() {
    let mut w = forked();
    // 00000004.history without 00000003.history: PostgreSQL stops probing at 3.
    w.add_history(
        TimelineHistory::parse(TimelineId(4), b"1\t0/6000100\tx\n2\t0/8000000\ty\n").unwrap(),
    );
    assert_eq!(w.latest_from(TimelineId(1)), TimelineId(2));
    assert_eq!(w.latest_from(TimelineId(4)), TimelineId(4));
}

#[test]
fn unlocated_name_and_xid_targets_take_the_oldest_backup() {
    let w = wal(8);
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Name("before_drop".into())),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    assert!(c.reason.contains("oldest backup"), "{}", c.reason);
    assert!(!c.notes.is_empty());
    let c = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Xid(900)),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
}

fn at(entries: &[(&str, &str, u32)]) -> BTreeMap<String, LocatedTarget> {
    entries
        .iter()
        .map(|(label, l, tli)| {
            (
                label.to_string(),
                LocatedTarget {
                    lsn: lsn(l),
                    tli: TimelineId(*tli),
                    time: None,
                },
            )
        })
        .collect()
}

#[test]
fn located_targets_are_treated_like_lsn_targets() {
    let w = forked();
    let xid = spec(RecoveryTarget::Xid(900));
    let both = at(&[("A", "0/7000200", 2), ("B", "0/7000200", 2)]);
    let c = choose_backup(&two_backups(), &w, &xid, Some(&both), None).unwrap();
    assert_eq!(c.label, "B");
    // A point on timeline 1 past the fork is not on the path to timeline 2.
    let off = at(&[("A", "0/6100000", 1), ("B", "0/6100000", 1)]);
    let e = choose_backup(&two_backups(), &w, &xid, Some(&off), None).unwrap_err();
    assert!(
        e.to_string().contains("not on the path to timeline 2"),
        "{e}"
    );
}

#[test]
fn a_target_located_before_the_newest_backup_takes_an_older_one() {
    let w = forked();
    let name = spec(RecoveryTarget::Name("p".into()));
    // Nothing after B's start: B is passed over, A reaches it.
    let c = choose_backup(
        &two_backups(),
        &w,
        &name,
        Some(&at(&[("A", "0/3000000", 1)])),
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    assert!(
        c.rejected[0]
            .reason
            .contains("restore point is not in the archived WAL from its start (0/5000028)"),
        "{:?}",
        c.rejected
    );
    // Found after B's start but before it was consistent: PostgreSQL would stop there and
    // fail, so A.
    let c = choose_backup(
        &two_backups(),
        &w,
        &name,
        Some(&at(&[("A", "0/3000000", 1), ("B", "0/5000050", 1)])),
        None,
    )
    .unwrap();
    assert_eq!(c.label, "A");
    assert!(c.rejected[0]
        .reason
        .contains("before its consistency point"));
}

#[test]
fn a_target_not_in_the_archived_wal_is_refused_with_the_window() {
    let w = forked();
    let e = choose_backup(
        &two_backups(),
        &w,
        &spec(RecoveryTarget::Xid(12345)),
        Some(&BTreeMap::new()),
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("transaction 12345 is not in the archived WAL")
            && msg.contains("backup A at 0/2000028")
            && msg.contains("reachable: from"),
        "{msg}"
    );
}

/// The history PostgreSQL 17 wrote for timeline 3 after a recovery that followed timeline 2
/// but stopped on timeline 1 at 0/602828, before timeline 2 branched off at 0/700000
/// (1 MB segments).
fn stopped_before_fork() -> WalIndex {
    let mut w = WalIndex::new(WalSegSize::new(1 << 20).unwrap());
    for s in 1..=6 {
        w.add_segment(TimelineId(1), SegNo(s));
    }
    w.add_history(TimelineHistory::parse(TimelineId(2), b"1\t0/700000\tx\n").unwrap());
    w.add_segment(TimelineId(2), SegNo(7));
    w.add_history(
        TimelineHistory::parse(
            TimelineId(3),
            b"1\t0/700000\tno recovery target specified\n\n2\t0/602868\tafter LSN 0/602828\n",
        )
        .unwrap(),
    );
    w.add_segment(TimelineId(3), SegNo(6));
    w
}

#[test]
fn a_history_whose_switchpoints_go_back_skips_the_empty_timeline() {
    let w = stopped_before_fork();
    let b = vec![backup(
        "A",
        1,
        "0/600028",
        "0/600028",
        "2025-07-10T10:00:00Z",
    )];
    let c = choose_backup(&b, &w, &spec(RecoveryTarget::EndOfWal), None, None).unwrap();
    assert_eq!(c.target_tli, TimelineId(3));
    assert_eq!(
        c.path,
        vec![
            PathStep {
                tli: TimelineId(1),
                from: lsn("0/600028"),
                until: Some(lsn("0/602868"))
            },
            PathStep {
                tli: TimelineId(3),
                from: lsn("0/602868"),
                until: None
            },
        ]
    );
    // Segment 6 is read from timeline 3, as PostgreSQL does.
    assert_eq!(c.first_segment, "000000030000000000000006");
    assert_eq!(c.wal_end, lsn("0/700000"));
    // Timeline 1's WAL after 0/602868 is not on timeline 3's path.
    let off = at(&[("A", "0/650000", 1)]);
    assert!(choose_backup(&b, &w, &spec(RecoveryTarget::Xid(800)), Some(&off), None).is_err());
    // Following timeline 2 instead still works.
    let s = TargetSpec {
        timeline: TimelineGoal::Id(TimelineId(2)),
        ..Default::default()
    };
    let c = choose_backup(&b, &w, &s, None, None).unwrap();
    assert_eq!(c.wal_end, lsn("0/800000"));
}

#[test]
fn no_backups_at_all() {
    let e = choose_backup(&[], &wal(3), &spec(RecoveryTarget::EndOfWal), None, None).unwrap_err();
    assert!(e.to_string().contains("holds no base backup"), "{e}");
}

#[test]
fn other_segment_sizes() {
    let size = WalSegSize::new(1 << 20).unwrap();
    let mut w = WalIndex::new(size);
    for s in 0x20..=0x30 {
        w.add_segment(TimelineId(1), SegNo(s));
    }
    let b = vec![backup(
        "A",
        1,
        "0/2000028",
        "0/2000100",
        "2025-07-10T10:00:00Z",
    )];
    let c = choose_backup(
        &b,
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/30FFFFF"))),
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.first_segment, "000000010000000000000020");
    assert!(choose_backup(
        &b,
        &w,
        &spec(RecoveryTarget::Lsn(lsn("0/3100000"))),
        None,
        None
    )
    .is_err());
}
