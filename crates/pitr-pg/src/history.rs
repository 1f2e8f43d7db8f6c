//! Timeline history files (`TTTTTTTT.history`).
//!
//! Each non-comment line is `parentTLI<TAB>switchpoint<TAB>reason`: the parent timeline and the
//! LSN at which the history left it. The file for timeline N lists every ancestor, oldest first.

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
    /// Parents or switchpoints do not increase, or a parent is not older than the timeline.
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
                if parent <= prev.parent.0 || switchpoint < prev.switchpoint {
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

    /// The timeline this history was on at `lsn` (switchpoints belong to the child).
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.entries
            .iter()
            .find(|e| lsn < e.switchpoint)
            .map(|e| e.parent)
            .unwrap_or(self.timeline)
    }

    /// Where `tli` ends on this history: `Some(switchpoint)` for an ancestor, `None` (no end) for
    /// the timeline itself; `Err(())` when `tli` is not on this history at all.
    #[allow(clippy::result_unit_err)]
    pub fn end_of(&self, tli: TimelineId) -> Result<Option<Lsn>, ()> {
        if tli == self.timeline {
            return Ok(None);
        }
        self.entries
            .iter()
            .find(|e| e.parent == tli)
            .map(|e| Some(e.switchpoint))
            .ok_or(())
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
