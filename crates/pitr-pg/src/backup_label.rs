//! `backup_label`, backup history files (`*.backup`) and `tablespace_map`.
//!
//! `pg_backup_stop` returns the backup_label and tablespace_map contents; a restore must write
//! them into the restored data directory, where the startup process reads them
//! (`read_backup_label` / `read_tablespace_map` in `xlogrecovery.c`). The backup history file
//! archived with the WAL has the same lines plus `STOP …` ones.
//!
//! The format, as PostgreSQL 14–18 write it (`build_backup_content` in `xlogbackup.c`; before
//! 16 inline in `xlog.c`), one `KEY: value` per line in this order:
//! ```text
//! START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//! STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)   (history file only)
//! CHECKPOINT LOCATION: 0/2000060
//! BACKUP METHOD: streamed                (PG14 exclusive backups: pg_start_backup)
//! BACKUP FROM: primary                   (or standby)
//! START TIME: 2025-01-01 12:00:00 UTC
//! LABEL: nightly
//! START TIMELINE: 1
//! STOP TIME: 2025-01-01 12:00:05 UTC     (history file only)
//! STOP TIMELINE: 1                       (history file only)
//! INCREMENTAL FROM LSN: 0/5000028        (PG17+ incremental backups)
//! INCREMENTAL FROM TLI: 1
//! ```

use std::fmt;

use crate::{Lsn, TimelineId, WalFileName};

/// `BACKUP METHOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackupMethod {
    /// `streamed`: a non-exclusive backup (`pg_backup_start`, pg_basebackup).
    Streamed,
    /// `pg_start_backup`: a PG14 exclusive backup.
    Exclusive,
}

impl fmt::Display for BackupMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupMethod::Streamed => "streamed",
            BackupMethod::Exclusive => "pg_start_backup",
        })
    }
}

/// `BACKUP FROM`: whether the backup was taken on a primary or a standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackupFrom {
    /// `primary`.
    Primary,
    /// `standby`.
    Standby,
}

impl fmt::Display for BackupFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupFrom::Primary => "primary",
            BackupFrom::Standby => "standby",
        })
    }
}

/// The end of a backup, recorded only in backup history files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStop {
    /// `STOP WAL LOCATION`: recovery must replay at least to here.
    pub wal_location: Lsn,
    /// The segment holding `wal_location`.
    pub wal_file: WalFileName,
    /// `STOP TIME`, as PostgreSQL printed it (`%Y-%m-%d %H:%M:%S %Z`).
    pub time: String,
    /// `STOP TIMELINE`.
    pub timeline: TimelineId,
}

/// The parent backup of a PG17+ incremental backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementalFrom {
    /// `INCREMENTAL FROM LSN`: start LSN of the backup this one is relative to.
    pub lsn: Lsn,
    /// `INCREMENTAL FROM TLI`.
    pub timeline: TimelineId,
}

/// A parsed `backup_label` or backup history file. [`fmt::Display`] renders it back byte for
/// byte as PostgreSQL writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// `START WAL LOCATION`: the REDO point of the backup's checkpoint; replay starts here.
    pub start_wal_location: Lsn,
    /// The segment holding `start_wal_location`: the first WAL file the restore needs.
    pub start_wal_file: WalFileName,
    /// Present in backup history files only.
    pub stop: Option<BackupStop>,
    /// `CHECKPOINT LOCATION`: LSN of the backup's checkpoint record.
    pub checkpoint_location: Lsn,
    /// `BACKUP METHOD`.
    pub backup_method: BackupMethod,
    /// `BACKUP FROM`.
    pub backup_from: BackupFrom,
    /// `START TIME`, as PostgreSQL printed it (`%Y-%m-%d %H:%M:%S %Z`, server time zone).
    pub start_time: String,
    /// `LABEL`: the label given to `pg_backup_start` or pg_basebackup.
    pub label: String,
    /// `START TIMELINE`.
    pub start_timeline: TimelineId,
    /// PG17+ incremental backups: the backup this one is relative to.
    pub incremental_from: Option<IncrementalFrom>,
}

