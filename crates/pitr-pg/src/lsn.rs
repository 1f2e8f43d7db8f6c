//! Log sequence numbers: byte positions in the WAL stream.

use std::fmt;
use std::str::FromStr;

/// A WAL position, printed and parsed in PostgreSQL's `X/X` notation (e.g. `0/4031F10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: expected two hexadecimal numbers separated by '/', e.g. 0/4031F10")]
pub struct ParseLsnError {
    /// The rejected text.
    pub input: String,
}

impl Lsn {
    /// The invalid LSN PostgreSQL uses as "none" (`0/0`).
    pub const INVALID: Lsn = Lsn(0);

    /// The LSN `n` bytes later, or `None` on overflow.
    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
    }

    /// Offset of this LSN inside its segment of `seg_size` bytes.
    pub fn segment_offset(self, seg_size: crate::WalSegSize) -> u64 {
        self.0 & (seg_size.bytes() - 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            input: s.to_string(),
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let valid =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid(hi) || !valid(lo) {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_postgres_notation() {
        let lsn: Lsn = "0/4031F10".parse().unwrap();
        assert_eq!(lsn, Lsn(0x0403_1F10));
        assert_eq!(lsn.to_string(), "0/4031F10");
        let big = Lsn(0x1_0000_00A0);
        assert_eq!(big.to_string(), "1/A0");
        assert_eq!("1/a0".parse::<Lsn>().unwrap(), big);
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
    }

    #[test]
    fn rejects_malformed_lsns() {
        for bad in [
            "",
            "0",
            "/",
            "0/",
            "/1",
            "g/1",
            "1/1/1",
            "123456789/0",
            "+1/0",
            "-1/0",
            "0/ 1",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should be rejected");
        }
    }
}
