//! Timeline history files (`TTTTTTTT.history`).
//!
//! Each non-comment line is `parentTLI<TAB>switchpoint<TAB>reason`: the parent timeline and the
//! LSN at which the history left it. The file for timeline N lists every ancestor, oldest first.
//!
//! Switchpoints need not increase. A point-in-time recovery that follows timeline 2's history
//! but stops on timeline 1, before timeline 2 branched off, writes for timeline 3
//! `1 0/700000` then `2 0/602868`: timeline 2 contributes nothing to timeline 3, and timeline 1
//! ends at 0/602868. PostgreSQL only checks that parent timelines increase
//! (`readTimeLineHistory`) and decides which timeline a position is on newest first
//! (`tliOfPointInHistory`); this module does the same.

use crate::{Lsn, TimelineId};

/// One line of a history file: `parent` was left at `switchpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub parent: TimelineId,
    /// First LSN that is no longer on `parent` (the end of `parent` on this history).
    pub switchpoint: Lsn,
    /// Free text PostgreSQL writes (e.g. "no recovery target specified").
    pub reason: String,
}

/// The whole ancestry of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The timeline this history leads to.
    pub timeline: TimelineId,
    /// Ancestors, oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// A history file that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A line is not `parent<TAB>lsn<TAB>reason`.
    #[error("timeline history for timeline {timeline}: line {line} is malformed: {text:?}")]
    Malformed {
        /// The timeline of the file.
        timeline: TimelineId,
        /// 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
    },
    /// Parents do not increase, or a parent is not older than the timeline.
    #[error("timeline history for timeline {timeline}: entries are out of order at line {line}")]
    OutOfOrder {
        /// The timeline of the file.
        timeline: TimelineId,
        /// 1-based line number.
        line: usize,
    },
    /// Not valid UTF-8.
    #[error("timeline history for timeline {0} is not text")]
    NotText(TimelineId),
}

impl TimelineHistory {
    /// The trivial history of timeline 1 (or any timeline without a history file).
    pub fn root(timeline: TimelineId) -> TimelineHistory {
        TimelineHistory {
            timeline,
            entries: Vec::new(),
        }
    }

