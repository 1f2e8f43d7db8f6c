//! Timelines that `latest` leaves behind although they went on.
//!
//! `recovery_target_timeline = 'latest'` follows the newest timeline whose history file is
//! archived. When that timeline branched off a parent that carried on afterwards (production
//! kept writing on timeline 1 while a promoted test restore archived a timeline 2), `latest`
//! silently replays the branch and ignores everything the parent did after the branch point.
//! [`branch_warnings`] finds such parents, from the archive alone: WAL on the parent past the
//! segment holding the branch point, or a backup on the parent taken after it.

use std::collections::BTreeMap;

use pitr_pg::{Lsn, TimelineId};
use serde::Serialize;

use super::reach::{evaluate, newest_first, Whereabouts};
use super::window::window;
use super::{show_time, BackupPoint, WalIndex, Window};
use crate::restore::target::{TargetSpec, TimelineGoal};

/// `latest` resolves to a timeline that branched off one that went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BranchWarning {
    /// The timeline `latest` resolves to.
    pub latest: u32,
    /// The parent timeline that went on after the branch point.
    pub parent: u32,
    /// Where `latest` left the parent.
    pub branch_point: String,
    /// What shows the parent went on (archived WAL, backups).
    pub evidence: Vec<String>,
    /// What recovery following `latest` reaches.
    pub latest_reach: Window,
    /// What recovery following the parent reaches.
    pub parent_reach: Window,
    /// The option that follows the parent instead.
    pub flag: String,
    /// The whole warning, one paragraph.
    pub message: String,
}

/// The parents of `latest` (per its history) that went on after `latest` left them.
pub fn branch_warnings(
    backups: &[BackupPoint],
    wal: &WalIndex,
    latest: TimelineId,
) -> Vec<BranchWarning> {
    let Some(h) = wal.history(latest) else {
        return Vec::new();
    };
    let size = wal.seg_size();
    let mut out = Vec::new();
    for (k, e) in h.entries.iter().enumerate() {
        // As in `timeline_path`: a timeline ends at the smallest later switchpoint.
        let left = h.entries[k..]
            .iter()
            .map(|x| x.switchpoint)
            .min()
            .unwrap_or(Lsn(u64::MAX));
        let parent = e.parent;
        let mut evidence = Vec::new();
        let branch_seg = size.segno_of(left);
        if let Some(last) = wal
            .segments
            .get(&parent)
            .and_then(|s| s.range(branch_seg.next()..).next_back())
        {
            evidence.push(format!(
                "WAL archived on timeline {parent} up to {} (segment {}), past the branch point",
                size.start_of(last.next()).unwrap_or(Lsn(u64::MAX)),
                last.file_name(parent, size)
            ));
        }
        for b in newest_first(backups) {
            if b.tli == parent && b.start >= left {
                evidence.push(format!(
                    "backup {} was taken on timeline {parent} after the branch point (finished {})",
                    b.label,
                    show_time(b.stop_time)
                ));
            }
        }
        if evidence.is_empty() {
            continue;
        }
        let latest_reach = window_along(backups, wal, TimelineGoal::Latest);
        let parent_reach = window_along(backups, wal, TimelineGoal::Id(parent));
        let flag = format!("--target-timeline {parent}");
        let message = format!(
            "timeline {latest} (what 'latest' follows) branched off timeline {parent} at {left}, but timeline {parent} went on after it ({}): following timeline {latest}, {}; following timeline {parent}, {}\nhint: pass {flag} to recover timeline {parent}'s later changes; a restore made only to look at data should use --archive-mode off so that it never archives a new timeline",
            evidence.join("; "),
            reach_words(&latest_reach),
            reach_words(&parent_reach),
        );
        out.push(BranchWarning {
            latest: latest.0,
            parent: parent.0,
            branch_point: left.to_string(),
            evidence,
            latest_reach,
            parent_reach,
            flag,
            message,
        });
    }
    out
}

/// The window recovery reaches following `goal` from every backup.
fn window_along(backups: &[BackupPoint], wal: &WalIndex, goal: TimelineGoal) -> Window {
    let spec = TargetSpec {
        timeline: goal,
        ..TargetSpec::default()
    };
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

fn reach_words(w: &Window) -> String {
    match (&w.from, &w.to) {
        (Some(f), Some(t)) => format!(
            "recovery reaches from {} (backup {}) to {} on timeline {}",
            show_time(f.time),
            f.backup,
            t.lsn,
            t.timeline
        ),
        _ => "recovery reaches nothing (no backup has the WAL it needs)".to_string(),
    }
}
