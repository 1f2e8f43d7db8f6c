//! Timeline identifiers.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL timeline ID (`TimeLineID`, 1 for a fresh cluster, +1 at every promotion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

/// Why a string is not a timeline ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timeline {input:?}: expected a positive number (decimal, or 8 hex digits as in WAL file names)")]
pub struct ParseTimelineError {
    /// The rejected text.
    pub input: String,
}

impl TimelineId {
    /// Parses the 8 hexadecimal digits used in WAL and history file names.
    pub fn from_hex8(s: &str) -> Option<TimelineId> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match u32::from_str_radix(s, 16) {
            Ok(0) | Err(_) => None,
            Ok(v) => Some(TimelineId(v)),
        }
    }

    /// The 8 upper-case hexadecimal digits of WAL file names.
    pub fn hex8(self) -> String {
        format!("{:08X}", self.0)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TimelineId {
    type Err = ParseTimelineError;

    /// Accepts decimal (`2`, as PostgreSQL settings do) or the 8-hex-digit file-name form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(t) = TimelineId::from_hex8(s) {
            return Ok(t);
        }
        match s.parse::<u32>() {
            Ok(v) if v > 0 => Ok(TimelineId(v)),
            _ => Err(ParseTimelineError {
                input: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_file_name_forms() {
        assert_eq!("2".parse::<TimelineId>().unwrap(), TimelineId(2));
        assert_eq!("0000000A".parse::<TimelineId>().unwrap(), TimelineId(10));
        assert_eq!(TimelineId(10).hex8(), "0000000A");
        assert!("0".parse::<TimelineId>().is_err());
        assert!("x".parse::<TimelineId>().is_err());
        assert!(TimelineId::from_hex8("00000000").is_none());
    }
}
