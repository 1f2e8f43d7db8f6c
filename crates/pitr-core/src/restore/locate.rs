//! Where a `--target-name` or `--target-xid` is in the archived WAL: the WAL along a backup's
//! timeline path is decoded with [`pitr_pg::wal`] from the backup's start, and the first record
//! PostgreSQL would stop at is returned (a restore point with that name, or the commit or abort
//! record of that transaction). Backup choice then treats it like an LSN target, so a backup
//! that became consistent after the target is never chosen.

use jiff::Timestamp;
use pitr_pg::wal::{Record, RecordKind, WalDecoder};
use pitr_pg::{Lsn, SegNo, TimelineId, WalFileName};
use pitr_repo::ClusterRepo;

use super::choose::{LocatedTarget, PathStep, WalIndex};
use super::target::RecoveryTarget;
use super::RestoreError;

/// The archived segments a recovery along `path` reads, in order, up to the first one missing
/// (the segment holding a switchpoint is read from the newer timeline, as PostgreSQL does).
pub fn path_segments(path: &[PathStep], wal: &WalIndex) -> Vec<(TimelineId, SegNo)> {
    let size = wal.seg_size();
    let mut out = Vec::new();
    for step in path {
        let mut s = size.segno_of(step.from);
        let end = step.until.map(|u| size.segno_of(u));
        while end.is_none_or(|e| s < e) {
            if !wal.has_segment(step.tli, s) {
                return out;
            }
            out.push((step.tli, s));
            s = s.next();
        }
    }
    out
}

/// Whether `rec` is where PostgreSQL stops for a name or xid `target`; with the record's time.
pub fn record_matches(target: &RecoveryTarget, rec: &Record<'_>) -> Option<Option<Timestamp>> {
    let time = |t: pitr_pg::wal::PgTimestamp| Timestamp::from_microsecond(t.to_unix_micros()).ok();
    match (target, rec.kind()) {
        (RecoveryTarget::Name(n), Ok(RecordKind::RestorePoint(p))) if p.name == n.as_bytes() => {
            Some(time(p.time))
        }
        // recovery_target_xid is a 32-bit TransactionId: PostgreSQL drops an epoch.
        (RecoveryTarget::Xid(x), Ok(RecordKind::Commit(e) | RecordKind::Abort(e)))
            if u64::from(e.xid.0) == (x & 0xFFFF_FFFF) =>
        {
            Some(time(e.time))
        }
        _ => None,
    }
}

/// The timeline of the path step that holds `lsn` (the record's own page may carry an older
/// timeline when it was copied into a new timeline's first segment).
fn step_tli(path: &[PathStep], lsn: Lsn) -> Option<TimelineId> {
    path.iter()
        .find(|s| lsn >= s.from && s.until.is_none_or(|u| lsn < u))
        .map(|s| s.tli)
}

/// Feeds `input` to `dec` and returns the first record at or after `from` that is `target`.
fn scan(
    dec: &mut WalDecoder,
    input: &[u8],
    from: Lsn,
    target: &RecoveryTarget,
) -> Result<Option<(Lsn, Option<Timestamp>)>, pitr_pg::wal::WalError> {
    let mut found = None;
    dec.decode_slice(input, |rec| {
        if found.is_none() && rec.lsn >= from {
            if let Some(time) = record_matches(target, &rec) {
                found = Some((rec.lsn, time));
            }
        }
    })
    .map(|()| found)
}

