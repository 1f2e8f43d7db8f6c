//! Recovery targets: what the user asked for, validated, and the `recovery_target*` settings
//! that tell PostgreSQL the same thing.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::fmt::temporal::Pieces;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Unit};
use pitr_pg::{Lsn, TimelineId};

/// Longest restore point name PostgreSQL accepts (`MAXFNAMELEN - 1`).
pub const MAX_RESTORE_POINT_NAME: usize = 63;

/// A target time, as given and as PostgreSQL will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTime {
    /// What the user typed.
    pub input: String,
    /// The instant it denotes (rounded to microseconds, PostgreSQL's precision).
    pub at: Timestamp,
    /// The value written to `recovery_target_time`: the same instant with an explicit offset,
    /// so the server's `timezone` setting cannot change its meaning.
    pub setting: String,
}

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// No target: replay all archived WAL (PostgreSQL's default).
    EndOfWal,
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// A commit/abort time (`recovery_target_time`).
    Time(TargetTime),
    /// A WAL position (`recovery_target_lsn`).
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point()` (`recovery_target_name`).
    Name(String),
    /// A transaction ID (`recovery_target_xid`).
    Xid(u64),
}

impl RecoveryTarget {
    /// Short kind name, as in the flags (`time`, `lsn`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            RecoveryTarget::EndOfWal => "end-of-wal",
            RecoveryTarget::Immediate => "immediate",
            RecoveryTarget::Time(_) => "time",
            RecoveryTarget::Lsn(_) => "lsn",
            RecoveryTarget::Name(_) => "name",
            RecoveryTarget::Xid(_) => "xid",
        }
    }

    /// True for targets whose WAL position is unknown without decoding WAL.
    pub fn needs_locating(&self) -> bool {
        matches!(self, RecoveryTarget::Name(_) | RecoveryTarget::Xid(_))
    }
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::EndOfWal => write!(f, "end of archived WAL"),
            RecoveryTarget::Immediate => write!(f, "earliest consistent point (immediate)"),
            RecoveryTarget::Time(t) => write!(f, "target time {}", t.setting),
            RecoveryTarget::Lsn(l) => write!(f, "target LSN {l}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
        }
    }
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineGoal {
    /// The newest timeline found in the archive (PostgreSQL's default).
    #[default]
    Latest,
    /// The timeline of the base backup.
    Current,
    /// A given timeline.
    Id(TimelineId),
}

impl fmt::Display for TimelineGoal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineGoal::Latest => write!(f, "latest"),
            TimelineGoal::Current => write!(f, "current"),
            TimelineGoal::Id(t) => write!(f, "{t}"),
        }
    }
}

impl FromStr for TimelineGoal {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "latest" => Ok(TimelineGoal::Latest),
            "current" => Ok(TimelineGoal::Current),
            other => other
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| TimelineGoal::Id(TimelineId(n)))
                .ok_or_else(|| TargetError::Timeline {
                    input: s.to_string(),
                }),
        }
    }
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    /// Stay in recovery, read-only, until `pg_wal_replay_resume()` (PostgreSQL's default).
    Pause,
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Shut the server down at the target.
    Shutdown,
}

impl fmt::Display for TargetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        })
    }
}

impl FromStr for TargetAction {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pause" => Ok(TargetAction::Pause),
            "promote" => Ok(TargetAction::Promote),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(TargetError::Action {
                input: s.to_string(),
            }),
        }
    }
}

/// A target option that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a time PostgreSQL and pitr both understand.
    #[error("invalid target time {input:?}: {reason}\nhint: use PostgreSQL's format, e.g. '2025-07-10 12:36:52.242927-07', or ISO 8601 ('2025-07-10T19:36:52Z'); without a zone the local time zone is used")]
    Time {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Not an LSN.
    #[error("invalid target LSN {input:?}\nhint: use PostgreSQL's X/X notation, e.g. 0/4031F10 (see pg_current_wal_lsn())")]
    Lsn {
        /// What was given.
        input: String,
    },
    /// Not a transaction ID.
    #[error("invalid target transaction ID {input:?}: {reason}\nhint: give the decimal xid, e.g. 732 (pg_current_xact_id() or `pitr wal` show it)")]
    Xid {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Not a restore point name PostgreSQL accepts.
    #[error("invalid restore point name {input:?}: {reason}")]
    Name {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Not a timeline goal.
    #[error("invalid target timeline {input:?}\nhint: use latest, current or a timeline number such as 2")]
    Timeline {
        /// What was given.
        input: String,
    },
    /// Not an action.
    #[error("invalid target action {input:?}\nhint: use pause, promote or shutdown")]
    Action {
        /// What was given.
        input: String,
    },
    /// `--target-exclusive` with a target that has no "before/after".
    #[error("--target-exclusive applies to --target-time, --target-lsn and --target-xid only, not to {kind}")]
    ExclusiveWithout {
        /// The target kind.
        kind: &'static str,
    },
    /// Not an archive mode.
    #[error("invalid --archive-mode {input:?}\nhint: use off (a restore made to look at data: nothing is archived) or preserve (the restored cluster replaces the original and archives as it did)")]
    ArchiveMode {
        /// What was given.
        input: String,
    },
    /// `--target-action` without a target.
    #[error("--target-action needs a recovery target: without one, PostgreSQL replays all archived WAL and then promotes")]
    ActionWithoutTarget,
}

/// Everything that shapes where recovery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Where to stop.
    pub target: RecoveryTarget,
    /// Stop just before the target instead of just after it (`recovery_target_inclusive = off`).
    pub exclusive: bool,
    /// Which timeline to follow.
    pub timeline: TimelineGoal,
    /// What to do at the target (`None`: PostgreSQL's default, pause).
    pub action: Option<TargetAction>,
}

impl Default for TargetSpec {
    fn default() -> Self {
        TargetSpec {
            target: RecoveryTarget::EndOfWal,
            exclusive: false,
            timeline: TimelineGoal::Latest,
            action: None,
        }
    }
}

impl TargetSpec {
    /// Checks the combination of options.
    pub fn validate(&self) -> Result<(), TargetError> {
        if self.exclusive
            && !matches!(
                self.target,
                RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) | RecoveryTarget::Xid(_)
            )
        {
            return Err(TargetError::ExclusiveWithout {
                kind: self.target.kind(),
            });
        }
        if self.action.is_some() && self.target == RecoveryTarget::EndOfWal {
            return Err(TargetError::ActionWithoutTarget);
        }
        Ok(())
    }

    /// The action PostgreSQL will take at the target.
    pub fn effective_action(&self) -> TargetAction {
        self.action.unwrap_or(TargetAction::Pause)
    }

    /// The recovery settings, as (name, unquoted value), in the order they are written.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match &self.target {
            RecoveryTarget::EndOfWal => {}
            RecoveryTarget::Immediate => out.push(("recovery_target", "immediate".to_string())),
            RecoveryTarget::Time(t) => out.push(("recovery_target_time", t.setting.clone())),
            RecoveryTarget::Lsn(l) => out.push(("recovery_target_lsn", l.to_string())),
            RecoveryTarget::Name(n) => out.push(("recovery_target_name", n.clone())),
            RecoveryTarget::Xid(x) => out.push(("recovery_target_xid", x.to_string())),
        }
        if self.exclusive {
            out.push(("recovery_target_inclusive", "off".to_string()));
        }
        out.push(("recovery_target_timeline", self.timeline.to_string()));
        if self.target != RecoveryTarget::EndOfWal {
            out.push((
                "recovery_target_action",
                self.effective_action().to_string(),
            ));
        }
        out
    }
}

/// Parses `--target-lsn`.
pub fn parse_lsn(s: &str) -> Result<Lsn, TargetError> {
    s.parse().map_err(|_| TargetError::Lsn {
        input: s.to_string(),
    })
}

/// Parses `--target-xid`: a decimal transaction ID (32-bit, or 64-bit epoch-qualified as
/// `pg_current_xact_id()` prints it).
pub fn parse_xid(s: &str) -> Result<u64, TargetError> {
    let t = s.trim();
    let bad = |reason: &str| TargetError::Xid {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected a decimal number"));
    }
    let xid: u64 = t.parse().map_err(|_| bad("too large"))?;
    // 0, 1 and 2 are the invalid, bootstrap and frozen IDs: never a user transaction.
    if (xid & 0xFFFF_FFFF) < 3 {
        return Err(bad("0, 1 and 2 are special IDs, not transactions"));
    }
    Ok(xid)
}

/// Validates `--target-name`.
pub fn parse_name(s: &str) -> Result<String, TargetError> {
    let bad = |reason: String| TargetError::Name {
        input: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if s.len() > MAX_RESTORE_POINT_NAME {
        return Err(bad(format!(
            "PostgreSQL allows at most {MAX_RESTORE_POINT_NAME} bytes"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(bad("it contains control characters".into()));
    }
    Ok(s.to_string())
}

/// Parses `--target-time` in PostgreSQL's or ISO 8601 formats, interpreting a time without a
/// zone in the local time zone.
pub fn parse_time(s: &str) -> Result<TargetTime, TargetError> {
    parse_time_in(s, &TimeZone::system())
}

/// [`parse_time`] with an explicit zone for times that carry none (for tests).
pub fn parse_time_in(s: &str, local: &TimeZone) -> Result<TargetTime, TargetError> {
    let input = s.trim();
    let bad = |reason: String| TargetError::Time {
        input: s.to_string(),
        reason,
    };
    if input.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let (at, zone) = parse_instant(input, local).map_err(bad)?;
    let at = at
        .round(Unit::Microsecond)
        .map_err(|e| bad(e.to_string()))?;
    let setting = jiff::fmt::strtime::format("%Y-%m-%d %H:%M:%S%.f%:z", &at.to_zoned(zone))
        .map_err(|e| bad(e.to_string()))?;
    Ok(TargetTime {
        input: s.to_string(),
        at,
        setting,
    })
}

/// The instant and the zone to show it in.
fn parse_instant(input: &str, local: &TimeZone) -> Result<(Timestamp, TimeZone), String> {
    // RFC 9557 with a bracketed zone: 2025-07-10T12:36:52[Europe/Paris].
    if input.ends_with(']') {
        let z: jiff::Zoned = input.parse().map_err(|e: jiff::Error| e.to_string())?;
        return Ok((z.timestamp(), z.time_zone().clone()));
    }
    // PostgreSQL also accepts a zone name after a space: 2025-07-10 12:36:52 Europe/Paris, UTC.
    if let Some((civil, zone)) = input.rsplit_once(' ') {
        let zone_like = zone.eq_ignore_ascii_case("utc")
            || zone.eq_ignore_ascii_case("gmt")
            || zone.contains('/');
        if zone_like && civil.contains(':') {
            let tz = if zone.contains('/') {
                TimeZone::get(zone).map_err(|_| format!("unknown time zone {zone:?}"))?
            } else {
                TimeZone::UTC
            };
            let dt: DateTime = civil
                .trim()
                .parse()
                .map_err(|e: jiff::Error| e.to_string())?;
            let z = dt.to_zoned(tz).map_err(|e| e.to_string())?;
            return Ok((z.timestamp(), z.time_zone().clone()));
        }
    }
    // With an offset (±HH, ±HHMM, ±HH:MM, ±HH:MM:SS) or Z: 2025-07-10 12:36:52.242927-07,
    // 2025-07-10T19:36:52Z. Shown with that offset (Z as +00:00).
    if let Ok(ts) = input.parse::<Timestamp>() {
        let zone = Pieces::parse(input)
            .ok()
            .and_then(|p| p.to_numeric_offset())
            .map_or(TimeZone::UTC, TimeZone::fixed);
        return Ok((ts, zone));
    }
    // Without a zone: local time.
    let dt: DateTime = match input.parse::<DateTime>() {
        Ok(dt) => dt,
        Err(e) => match input.parse::<Date>() {
            Ok(d) => d.to_datetime(jiff::civil::Time::midnight()),
            Err(_) => return Err(e.to_string()),
        },
    };
    let z = dt.to_zoned(local.clone()).map_err(|e| e.to_string())?;
    Ok((z.timestamp(), z.time_zone().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn la() -> TimeZone {
        TimeZone::get("America/Los_Angeles").unwrap()
    }

    #[test]
    fn parses_postgres_output_format_with_hour_offset() {
        let t = parse_time_in("2025-07-10 12:36:52.242927-07", &TimeZone::UTC).unwrap();
        assert_eq!(
            t.at,
            "2025-07-10T19:36:52.242927Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(t.setting, "2025-07-10 12:36:52.242927-07:00");
    }

    #[test]
    fn parses_iso_8601_and_zone_names() {
        let z = parse_time_in("2025-07-10T19:36:52Z", &la()).unwrap();
        assert_eq!(z.setting, "2025-07-10 19:36:52+00:00");
        let plus = parse_time_in("2025-07-10T21:36:52+02:00", &la()).unwrap();
        assert_eq!(plus.at, z.at);
        assert_eq!(plus.setting, "2025-07-10 21:36:52+02:00");
        let basic = parse_time_in("2025-07-10 21:36:52+0200", &la()).unwrap();
        assert_eq!(basic.at, z.at);
        let utc = parse_time_in("2025-07-10 19:36:52 UTC", &la()).unwrap();
        assert_eq!(utc.at, z.at);
        let named = parse_time_in("2025-07-10 21:36:52 Europe/Paris", &la()).unwrap();
        assert_eq!(named.at, z.at);
        assert_eq!(named.setting, "2025-07-10 21:36:52+02:00");
        let bracket = parse_time_in("2025-07-10T21:36:52[Europe/Paris]", &la()).unwrap();
        assert_eq!(bracket.at, z.at);
    }

    #[test]
    fn keeps_the_offset_given_in_every_form_postgres_prints_or_accepts() {
        let at = "2025-07-10T07:06:52Z".parse::<Timestamp>().unwrap();
        for (input, setting) in [
            ("2025-07-10 12:36:52+05:30", "2025-07-10 12:36:52+05:30"),
            ("2025-07-10 12:36:52+0530", "2025-07-10 12:36:52+05:30"),
            ("2025-07-10T12:36:52+05:30", "2025-07-10 12:36:52+05:30"),
            ("2025-07-10 00:06:52-07", "2025-07-10 00:06:52-07:00"),
            ("2025-07-10 09:06:52+02", "2025-07-10 09:06:52+02:00"),
            ("2025-07-10 07:06:52Z", "2025-07-10 07:06:52+00:00"),
            ("2025-07-10 07:06:52+00", "2025-07-10 07:06:52+00:00"),
        ] {
            let t = parse_time_in(input, &la()).unwrap();
            assert_eq!((t.at, t.setting.as_str()), (at, setting), "{input}");
        }
    }

    #[test]
    fn a_time_without_zone_is_local_time_with_the_offset_made_explicit() {
        let t = parse_time_in("2025-07-10 12:36:52", &la()).unwrap();
        assert_eq!(t.at, "2025-07-10T19:36:52Z".parse::<Timestamp>().unwrap());
        assert_eq!(t.setting, "2025-07-10 12:36:52-07:00");
        let winter = parse_time_in("2025-01-10T12:00:00", &la()).unwrap();
        assert_eq!(winter.setting, "2025-01-10 12:00:00-08:00");
        let date = parse_time_in("2025-01-10", &la()).unwrap();
        assert_eq!(date.setting, "2025-01-10 00:00:00-08:00");
    }

    #[test]
    fn rounds_to_microseconds_like_postgres() {
        let t = parse_time_in("2025-07-10T19:36:52.1234567Z", &la()).unwrap();
        assert_eq!(t.setting, "2025-07-10 19:36:52.123457+00:00");
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2025-13-01 00:00:00",
            "2025-07-10 25:00:00",
            "12:36:52",
            "2025-07-10 12:36:52 Mars/Olympus",
            "2025-07-10 12:36:52.242927-07 trailing",
        ] {
            assert!(parse_time_in(bad, &la()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validates_xids_names_timelines_and_actions() {
        assert_eq!(parse_xid("732").unwrap(), 732);
        assert_eq!(parse_xid("4294967300").unwrap(), 4_294_967_300);
        for bad in ["", "-1", "0", "2", "7x", "0x10", "99999999999999999999999"] {
            assert!(parse_xid(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_name("punto_laboratorio").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name(&"x".repeat(64)).is_err());
        assert!(parse_name(&"x".repeat(63)).is_ok());
        assert!(parse_name("a\nb").is_err());
        assert_eq!("latest".parse(), Ok(TimelineGoal::Latest));
        assert_eq!("Current".parse(), Ok(TimelineGoal::Current));
        assert_eq!("3".parse(), Ok(TimelineGoal::Id(TimelineId(3))));
        assert!("0".parse::<TimelineGoal>().is_err());
        assert!("next".parse::<TimelineGoal>().is_err());
        assert_eq!("PROMOTE".parse(), Ok(TargetAction::Promote));
        assert!("resume".parse::<TargetAction>().is_err());
        assert_eq!(parse_lsn("0/4031F10").unwrap(), Lsn(0x403_1F10));
        assert!(parse_lsn("4031F10").is_err());
    }

    #[test]
    fn exclusive_only_with_time_lsn_or_xid_and_action_only_with_a_target() {
        let mut spec = TargetSpec {
            target: RecoveryTarget::Name("p".into()),
            exclusive: true,
            ..Default::default()
        };
        assert!(spec.validate().is_err());
        spec.target = RecoveryTarget::Xid(10);
        assert!(spec.validate().is_ok());
        let spec = TargetSpec {
            action: Some(TargetAction::Promote),
            ..Default::default()
        };
        assert_eq!(spec.validate(), Err(TargetError::ActionWithoutTarget));
    }

    #[test]
    fn renders_recovery_settings() {
        let spec = TargetSpec {
            target: RecoveryTarget::Xid(743),
            exclusive: true,
            timeline: TimelineGoal::Id(TimelineId(2)),
            action: Some(TargetAction::Promote),
        };
        assert_eq!(
            spec.settings(),
            vec![
                ("recovery_target_xid", "743".to_string()),
                ("recovery_target_inclusive", "off".to_string()),
                ("recovery_target_timeline", "2".to_string()),
                ("recovery_target_action", "promote".to_string()),
            ]
        );
        let none = TargetSpec::default();
        assert_eq!(
            none.settings(),
            vec![("recovery_target_timeline", "latest".to_string())]
        );
        let imm = TargetSpec {
            target: RecoveryTarget::Immediate,
            ..Default::default()
        };
        assert_eq!(imm.settings()[0], ("recovery_target", "immediate".into()));
        assert_eq!(
            imm.settings()[2],
            ("recovery_target_action", "pause".into())
        );
    }
}
