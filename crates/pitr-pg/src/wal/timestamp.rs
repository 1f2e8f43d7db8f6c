//! PostgreSQL timestamps (`TimestampTz`): microseconds since 2000-01-01 00:00:00 UTC.

use std::fmt;

/// Seconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
const MICROS: i64 = 1_000_000;

/// A `TimestampTz` as stored in WAL (commit times, restore points): i64 microseconds since
/// 2000-01-01 00:00:00 UTC. Displayed like `pg_waldump` does with `TZ=UTC`:
/// `2024-05-01 10:00:00.123456 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// `DT_NOBEGIN` (`-infinity`).
    pub const NEG_INFINITY: PgTimestamp = PgTimestamp(i64::MIN);
    /// `DT_NOEND` (`infinity`).
    pub const INFINITY: PgTimestamp = PgTimestamp(i64::MAX);

    /// Microseconds since the Unix epoch (saturating).
    pub fn to_unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_UNIX_SECS * MICROS)
    }

    /// From microseconds since the Unix epoch (saturating).
    pub fn from_unix_micros(us: i64) -> PgTimestamp {
        PgTimestamp(us.saturating_sub(PG_EPOCH_UNIX_SECS * MICROS))
    }

    /// From seconds since the Unix epoch (`pg_time_t`, as in checkpoint records).
    pub fn from_unix_secs(secs: i64) -> PgTimestamp {
        PgTimestamp::from_unix_micros(secs.saturating_mul(MICROS))
    }
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PgTimestamp::NEG_INFINITY => return f.write_str("-infinity"),
            PgTimestamp::INFINITY => return f.write_str("infinity"),
            _ => {}
        }
        // i128 so that no i64 value can overflow.
        let us = i128::from(self.0) + i128::from(PG_EPOCH_UNIX_SECS) * i128::from(MICROS);
        let secs = us.div_euclid(i128::from(MICROS));
        let frac = us.rem_euclid(i128::from(MICROS));
        let days = secs.div_euclid(86_400) as i64;
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06} UTC",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_pg_waldump_in_utc() {
        assert_eq!(PgTimestamp(0).to_string(), "2000-01-01 00:00:00.000000 UTC");
        assert_eq!(
            PgTimestamp(-1).to_string(),
            "1999-12-31 23:59:59.999999 UTC"
        );
        // 2024-02-29 12:34:56.000789 UTC
        let t = PgTimestamp::from_unix_micros(1_709_210_096_000_789);
        assert_eq!(t.to_string(), "2024-02-29 12:34:56.000789 UTC");
        assert_eq!(t.to_unix_micros(), 1_709_210_096_000_789);
        assert_eq!(
            PgTimestamp::from_unix_secs(0).to_string(),
            "1970-01-01 00:00:00.000000 UTC"
        );
        assert_eq!(PgTimestamp::INFINITY.to_string(), "infinity");
        // Extreme values neither panic nor overflow.
        let _ = PgTimestamp(i64::MIN + 1).to_string();
        let _ = PgTimestamp(i64::MAX - 1).to_string();
    }
}