    /// Parses the content of `<timeline>.history`.
    pub fn parse(timeline: TimelineId, bytes: &[u8]) -> Result<TimelineHistory, HistoryError> {
        let text = std::str::from_utf8(bytes).map_err(|_| HistoryError::NotText(timeline))?;
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || HistoryError::Malformed {
                timeline,
                line: i + 1,
                text: raw.to_string(),
            };
            let mut fields = line.splitn(3, |c: char| c.is_ascii_whitespace());
            let parent: u32 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(malformed)?;
            let switchpoint: Lsn = fields
                .next()
                .map(str::trim)
                .and_then(|f| f.parse().ok())
                .ok_or_else(malformed)?;
            let reason = fields.next().unwrap_or("").trim().to_string();
            if let Some(prev) = entries.last() {
                if parent <= prev.parent.0 {
                    return Err(HistoryError::OutOfOrder {
                        timeline,
                        line: i + 1,
                    });
                }
            }
            if parent == 0 || parent >= timeline.0 {
                return Err(HistoryError::OutOfOrder {
                    timeline,
                    line: i + 1,
                });
            }
            entries.push(HistoryEntry {
                parent: TimelineId(parent),
                switchpoint,
                reason,
            });
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// The timeline this history was on at `lsn` (switchpoints belong to the child), decided
    /// newest first as PostgreSQL's `tliOfPointInHistory` does.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        if self.entries.last().is_none_or(|e| lsn >= e.switchpoint) {
            return self.timeline;
        }
        for (i, e) in self.entries.iter().enumerate().rev() {
            let begin = self.begin_before(i);
            if begin <= lsn && lsn < e.switchpoint {
                return e.parent;
            }
        }
        self.entries.first().map_or(self.timeline, |e| e.parent)
    }

    /// Where `tli` ends on this history: `Some(lsn)` for an ancestor (its switchpoint, or a
    /// later line's smaller switchpoint), `None` (no end) for the timeline itself; `Err(())`
    /// when `tli` is not on this history at all.
    #[allow(clippy::result_unit_err)]
    pub fn end_of(&self, tli: TimelineId) -> Result<Option<Lsn>, ()> {
        if tli == self.timeline {
            return Ok(None);
        }
        let idx = self
            .entries
            .iter()
            .position(|e| e.parent == tli)
            .ok_or(())?;
        Ok(self.entries.iter().skip(idx).map(|e| e.switchpoint).min())
    }

    /// Where `tli` begins on this history (the previous ancestor's end), `Lsn::INVALID` for
    /// the oldest; `None` when `tli` is not on this history. A timeline whose begin is not
    /// before its end contributes no WAL.
    pub fn begin_of(&self, tli: TimelineId) -> Option<Lsn> {
        if tli == self.timeline {
            return Some(self.entries.last().map_or(Lsn::INVALID, |e| e.switchpoint));
        }
        let idx = self.entries.iter().position(|e| e.parent == tli)?;
        Some(self.begin_before(idx))
    }

    /// Where the timeline of entry `idx` began: the previous entry's switchpoint,
    /// `Lsn::INVALID` for the first.
    fn begin_before(&self, idx: usize) -> Lsn {
        idx.checked_sub(1)
            .and_then(|p| self.entries.get(p))
            .map_or(Lsn::INVALID, |e| e.switchpoint)
    }

    /// True when `tli` is this timeline or one of its ancestors.
    pub fn contains(&self, tli: TimelineId) -> bool {
        self.end_of(tli).is_ok()
    }

    /// True when the position (`tli`, `lsn`) lies on this history: WAL written on `tli` at
    /// `lsn` is part of the path that leads to this timeline.
    pub fn includes_point(&self, tli: TimelineId, lsn: Lsn) -> bool {
        match self.end_of(tli) {
            Ok(None) => true,
            Ok(Some(end)) => lsn <= end,
            Err(()) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2025-07-10 12:36:52.242927-07\n";

    #[test]
    fn parses_a_real_shaped_history() {
        let h = TimelineHistory::parse(TimelineId(3), THREE.as_bytes()).unwrap();
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[0].parent, TimelineId(1));
        assert_eq!(h.entries[0].switchpoint, "0/3000158".parse().unwrap());
        assert_eq!(h.entries[1].reason, "before 2025-07-10 12:36:52.242927-07");
        assert_eq!(h.timeline_at(Lsn(0x100)), TimelineId(1));
        assert_eq!(h.timeline_at(Lsn(0x300_0158)), TimelineId(2));
        assert_eq!(h.timeline_at(Lsn(0x600_0000)), TimelineId(3));
        assert!(h.includes_point(TimelineId(1), Lsn(0x300_0000)));
        assert!(!h.includes_point(TimelineId(1), Lsn(0x400_0000)));
        assert!(h.includes_point(TimelineId(3), Lsn(u64::MAX)));
        assert!(!h.contains(TimelineId(4)));
    }

    /// Written by PostgreSQL 17 after a recovery that followed timeline 2 (recovery_target_timeline
    /// = latest) but stopped at 0/602828 on timeline 1, before timeline 2 branched off.
    const STOPPED_BEFORE_FORK: &str =
        "1\t0/700000\tno recovery target specified\n\n2\t0/602868\tafter LSN 0/602828\n";

    #[test]
    fn accepts_switchpoints_that_go_back_as_postgres_writes_them() {
        let h = TimelineHistory::parse(TimelineId(3), STOPPED_BEFORE_FORK.as_bytes()).unwrap();
        assert_eq!(h.entries.len(), 2);
        let sp = |s: &str| s.parse::<Lsn>().unwrap();
        assert_eq!(h.timeline_at(sp("0/602000")), TimelineId(1));
        assert_eq!(h.timeline_at(sp("0/602868")), TimelineId(3));
        assert_eq!(h.timeline_at(sp("0/650000")), TimelineId(3));
        // Timeline 1 ends where timeline 3 began; timeline 2 contributes nothing.
        assert_eq!(h.end_of(TimelineId(1)), Ok(Some(sp("0/602868"))));
        assert_eq!(h.end_of(TimelineId(2)), Ok(Some(sp("0/602868"))));
        assert_eq!(h.begin_of(TimelineId(2)), Some(sp("0/700000")));
        assert_eq!(h.begin_of(TimelineId(3)), Some(sp("0/602868")));
        assert!(h.includes_point(TimelineId(1), sp("0/602000")));
        assert!(!h.includes_point(TimelineId(1), sp("0/650000")));
    }

    #[test]
    fn rejects_malformed_and_unordered_histories() {
        assert!(TimelineHistory::parse(TimelineId(2), b"x\t0/1\tr\n").is_err());
        assert!(TimelineHistory::parse(TimelineId(2), b"1\tnope\tr\n").is_err());
        assert!(TimelineHistory::parse(TimelineId(3), b"2\t0/5\t\n1\t0/6\t\n").is_err());
        assert!(TimelineHistory::parse(TimelineId(2), b"2\t0/5\t\n").is_err());
        assert!(TimelineHistory::parse(TimelineId(2), &[0xff, 0xfe]).is_err());
        let comments = TimelineHistory::parse(TimelineId(2), b"# comment\n1\t0/10\n").unwrap();
        assert_eq!(comments.entries.len(), 1);
    }
}
