//! What to scan: the range (`--from` / `--to`) and the timeline.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use pitr_pg::{Lsn, TimelineId, WalFileName};

use super::WalScanError;
use crate::restore::target::{parse_time, TargetError};

/// One end of the range: `--from` / `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A WAL position.
    Lsn(Lsn),
    /// A segment: from its first byte (`--from`) or through its last byte (`--to`).
    Segment(WalFileName),
    /// A time: transactions, restore points and checkpoints from (or up to) it.
    Time(Timestamp),
}

impl Bound {
    /// Parses a segment name, an LSN or a time, in that order; `flag` names the option in
    /// errors.
    pub fn parse(flag: &'static str, s: &str) -> Result<Bound, WalScanError> {
        let t = s.trim();
        if t.len() == 24 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(n @ WalFileName::Segment { .. }) = WalFileName::parse(&t.to_uppercase()) {
                return Ok(Bound::Segment(n));
            }
        }
        if t.contains('/') && !t.contains(' ') && !t.contains('[') {
            return t.parse().map(Bound::Lsn).map_err(|_| WalScanError::Bound {
                flag,
                input: s.to_string(),
                reason: "not an LSN".into(),
            });
        }
        parse_time(t)
            .map(|tt| Bound::Time(tt.at))
            .map_err(|e| WalScanError::Bound {
                flag,
                input: s.to_string(),
                reason: match e {
                    TargetError::Time { reason, .. } => reason,
                    other => other.to_string(),
                },
            })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Lsn(l) => write!(f, "{l}"),
            Bound::Segment(s) => write!(f, "{s}"),
            Bound::Time(t) => write!(f, "{t}"),
        }
    }
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Start of the range (default: the oldest archived WAL).
    pub from: Option<Bound>,
    /// End of the range (default: the end of archived WAL).
    pub to: Option<Bound>,
    /// Timeline to follow (default: the newest archived).
    pub timeline: Option<TimelineId>,
    /// Report only transactions that may be incidents (with this row threshold), not every
    /// transaction, restore point and checkpoint: keeps memory and time small on big ranges.
    pub incidents_only: Option<u64>,
}

impl FromStr for Bound {
    type Err = WalScanError;
    fn from_str(s: &str) -> Result<Bound, WalScanError> {
        Bound::parse("bound", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_segments_lsns_and_times() {
        assert_eq!(
            Bound::parse("--from", "000000010000000000000004").unwrap(),
            Bound::Segment(WalFileName::parse("000000010000000000000004").unwrap())
        );
        assert_eq!(
            Bound::parse("--from", "0/4031F10").unwrap(),
            Bound::Lsn(Lsn(0x4031F10))
        );
        match Bound::parse("--to", "2025-07-10 12:36:52.242927-07").unwrap() {
            Bound::Time(t) => assert_eq!(t.to_string(), "2025-07-10T19:36:52.242927Z"),
            other => panic!("{other:?}"),
        }
        let e = Bound::parse("--to", "yesterday-ish").unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--to"), "{e}");
        assert!(Bound::parse("--from", "0/XYZ").is_err());
    }
}