/// Why text is not a valid backup_label or backup history file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupLabelError {
    /// A line without the `KEY: value` shape.
    #[error("backup_label line {line}: {text:?} is not a \"KEY: value\" line")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A key PostgreSQL 14–18 do not write.
    #[error("backup_label line {line}: unknown key {key:?}")]
    UnknownKey {
        /// 1-based line number.
        line: usize,
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("backup_label line {line}: {key} given twice")]
    DuplicateKey {
        /// 1-based line number.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A value that does not parse.
    #[error("backup_label: invalid {key} {value:?}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A required key is absent.
    #[error("backup_label: {0} is missing")]
    Missing(&'static str),
    /// The start WAL file's timeline differs from `START TIMELINE` (PostgreSQL refuses this).
    #[error("backup_label: START TIMELINE {start_timeline} differs from the timeline {file_timeline} of the start WAL file")]
    TimelineMismatch {
        /// `START TIMELINE`.
        start_timeline: TimelineId,
        /// Timeline in the `(file …)` name.
        file_timeline: TimelineId,
    },
}

const KEYS: [&str; 12] = [
    "START WAL LOCATION",
    "STOP WAL LOCATION",
    "CHECKPOINT LOCATION",
    "BACKUP METHOD",
    "BACKUP FROM",
    "START TIME",
    "LABEL",
    "START TIMELINE",
    "STOP TIME",
    "STOP TIMELINE",
    "INCREMENTAL FROM LSN",
    "INCREMENTAL FROM TLI",
];

fn invalid(key: &'static str, value: &str) -> BackupLabelError {
    BackupLabelError::InvalidValue {
        key,
        value: value.to_string(),
    }
}

/// Parses `0/2000028 (file 000000010000000000000002)`.
fn parse_location(key: &'static str, v: &str) -> Result<(Lsn, WalFileName), BackupLabelError> {
    let (lsn, rest) = v.split_once(" (file ").ok_or_else(|| invalid(key, v))?;
    let name = rest.strip_suffix(')').ok_or_else(|| invalid(key, v))?;
    let lsn: Lsn = lsn.parse().map_err(|_| invalid(key, v))?;
    match WalFileName::parse(name) {
        Ok(file @ WalFileName::Segment { .. }) => Ok((lsn, file)),
        _ => Err(invalid(key, v)),
    }
}

fn parse_lsn(key: &'static str, v: &str) -> Result<Lsn, BackupLabelError> {
    if v.trim() != v {
        return Err(invalid(key, v));
    }
    v.parse().map_err(|_| invalid(key, v))
}

fn parse_tli(key: &'static str, v: &str) -> Result<TimelineId, BackupLabelError> {
    match v.parse::<u32>() {
        Ok(t) if t > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(TimelineId(t)),
        _ => Err(invalid(key, v)),
    }
}

impl BackupLabel {
    /// Parses a backup_label (or backup history file) as PostgreSQL writes it.
    pub fn parse(text: &str) -> Result<BackupLabel, BackupLabelError> {
        let mut values: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
        let body = text.strip_suffix('\n').unwrap_or(text);
        if !body.is_empty() {
            for (i, line) in body.split('\n').enumerate() {
                let malformed = || BackupLabelError::Malformed {
                    line: i + 1,
                    text: line.to_string(),
                };
                let (key, value) = match line.split_once(": ") {
                    Some(kv) => kv,
                    // `LABEL: ` with an empty label may lose its trailing space in transit.
                    None => (line.strip_suffix(':').ok_or_else(malformed)?, ""),
                };
                let (known, slot) = KEYS
                    .iter()
                    .zip(values.iter_mut())
                    .find(|(k, _)| **k == key)
                    .ok_or_else(|| BackupLabelError::UnknownKey {
                        line: i + 1,
                        key: key.to_string(),
                    })?;
                if slot.replace(value).is_some() {
                    return Err(BackupLabelError::DuplicateKey {
                        line: i + 1,
                        key: known,
                    });
                }
            }
        }
        let get = |key: &'static str| -> Option<&str> {
            KEYS.iter()
                .zip(values)
                .find(|(k, _)| **k == key)
                .and_then(|(_, v)| v)
        };
        let need = |key: &'static str| get(key).ok_or(BackupLabelError::Missing(key));

        let (start_wal_location, start_wal_file) =
            parse_location("START WAL LOCATION", need("START WAL LOCATION")?)?;
        let checkpoint_location = parse_lsn("CHECKPOINT LOCATION", need("CHECKPOINT LOCATION")?)?;
        let backup_method = match need("BACKUP METHOD")? {
            "streamed" => BackupMethod::Streamed,
            "pg_start_backup" => BackupMethod::Exclusive,
            other => return Err(invalid("BACKUP METHOD", other)),
        };
        let backup_from = match need("BACKUP FROM")? {
            "primary" => BackupFrom::Primary,
            "standby" => BackupFrom::Standby,
            other => return Err(invalid("BACKUP FROM", other)),
        };
        let start_time = need("START TIME")?.to_string();
        let label = need("LABEL")?.to_string();
        let start_timeline = parse_tli("START TIMELINE", need("START TIMELINE")?)?;
        if start_wal_file.timeline() != start_timeline {
            return Err(BackupLabelError::TimelineMismatch {
                start_timeline,
                file_timeline: start_wal_file.timeline(),
            });
        }

        let stop = match (
            get("STOP WAL LOCATION"),
            get("STOP TIME"),
            get("STOP TIMELINE"),
        ) {
            (None, None, None) => None,
            (loc, time, tli) => {
                let (wal_location, wal_file) = parse_location(
                    "STOP WAL LOCATION",
                    loc.ok_or(BackupLabelError::Missing("STOP WAL LOCATION"))?,
                )?;
                Some(BackupStop {
                    wal_location,
                    wal_file,
                    time: time
                        .ok_or(BackupLabelError::Missing("STOP TIME"))?
                        .to_string(),
                    timeline: parse_tli(
                        "STOP TIMELINE",
                        tli.ok_or(BackupLabelError::Missing("STOP TIMELINE"))?,
                    )?,
                })
            }
        };
        let incremental_from = match (get("INCREMENTAL FROM LSN"), get("INCREMENTAL FROM TLI")) {
            (None, None) => None,
            (lsn, tli) => Some(IncrementalFrom {
                lsn: parse_lsn(
                    "INCREMENTAL FROM LSN",
                    lsn.ok_or(BackupLabelError::Missing("INCREMENTAL FROM LSN"))?,
                )?,
                timeline: parse_tli(
                    "INCREMENTAL FROM TLI",
                    tli.ok_or(BackupLabelError::Missing("INCREMENTAL FROM TLI"))?,
                )?,
            }),
        };
        Ok(BackupLabel {
            start_wal_location,
            start_wal_file,
            stop,
            checkpoint_location,
            backup_method,
            backup_from,
            start_time,
            label,
            start_timeline,
            incremental_from,
        })
    }
}

