//! The recovery window: from the oldest backup that can become consistent to the end of
//! archived WAL.

use std::collections::BTreeMap;

use jiff::Timestamp;
use pitr_pg::{Lsn, TimelineId};
use serde::Serialize;

use super::reach::{evaluate, newest_first, Whereabouts};
use super::{show_time, BackupPoint, Reach, WalIndex};
use crate::restore::target::TargetSpec;

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

pub(super) fn window(backups: &[&BackupPoint], reaches: &BTreeMap<String, Reach>) -> Window {
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
