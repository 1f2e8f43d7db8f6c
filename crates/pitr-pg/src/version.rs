//! PostgreSQL major versions pitr supports, and what differs between them.

use std::fmt;

/// A supported PostgreSQL major version (14 to 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgMajor(u32);

/// Per-version facts, one row per supported major version.
#[derive(Debug, Clone, Copy)]
pub struct VersionInfo {
    /// Major version number.
    pub major: u32,
    /// `XLOG_PAGE_MAGIC`: the first two bytes of every WAL page.
    pub wal_page_magic: u16,
}

/// PostgreSQL 14's row of [`VERSIONS`].
const PG14: VersionInfo = VersionInfo {
    major: 14,
    wal_page_magic: 0xD10D,
};

/// The table of supported versions; checked on real servers (see PG-FACTS.md).
pub const VERSIONS: &[VersionInfo] = &[
    PG14,
    VersionInfo {
        major: 15,
        wal_page_magic: 0xD110,
    },
    VersionInfo {
        major: 16,
        wal_page_magic: 0xD113,
    },
    VersionInfo {
        major: 17,
        wal_page_magic: 0xD116,
    },
    VersionInfo {
        major: 18,
        wal_page_magic: 0xD118,
    },
];

/// A version outside 14–18.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported PostgreSQL major version {0}: pitr supports 14 to 18")]
pub struct UnsupportedVersion(pub u32);

impl PgMajor {
    /// The version for a major number, if supported.
    pub fn new(major: u32) -> Result<PgMajor, UnsupportedVersion> {
        VERSIONS
            .iter()
            .find(|v| v.major == major)
            .map(|v| PgMajor(v.major))
            .ok_or(UnsupportedVersion(major))
    }

    /// The version whose WAL pages start with `magic`, if supported.
    pub fn from_wal_magic(magic: u16) -> Option<PgMajor> {
        VERSIONS
            .iter()
            .find(|v| v.wal_page_magic == magic)
            .map(|v| PgMajor(v.major))
    }

    /// Parses `server_version_num` (e.g. 150004) or a version string such as `15.4` / `17beta1`.
    pub fn from_server_version(s: &str) -> Result<PgMajor, UnsupportedVersion> {
        let s = s.trim();
        if let Ok(num) = s.parse::<u32>() {
            return PgMajor::new(if num >= 100_000 { num / 10_000 } else { num });
        }
        let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        PgMajor::new(digits.parse().unwrap_or(0))
    }

    /// The major version number.
    pub fn number(self) -> u32 {
        self.0
    }

    /// This version's row of [`VERSIONS`].
    pub fn info(self) -> &'static VersionInfo {
        // PgMajor is only constructed from a row of VERSIONS.
        VERSIONS.iter().find(|v| v.major == self.0).unwrap_or(&PG14)
    }
}

impl fmt::Display for PgMajor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_page_magic_to_versions() {
        assert_eq!(PgMajor::from_wal_magic(0xD10D).unwrap().number(), 14);
        assert_eq!(PgMajor::from_wal_magic(0xD118).unwrap().number(), 18);
        assert!(PgMajor::from_wal_magic(0xD106).is_none());
        assert_eq!(PgMajor::new(17).unwrap().info().wal_page_magic, 0xD116);
    }

    #[test]
    fn parses_server_versions() {
        assert_eq!(PgMajor::from_server_version("150004").unwrap().number(), 15);
        assert_eq!(PgMajor::from_server_version("17.10").unwrap().number(), 17);
        assert_eq!(
            PgMajor::from_server_version("18beta1").unwrap().number(),
            18
        );
        assert_eq!(
            PgMajor::from_server_version("130000"),
            Err(UnsupportedVersion(13))
        );
    }
}