impl fmt::Display for BackupLabel {
    /// The file's contents, lines in PostgreSQL's order, each ending with `\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "START WAL LOCATION: {} (file {})",
            self.start_wal_location, self.start_wal_file
        )?;
        if let Some(stop) = &self.stop {
            writeln!(
                f,
                "STOP WAL LOCATION: {} (file {})",
                stop.wal_location, stop.wal_file
            )?;
        }
        writeln!(f, "CHECKPOINT LOCATION: {}", self.checkpoint_location)?;
        writeln!(f, "BACKUP METHOD: {}", self.backup_method)?;
        writeln!(f, "BACKUP FROM: {}", self.backup_from)?;
        writeln!(f, "START TIME: {}", self.start_time)?;
        writeln!(f, "LABEL: {}", self.label)?;
        writeln!(f, "START TIMELINE: {}", self.start_timeline)?;
        if let Some(stop) = &self.stop {
            writeln!(f, "STOP TIME: {}", stop.time)?;
            writeln!(f, "STOP TIMELINE: {}", stop.timeline)?;
        }
        if let Some(inc) = &self.incremental_from {
            writeln!(f, "INCREMENTAL FROM LSN: {}", inc.lsn)?;
            writeln!(f, "INCREMENTAL FROM TLI: {}", inc.timeline)?;
        }
        Ok(())
    }
}

/// One line of `tablespace_map`: the symlink `pg_tblspc/<oid>` points at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceMapEntry {
    /// The tablespace's OID (the link's name under `pg_tblspc`).
    pub oid: u32,
    /// Where the tablespace lives (may contain spaces, backslashes and even newlines).
    pub path: String,
}

/// The contents of `tablespace_map`: one `oid path` line per tablespace, where `\`, CR and LF
/// in the path are escaped with a backslash (PG14+). [`fmt::Display`] renders it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablespaceMap {
    /// The tablespaces, in file order.
    pub entries: Vec<TablespaceMapEntry>,
}

