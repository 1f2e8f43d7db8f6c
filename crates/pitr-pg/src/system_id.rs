//! Database system identifiers.

use std::fmt;
use std::str::FromStr;

/// A cluster's system identifier (`pg_control`'s `system_identifier`, `IDENTIFY_SYSTEM`'s
/// `systemid`, the long WAL page header): set once by initdb and kept by every copy, so WAL
/// and backups of different clusters are never mixed. Printed as the unsigned decimal
/// PostgreSQL's tools print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemId(pub u64);

/// Why a string is not a system identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid system identifier {input:?}: expected an unsigned decimal number")]
pub struct ParseSystemIdError {
    /// The rejected text.
    pub input: String,
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SystemId {
    type Err = ParseSystemIdError;

    /// Accepts the unsigned decimal of `pg_controldata` and `IDENTIFY_SYSTEM`, and the
    /// signed form of `pg_control_system()` (a `bigint` that wraps above 2^63).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let err = || ParseSystemIdError {
            input: s.to_string(),
        };
        if t.starts_with('-') {
            return t
                .parse::<i64>()
                .map(|v| SystemId(v as u64))
                .map_err(|_| err());
        }
        t.parse::<u64>().map(SystemId).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_the_signed_sql_form() {
        let id: SystemId = "7312345678901234567".parse().unwrap();
        assert_eq!(id.to_string(), "7312345678901234567");
        assert_eq!("-1".parse::<SystemId>().unwrap(), SystemId(u64::MAX));
        assert!("".parse::<SystemId>().is_err());
        assert!("12a".parse::<SystemId>().is_err());
        assert!("18446744073709551616".parse::<SystemId>().is_err());
    }
}