/// Decodes the archived WAL along `path` from `from` on and returns the first record that is
/// `target` (see [`record_matches`]), or `None` when the archived WAL on the path has none.
/// Decoding stops at the first match, so a target shortly after `from` costs little.
pub async fn first_on_path(
    cluster: &ClusterRepo,
    wal: &WalIndex,
    path: &[PathStep],
    from: Lsn,
    target: &RecoveryTarget,
) -> Result<Option<LocatedTarget>, RestoreError> {
    let size = wal.seg_size();
    let mut dec = WalDecoder::new();
    let segments = path_segments(path, wal);
    let count = segments.len();
    for (i, (tli, segno)) in segments.into_iter().enumerate() {
        let name = WalFileName::segment(tli, segno, size);
        let Some(bytes) = cluster.get_wal(&name).await? else {
            // Removed since the index was built: the archive ends here for this search.
            break;
        };
        let mut found = scan(&mut dec, &bytes, from, target);
        if i + 1 == count && matches!(found, Ok(None)) {
            // The last segment: a record it holds completely is decoded only once the decoder
            // knows no more input comes.
            dec.finish();
            found = scan(&mut dec, &[], from, target);
        }
        match found {
            Ok(Some((lsn, time))) => {
                let tli = step_tli(path, lsn).unwrap_or(tli);
                return Ok(Some(LocatedTarget { lsn, tli, time }));
            }
            Ok(None) if dec.end().is_none() => {}
            Ok(None) => break,
            Err(e) => {
                // Invalid WAL where the archive should continue: recovery ends there too.
                tracing::warn!("decoding {name} to locate {target}: {e}");
                break;
            }
        }
    }
    Ok(None)
}

/// The last commit or abort in the archived WAL along `path` (at or after `from`), found by
/// decoding segments from the end backwards: a time target after it is never reached, since
/// PostgreSQL stops only before a transaction that ends after the target time.
pub async fn last_transaction_on_path(
    cluster: &ClusterRepo,
    wal: &WalIndex,
    path: &[PathStep],
    from: Lsn,
) -> Result<Option<LocatedTarget>, RestoreError> {
    let size = wal.seg_size();
    let segments = path_segments(path, wal);
    // The segment after the one examined, already fetched: a record that starts in one segment
    // and ends in the next is decoded only when both are fed.
    let mut next: Option<Vec<u8>> = None;
    for &(tli, segno) in segments.iter().rev() {
        let name = WalFileName::segment(tli, segno, size);
        let Some(bytes) = cluster.get_wal(&name).await? else {
            break;
        };
        let mut dec = WalDecoder::new();
        let mut last = None;
        let mut on_record = |rec: Record<'_>| {
            if rec.lsn < from {
                return;
            }
            if let Ok(RecordKind::Commit(e) | RecordKind::Abort(e)) = rec.kind() {
                last = Some((rec.lsn, e.time));
            }
        };
        let mut fed = dec.decode_slice(&bytes, &mut on_record);
        if let (Ok(()), Some(n)) = (&fed, &next) {
            fed = dec.decode_slice(n, &mut on_record);
        }
        dec.finish();
        let _ = dec.decode_slice(&[], &mut on_record);
        if let Err(e) = fed {
            tracing::warn!("decoding {name} for its last transaction: {e}");
        }
        if let Some((lsn, t)) = last {
            let tli = step_tli(path, lsn).unwrap_or(tli);
            let time = Timestamp::from_microsecond(t.to_unix_micros()).ok();
            return Ok(Some(LocatedTarget { lsn, tli, time }));
        }
        if size.start_of(segno).is_some_and(|start| start <= from) {
            break;
        }
        next = Some(bytes);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitr_pg::{TimelineHistory, WalSegSize};

    #[test]
    fn path_segments_switch_timelines_at_the_switchpoint_segment_and_stop_at_a_gap() {
        let mut w = WalIndex::new(WalSegSize::new(16 << 20).unwrap());
        for s in 2..=6 {
            w.add_segment(TimelineId(1), SegNo(s));
        }
        w.add_history(TimelineHistory::parse(TimelineId(2), b"1\t0/4000100\tx\n").unwrap());
        for s in [4, 5, 7] {
            w.add_segment(TimelineId(2), SegNo(s));
        }
        let path = vec![
            PathStep {
                tli: TimelineId(1),
                from: "0/2000028".parse().unwrap(),
                until: Some("0/4000100".parse().unwrap()),
            },
            PathStep {
                tli: TimelineId(2),
                from: "0/4000100".parse().unwrap(),
                until: None,
            },
        ];
        assert_eq!(
            path_segments(&path, &w),
            vec![
                (TimelineId(1), SegNo(2)),
                (TimelineId(1), SegNo(3)),
                (TimelineId(2), SegNo(4)),
                (TimelineId(2), SegNo(5)),
            ]
        );
    }
}
