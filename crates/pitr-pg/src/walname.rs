//! The names of files PostgreSQL archives: segments, partial segments, timeline history files
//! and backup history files.

use std::fmt;

use crate::{SegNo, TimelineId, WalSegSize};

/// A parsed archive file name. Segment numbers are kept as the two 8-hex-digit halves of the
/// name because turning them into a [`SegNo`] needs the segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFileName {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a complete WAL segment.
    Segment {
        /// Timeline.
        tli: TimelineId,
        /// High part (`log`).
        log: u32,
        /// Low part (`seg`).
        seg: u32,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`: the last, incomplete segment of a timeline.
    Partial {
        /// Timeline.
        tli: TimelineId,
        /// High part.
        log: u32,
        /// Low part.
        seg: u32,
    },
    /// `TTTTTTTT.history`: timeline history file.
    History {
        /// The timeline this history leads to.
        tli: TimelineId,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`: backup history file.
    Backup {
        /// Timeline.
        tli: TimelineId,
        /// High part.
        log: u32,
        /// Low part.
        seg: u32,
        /// Offset of the backup start inside the segment.
        offset: u32,
    },
}

/// A name that is not a PostgreSQL archive file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a WAL file name: expected a 24-hex-digit segment (optionally .partial), TTTTTTTT.history or a .backup file")]
pub struct ParseWalNameError {
    /// The rejected name.
    pub input: String,
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn segment_parts(s: &str) -> Option<(TimelineId, u32, u32)> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    let tli = hex8(s.get(0..8)?).filter(|t| *t != 0)?;
    Some((TimelineId(tli), hex8(s.get(8..16)?)?, hex8(s.get(16..24)?)?))
}

impl WalFileName {
    /// Parses a file name as PostgreSQL writes it (upper-case hex).
    pub fn parse(name: &str) -> Result<WalFileName, ParseWalNameError> {
        let err = || ParseWalNameError {
            input: name.to_string(),
        };
        if !name.is_ascii() {
            return Err(err());
        }
        if let Some((tli, log, seg)) = segment_parts(name) {
            return Ok(WalFileName::Segment { tli, log, seg });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (tli, log, seg) = segment_parts(base).ok_or_else(err)?;
            return Ok(WalFileName::Partial { tli, log, seg });
        }
        if let Some(base) = name.strip_suffix(".history") {
            let tli = hex8(base).filter(|t| *t != 0).ok_or_else(err)?;
            return Ok(WalFileName::History {
                tli: TimelineId(tli),
            });
        }
        if let Some(base) = name.strip_suffix(".backup") {
            // <segment name>.<start offset, 8 hex digits>
            let (segment, offset) = base.split_at_checked(24).ok_or_else(err)?;
            let offset = offset.strip_prefix('.').ok_or_else(err)?;
            let (tli, log, seg) = segment_parts(segment).ok_or_else(err)?;
            let offset = hex8(offset).ok_or_else(err)?;
            return Ok(WalFileName::Backup {
                tli,
                log,
                seg,
                offset,
            });
        }
        Err(err())
    }

    /// A segment's name.
    pub fn segment(tli: TimelineId, segno: SegNo, seg_size: WalSegSize) -> WalFileName {
        let per = seg_size.segments_per_xlogid();
        WalFileName::Segment {
            tli,
            log: (segno.0 / per) as u32,
            seg: (segno.0 % per) as u32,
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> TimelineId {
        match *self {
            WalFileName::Segment { tli, .. }
            | WalFileName::Partial { tli, .. }
            | WalFileName::History { tli }
            | WalFileName::Backup { tli, .. } => tli,
        }
    }

    /// The segment number for segments, partial segments and backup files, given the segment
    /// size; `None` for history files or a name impossible for that size.
    pub fn segno(&self, seg_size: WalSegSize) -> Option<SegNo> {
        let (log, seg) = match *self {
            WalFileName::Segment { log, seg, .. }
            | WalFileName::Partial { log, seg, .. }
            | WalFileName::Backup { log, seg, .. } => (log, seg),
            WalFileName::History { .. } => return None,
        };
        let per = seg_size.segments_per_xlogid();
        if u64::from(seg) >= per {
            return None;
        }
        Some(SegNo(u64::from(log) * per + u64::from(seg)))
    }

    /// True for files whose content is WAL pages (segments and partial segments).
    pub fn holds_wal(&self) -> bool {
        matches!(
            self,
            WalFileName::Segment { .. } | WalFileName::Partial { .. }
        )
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalFileName::Segment { tli, log, seg } => write!(f, "{:08X}{log:08X}{seg:08X}", tli.0),
            WalFileName::Partial { tli, log, seg } => {
                write!(f, "{:08X}{log:08X}{seg:08X}.partial", tli.0)
            }
            WalFileName::History { tli } => write!(f, "{:08X}.history", tli.0),
            WalFileName::Backup {
                tli,
                log,
                seg,
                offset,
            } => write!(f, "{:08X}{log:08X}{seg:08X}.{offset:08X}.backup", tli.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_of_name() {
        for name in [
            "000000010000000000000001",
            "0000000200000001000000FF.partial",
            "0000000A.history",
            "000000010000000000000002.00000028.backup",
        ] {
            let parsed = WalFileName::parse(name).unwrap();
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn rejects_other_names() {
        for bad in [
            "",
            "00000001000000000000001",
            "0000000100000000000000010",
            "000000010000000000000001.gz",
            "00000000.history",
            "000000000000000000000001",
            "0000000100000000000000zz",
            "000000010000000000000001.0000002.backup",
            "archive_status",
            "0000000a.history",
            "ééééééééééééééééééééééééé",
        ] {
            assert!(
                WalFileName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn computes_segment_numbers_for_the_segment_size() {
        let n = WalFileName::parse("000000010000000100000002").unwrap();
        assert_eq!(
            n.segno(WalSegSize::new(16 << 20).unwrap()),
            Some(SegNo(258))
        );
        assert_eq!(n.segno(WalSegSize::new(1 << 30).unwrap()), Some(SegNo(6)));
        let impossible = WalFileName::parse("0000000100000000000000FF").unwrap();
        assert_eq!(impossible.segno(WalSegSize::new(1 << 30).unwrap()), None);
        let s64 = WalSegSize::new(64 << 20).unwrap();
        assert_eq!(
            WalFileName::segment(TimelineId(1), SegNo(65), s64).to_string(),
            "000000010000000100000001"
        );
    }
}
