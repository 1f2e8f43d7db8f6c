//! WAL segment sizes and segment numbers.

use std::fmt;

use crate::{Lsn, TimelineId};

/// The WAL segment size chosen at initdb: a power of two from 1 MB to 1 GB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalSegSize(u32);

/// A segment size PostgreSQL does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0} bytes: PostgreSQL allows powers of two from 1 MB to 1 GB")]
pub struct InvalidSegSize(pub u64);

impl WalSegSize {
    /// Smallest size PostgreSQL allows (1 MB).
    pub const MIN: u32 = 1 << 20;
    /// Largest size PostgreSQL allows (1 GB).
    pub const MAX: u32 = 1 << 30;

    /// Validates a size in bytes.
    pub fn new(bytes: u64) -> Result<WalSegSize, InvalidSegSize> {
        if bytes.is_power_of_two() && (u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&bytes)
        {
            Ok(WalSegSize(bytes as u32))
        } else {
            Err(InvalidSegSize(bytes))
        }
    }

    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per "xlogid" (the middle 8 hex digits of a file name): `0x1_0000_0000 / size`.
    pub fn segments_per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }

    /// The segment holding `lsn`.
    pub fn segno_of(self, lsn: Lsn) -> SegNo {
        SegNo(lsn.0 / self.bytes())
    }

    /// The first LSN of segment `segno` (`None` past the end of the LSN space).
    pub fn start_of(self, segno: SegNo) -> Option<Lsn> {
        segno.0.checked_mul(self.bytes()).map(Lsn)
    }
}

impl fmt::Display for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{}GB", self.0 >> 30)
        } else {
            write!(f, "{}MB", self.0 >> 20)
        }
    }
}

/// A WAL segment number (`XLogSegNo`): LSN divided by the segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegNo(pub u64);

impl SegNo {
    /// The next segment.
    pub fn next(self) -> SegNo {
        SegNo(self.0.saturating_add(1))
    }

    /// The 24-character file name of this segment on timeline `tli`.
    pub fn file_name(self, tli: TimelineId, seg_size: WalSegSize) -> String {
        let per = seg_size.segments_per_xlogid();
        format!("{:08X}{:08X}{:08X}", tli.0, self.0 / per, self.0 % per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_powers_of_two_between_1mb_and_1gb() {
        assert!(WalSegSize::new(16 << 20).is_ok());
        assert!(WalSegSize::new(1 << 20).is_ok());
        assert!(WalSegSize::new(1 << 30).is_ok());
        assert!(WalSegSize::new(1 << 19).is_err());
        assert!(WalSegSize::new(1 << 31).is_err());
        assert!(WalSegSize::new(3 << 20).is_err());
        assert!(WalSegSize::new(0).is_err());
    }

    #[test]
    fn names_segments_for_any_size() {
        let s16 = WalSegSize::new(16 << 20).unwrap();
        assert_eq!(
            SegNo(1).file_name(TimelineId(1), s16),
            "000000010000000000000001"
        );
        assert_eq!(
            SegNo(256).file_name(TimelineId(2), s16),
            "000000020000000100000000"
        );
        let s1 = WalSegSize::new(1 << 20).unwrap();
        assert_eq!(
            SegNo(4097).file_name(TimelineId(1), s1),
            "000000010000000100000001"
        );
        let s1g = WalSegSize::new(1 << 30).unwrap();
        assert_eq!(
            SegNo(5).file_name(TimelineId(3), s1g),
            "000000030000000100000001"
        );
        assert_eq!(s16.segno_of(Lsn(0x0403_1F10)), SegNo(4));
        assert_eq!(s16.start_of(SegNo(4)), Some(Lsn(0x0400_0000)));
    }
}