/// Why text is not a valid tablespace_map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TablespaceMapError {
    /// A line that is not `oid path`.
    #[error("tablespace_map line {line}: {text:?} is not \"<oid> <path>\"")]
    Malformed {
        /// 1-based line number (counting non-empty lines).
        line: usize,
        /// The de-escaped line.
        text: String,
    },
    /// The last line has no line end, or ends in a lone backslash.
    #[error("tablespace_map: the last line is not terminated; hint: the file is truncated")]
    Unterminated,
}

impl TablespaceMap {
    /// Parses the file the way `read_tablespace_map` does: a backslash makes the next
    /// character literal, an unescaped CR or LF ends a line, empty lines are skipped, and each
    /// line is an OID, one space, and the path (which may itself start with spaces).
    pub fn parse(text: &str) -> Result<TablespaceMap, TablespaceMapError> {
        let mut entries = Vec::new();
        let mut line = String::new();
        let mut was_backslash = false;
        for ch in text.chars() {
            if !was_backslash && (ch == '\n' || ch == '\r') {
                if line.is_empty() {
                    continue;
                }
                entries.push(Self::parse_line(&line, entries.len() + 1)?);
                line.clear();
            } else if !was_backslash && ch == '\\' {
                was_backslash = true;
            } else {
                line.push(ch);
                was_backslash = false;
            }
        }
        if !line.is_empty() || was_backslash {
            return Err(TablespaceMapError::Unterminated);
        }
        Ok(TablespaceMap { entries })
    }

    fn parse_line(line: &str, n: usize) -> Result<TablespaceMapEntry, TablespaceMapError> {
        let malformed = || TablespaceMapError::Malformed {
            line: n,
            text: line.to_string(),
        };
        let (oid, path) = line.split_once(' ').ok_or_else(malformed)?;
        if oid.is_empty() || path.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        Ok(TablespaceMapEntry {
            oid: oid.parse().map_err(|_| malformed())?,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for TablespaceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            write!(f, "{} ", e.oid)?;
            for ch in e.path.chars() {
                if matches!(ch, '\\' | '\n' | '\r') {
                    f.write_str("\\")?;
                }
                write!(f, "{ch}")?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2025-07-10 12:36:52 PDT
LABEL: nightly: full
START TIMELINE: 1
";

    #[test]
    fn parses_and_renders_a_label() {
        let l = BackupLabel::parse(LABEL).unwrap();
        assert_eq!(l.start_wal_location, Lsn(0x0200_0028));
        assert_eq!(l.start_wal_file.to_string(), "000000010000000000000002");
        assert_eq!(l.checkpoint_location, Lsn(0x0200_0060));
        assert_eq!(l.label, "nightly: full");
        assert_eq!(l.start_timeline, TimelineId(1));
        assert_eq!(l.stop, None);
        assert_eq!(l.to_string(), LABEL);
    }

    #[test]
    fn round_trips_incremental_and_history_forms() {
        let text = "START WAL LOCATION: 1/A0 (file 000000030000000100000000)
STOP WAL LOCATION: 1/1000100 (file 000000030000000100000001)
CHECKPOINT LOCATION: 1/F8
BACKUP METHOD: pg_start_backup
BACKUP FROM: standby
START TIME: 2025-07-10 12:36:52 UTC
LABEL: 
START TIMELINE: 3
STOP TIME: 2025-07-10 12:37:00 UTC
STOP TIMELINE: 3
INCREMENTAL FROM LSN: 0/5000028
INCREMENTAL FROM TLI: 2
";
        let l = BackupLabel::parse(text).unwrap();
        assert_eq!(l.label, "");
        assert_eq!(l.backup_method, BackupMethod::Exclusive);
        assert_eq!(l.backup_from, BackupFrom::Standby);
        assert_eq!(l.stop.as_ref().unwrap().timeline, TimelineId(3));
        assert_eq!(
            l.incremental_from,
            Some(IncrementalFrom {
                lsn: Lsn(0x0500_0028),
                timeline: TimelineId(2)
            })
        );
        assert_eq!(l.to_string(), text);
    }

    #[test]
    fn refuses_broken_labels() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "missing"),
            (LABEL.replace("LABEL: nightly: full\n", ""), "missing"),
            (
                LABEL.replace("BACKUP FROM: primary", "BACKUP FROM: master"),
                "invalid",
            ),
            (LABEL.replace("0/2000060", "0/x"), "invalid"),
            (
                LABEL.replace("START TIMELINE: 1", "START TIMELINE: 2"),
                "mismatch",
            ),
            (
                LABEL.replace("START TIMELINE: 1", "START TIMELINE: 0"),
                "invalid",
            ),
            (LABEL.replace("(file 0000", "(file 9999"), "mismatch"),
            (
                LABEL.replace("(file 000000010000000000000002)", "(file 00000001.history)"),
                "invalid",
            ),
            (format!("{LABEL}LABEL: again\n"), "duplicate"),
            (format!("{LABEL}FOO: bar\n"), "unknown"),
            (format!("{LABEL}garbage\n"), "malformed"),
            (format!("{LABEL}STOP TIME: x\n"), "missing"),
            (format!("{LABEL}INCREMENTAL FROM TLI: 1\n"), "missing"),
        ];
        for (text, kind) in cases {
            let err = BackupLabel::parse(&text).unwrap_err();
            let ok = match kind {
                "missing" => matches!(err, BackupLabelError::Missing(_)),
                "invalid" => matches!(err, BackupLabelError::InvalidValue { .. }),
                "mismatch" => matches!(err, BackupLabelError::TimelineMismatch { .. }),
                "duplicate" => matches!(err, BackupLabelError::DuplicateKey { .. }),
                "unknown" => matches!(err, BackupLabelError::UnknownKey { .. }),
                _ => matches!(err, BackupLabelError::Malformed { .. }),
            };
            assert!(ok, "{text:?}: expected {kind}, got {err:?}");
        }
    }

    #[test]
    fn never_panics_on_mangled_input() {
        // Deterministic noise: replace, insert and cut characters of valid files.
        let alphabet: Vec<char> = ":/ \n\r\\(0)1aF*é\u{0}".chars().collect();
        let mut x: u32 = 0x9E37_79B9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as usize
        };
        let seeds = [LABEL, "16384 /srv/ts dir\n16385 /a\\\\b\n"];
        for round in 0..3000 {
            let mut chars: Vec<char> = seeds[round % 2].chars().collect();
            for _ in 0..(1 + next() % 4) {
                let pos = next() % (chars.len() + 1);
                match next() % 3 {
                    0 if pos < chars.len() => chars[pos] = alphabet[next() % alphabet.len()],
                    1 => chars.insert(pos, alphabet[next() % alphabet.len()]),
                    _ => chars.truncate(pos),
                }
            }
            let text: String = chars.into_iter().collect();
            if let Ok(l) = BackupLabel::parse(&text) {
                // Whatever parses renders to something that parses to the same value.
                assert_eq!(BackupLabel::parse(&l.to_string()), Ok(l));
            }
            if let Ok(m) = TablespaceMap::parse(&text) {
                assert_eq!(TablespaceMap::parse(&m.to_string()), Ok(m));
            }
        }
    }

