//! Progress of `restore --start`'s replay: the WAL segments the restored server fetched through
//! `restore_command` (its `restored log file "…" from archive` log lines), against the WAL from
//! the backup's start to the target (or the end of archived WAL), reported through
//! [`Progress`] as segments and bytes of WAL.

use std::path::Path;
use std::sync::Arc;

use pitr_pg::walname::WalFileName;
use pitr_pg::{Lsn, WalSegSize};

use crate::progress::Progress;

/// What to measure replay against: WAL from `from` (the backup's start) to `to` (the target's
/// LSN when known, else the end of archived WAL), and where to report it.
#[derive(Clone)]
pub struct ReplayProgress {
    /// Where replay starts (the backup's start LSN).
    pub from: Lsn,
    /// Where it is expected to end.
    pub to: Lsn,
    /// The reporter.
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for ReplayProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayProgress")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Turns the name of each segment restored into progress: bytes up to the end of that segment
/// (capped at `to`), one "file" per segment.
pub(super) struct ReplayTracker {
    goal: ReplayProgress,
    seg_size: WalSegSize,
    last: Option<String>,
    done: u64,
    segments: u64,
    segments_done: u64,
}

impl ReplayTracker {
    /// A tracker for the restored `pgdata` (its `pg_control` gives the segment size); `None`
    /// when that cannot be read, as progress is a nicety and never a reason to fail.
    pub(super) fn new(goal: ReplayProgress, pgdata: &Path) -> Option<ReplayTracker> {
        let bytes = std::fs::read(pgdata.join("global/pg_control")).ok()?;
        let seg_size = pitr_pg::control::ControlFile::parse(&bytes)
            .ok()?
            .wal_seg_size;
        let total = goal.to.0.saturating_sub(goal.from.0);
        // The segments holding the bytes from..to (`to` itself is the first byte not needed).
        let segments = if total == 0 {
            0
        } else {
            seg_size.segno_of(Lsn(goal.to.0 - 1)).0 - seg_size.segno_of(goal.from).0 + 1
        };
        goal.progress.start(segments, total);
        Some(ReplayTracker {
            goal,
            seg_size,
            last: None,
            done: 0,
            segments,
            segments_done: 0,
        })
    }

    /// Called with the last segment the server restored so far and how many it restored.
    pub(super) fn update(&mut self, last_restored: Option<&str>, restored: u64) {
        let Some(name) = last_restored else { return };
        if self.last.as_deref() == Some(name) {
            return;
        }
        self.last = Some(name.to_string());
        let end = WalFileName::parse(name)
            .ok()
            .and_then(|n| n.segno(self.seg_size))
            .and_then(|s| self.seg_size.start_of(s.next()));
        if let Some(end) = end {
            let reached = end.0.min(self.goal.to.0).saturating_sub(self.goal.from.0);
            if reached > self.done {
                self.goal.progress.advance(reached - self.done);
                self.done = reached;
            }
        }
        // A server may fetch a segment past the span (looking for more WAL): not counted.
        while self.segments_done < restored.min(self.segments) {
            self.segments_done += 1;
            self.goal.progress.file_done();
        }
    }

    /// Recovery ended.
    pub(super) fn finish(&self) {
        self.goal.progress.finish();
    }
}

/// The WAL a restore of `plan` to `target` replays: from the backup's start to the target's LSN
/// (an LSN target, or a name/xid target located in the archive), to the backup's end for
/// `immediate`, else to the end of archived WAL on the path; `None` when the backup's start
/// cannot be read.
pub fn replay_span(
    plan: &super::RestorePlan,
    target: &super::RecoveryTarget,
) -> Option<(Lsn, Lsn)> {
    use super::RecoveryTarget as T;
    let from: Lsn = plan.backup.start_lsn.parse().ok()?;
    let to = match (target, &plan.located) {
        (T::Lsn(l), _) => *l,
        (_, Some(located)) => located.lsn,
        (T::Immediate, _) => plan.backup.stop_lsn.parse().ok()?,
        _ => plan.choice.wal_end,
    };
    Some((from, to.max(from)))
}