    #[test]
    fn tablespace_map_escapes_backslashes_and_line_ends() {
        let map = TablespaceMap {
            entries: vec![
                TablespaceMapEntry {
                    oid: 16384,
                    path: "/srv/ts dir".into(),
                },
                TablespaceMapEntry {
                    oid: 16385,
                    path: " /odd\\path\nwith newline\r".into(),
                },
            ],
        };
        let text = map.to_string();
        assert_eq!(
            text,
            "16384 /srv/ts dir\n16385  /odd\\\\path\\\nwith newline\\\r\n"
        );
        assert_eq!(TablespaceMap::parse(&text).unwrap(), map);
        assert_eq!(TablespaceMap::parse("").unwrap(), TablespaceMap::default());
        // CRLF line ends and blank lines are accepted, as PostgreSQL does.
        assert_eq!(
            TablespaceMap::parse("1 /a\r\n\n2 /b\n")
                .unwrap()
                .entries
                .len(),
            2
        );
    }

    #[test]
    fn tablespace_map_refuses_malformed_lines() {
        for bad in [
            "16384\n",
            "16384 \n",
            " /a\n",
            "x1 /a\n",
            "99999999999 /a\n",
        ] {
            assert!(
                matches!(
                    TablespaceMap::parse(bad),
                    Err(TablespaceMapError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        for bad in ["1 /a", "1 /a\\", "1 /a\\\n"] {
            assert_eq!(
                TablespaceMap::parse(bad),
                Err(TablespaceMapError::Unterminated),
                "{bad:?}"
            );
        }
    }
}
