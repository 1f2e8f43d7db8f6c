//! Reading the server log: what recovery says so far ([`LogState`]), and what to do about a
//! FATAL message.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::RecoveryOutcome;

/// What to do about a FATAL message of the startup process.
pub fn hint_for(fatal: &str) -> String {
    if fatal.contains("recovery ended before configured recovery target was reached") {
        "no record matching the target was found on the timeline path recovery followed: the target may be after the end of the archived WAL, or on another timeline (see --target-timeline, `pitr info`); restore again (--force or --delta) with another target".to_string()
    } else if fatal.contains("before consistent recovery point") {
        "the target is before the restored backup became consistent: choose a later target, or an older backup with --backup".to_string()
    } else if fatal.contains("is not a child of this server's history")
        || fatal.contains("timeline")
    {
        "the backup is not on the requested timeline's history: pass --target-timeline current, or the timeline the backup can reach (`pitr info`)".to_string()
    } else if fatal.contains("checkpoint record") || fatal.contains("WAL") {
        "WAL the backup needs could not be read from the repository: run `pitr verify` and check restore_command in postgresql.auto.conf".to_string()
    } else {
        "read the server log above; after fixing the cause, restore again with --force or --delta"
            .to_string()
    }
}

/// What the server log says about recovery so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// `recovery stopping …` (the text after "recovery stopping ").
    pub stopping: Option<String>,
    /// LSN from the stop message or `redo done at`.
    pub stop_lsn: Option<String>,
    /// Time from the stop message.
    pub stop_time: Option<String>,
    /// Transaction from the stop message.
    pub stop_xid: Option<u64>,
    /// `redo done at`.
    pub redo_done_at: Option<String>,
    /// `last completed transaction was at log time`.
    pub last_transaction_time: Option<String>,
    /// `consistent recovery state reached at`.
    pub consistent_at: Option<String>,
    /// `selected new timeline ID`.
    pub new_timeline: Option<u32>,
    /// Timeline of the last WAL file restored.
    pub replay_timeline: Option<u32>,
    /// Name of the last WAL segment restored (`restored log file "…" from archive`).
    pub last_restored: Option<String>,
    /// How many WAL segments were restored so far.
    pub restored_segments: u64,
    /// `pausing at the end of recovery` / `recovery has paused`.
    pub paused: bool,
    /// `database system is ready to accept connections` (read-write).
    pub ready: bool,
    /// `database system is ready to accept read-only connections`.
    pub ready_read_only: bool,
    /// `shutdown at recovery target`.
    pub shutdown_at_target: bool,
    /// `database system is shut down`.
    pub shut_down: bool,
    /// First FATAL/PANIC message.
    pub fatal: Option<String>,
    /// Lines worth showing on failure (errors, hints, details, recovery milestones).
    pub relevant: Vec<String>,
}

/// Whether a log line comes from the startup process or the postmaster, by the backend type
/// the start's `log_line_prefix` puts in angle brackets (`<startup>`); lines without one (a log
/// written with another prefix) count as theirs.
fn recovery_process(line: &str) -> bool {
    let Some(level_at) = line.find(":  ") else {
        return true;
    };
    let head = &line[..level_at];
    match (head.rfind('<'), head.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            matches!(&head[open + 1..close], "startup" | "postmaster")
        }
        _ => true,
    }
}

/// The message part of a log line and its level (`LOG`, `FATAL`, …), whatever the prefix.
fn split_level(line: &str) -> Option<(&str, &str)> {
    for level in [
        "LOG",
        "FATAL",
        "PANIC",
        "ERROR",
        "WARNING",
        "HINT",
        "DETAIL",
        "CONTEXT",
        "STATEMENT",
    ] {
        let tag = format!("{level}:  ");
        if let Some(pos) = line.find(&tag) {
            return Some((&line[pos..pos + level.len()], &line[pos + tag.len()..]));
        }
    }
    None
}

fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let len = s[start..].find('"')?;
    Some(s[start..start + len].to_string())
}

fn lsn_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .find(|w| !w.is_empty())
}

impl LogState {
    /// Feeds one log line.
    pub fn feed(&mut self, line: &str) {
        let Some((level, msg)) = split_level(line) else {
            return;
        };
        let msg = msg.trim_end();
        let keep = |s: &mut LogState| {
            s.relevant.push(line.trim_end().to_string());
            if s.relevant.len() > 200 {
                s.relevant.remove(0);
            }
        };
        match level {
            "FATAL" | "PANIC" => {
                // A FATAL of a client connection or of the WAL receiver (which retries) is not
                // recovery failing; one of the startup process or the postmaster is.
                if self.fatal.is_none() && (level == "PANIC" || recovery_process(line)) {
                    self.fatal = Some(msg.to_string());
                }
                keep(self);
                return;
            }
            "ERROR" | "WARNING" | "HINT" | "DETAIL" => {
                keep(self);
                return;
            }
            "LOG" => {}
            _ => return,
        }
        if let Some(rest) = msg.strip_prefix("recovery stopping ") {
            self.stopping = Some(rest.to_string());
            if rest.contains("WAL location") {
                self.stop_lsn = quoted(rest);
            }
            if let Some(pos) = rest.find("transaction ") {
                self.stop_xid = rest[pos + "transaction ".len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|x| x.parse().ok());
            }
            if let Some(pos) = rest.find(", time ") {
                self.stop_time = Some(rest[pos + ", time ".len()..].to_string());
            }
            keep(self);
        } else if msg.starts_with("redo done at ") {
            self.redo_done_at = lsn_after(msg, "redo done at ").map(str::to_string);
            keep(self);
        } else if let Some(t) = msg.strip_prefix("last completed transaction was at log time ") {
            self.last_transaction_time = Some(t.to_string());
            keep(self);
        } else if msg.starts_with("consistent recovery state reached at ") {
            self.consistent_at =
                lsn_after(msg, "consistent recovery state reached at ").map(str::to_string);
            keep(self);
        } else if let Some(t) = msg.strip_prefix("selected new timeline ID: ") {
            self.new_timeline = t.trim().parse().ok();
            keep(self);
        } else if msg.starts_with("pausing at the end of recovery")
            || msg.starts_with("recovery has paused")
        {
            self.paused = true;
            keep(self);
        } else if msg == "database system is ready to accept connections" {
            self.ready = true;
            keep(self);
        } else if msg == "database system is ready to accept read-only connections" {
            self.ready_read_only = true;
            keep(self);
        } else if msg == "shutdown at recovery target" {
            self.shutdown_at_target = true;
            keep(self);
        } else if msg == "database system is shut down" {
            self.shut_down = true;
            keep(self);
        } else if let Some(rest) = msg.strip_prefix("restored log file ") {
            if let Some(name) = quoted(rest) {
                if name.len() >= 8 {
                    self.replay_timeline = u32::from_str_radix(&name[..8], 16).ok();
                }
                if pitr_pg::walname::WalFileName::parse(&name).is_ok_and(|n| n.holds_wal()) {
                    self.last_restored = Some(name);
                    self.restored_segments += 1;
                }
            }
        } else if msg.starts_with("starting ")
            || msg.starts_with("redo starts at")
            || msg.starts_with("archive recovery complete")
            || msg.contains("recovery target")
        {
            keep(self);
        }
    }

    /// The outcome, once recovery has ended (`running`: whether the server still runs).
    pub fn outcome(&self, running: bool, standby: bool) -> Option<RecoveryOutcome> {
        if self.fatal.is_some() {
            return None;
        }
        if self.shutdown_at_target || (!running && self.shut_down && self.stopping.is_some()) {
            return Some(RecoveryOutcome::ShutDown);
        }
        if !running {
            return None;
        }
        if self.paused {
            return Some(RecoveryOutcome::Paused);
        }
        if self.ready && (self.new_timeline.is_some() || self.redo_done_at.is_some()) {
            return Some(RecoveryOutcome::Promoted);
        }
        if standby && self.ready_read_only {
            return Some(RecoveryOutcome::Standby);
        }
        None
    }
}

fn read_new(path: &Path, offset: &mut u64) -> io::Result<String> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    // Only whole lines; the rest is read next time.
    let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    *offset += end as u64;
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Feeds the log lines written since `offset` to `state`.
pub(super) fn follow(log: &Path, offset: &mut u64, state: &mut LogState) -> io::Result<()> {
    for line in read_new(log, offset)?.lines() {
        state.feed(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &str) -> LogState {
        let mut s = LogState::default();
        for l in lines.lines() {
            s.feed(l);
        }
        s
    }

    #[test]
    fn only_recovery_s_own_fatal_fails_it() {
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] <startup> LOG:  entering standby mode\n\
2026-12-03 13:00:00.200 UTC [51] <client backend> FATAL:  the database system is not yet accepting connections\n\
2026-12-03 13:00:00.300 UTC [52] <walreceiver> FATAL:  could not connect to the primary server: connection to server on socket \"/nowhere/.s.PGSQL.5432\" failed: No such file or directory\n\
2026-12-03 13:00:00.400 UTC [40] <postmaster> LOG:  database system is ready to accept read-only connections\n",
        );
        assert_eq!(s.fatal, None);
        assert_eq!(s.outcome(true, true), Some(RecoveryOutcome::Standby));
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] <startup> FATAL:  requested timeline 3 is not a child of this server's history\n",
        );
        assert!(s
            .fatal
            .as_deref()
            .unwrap()
            .starts_with("requested timeline 3"));
        let s = feed("2026-12-03 13:00:00.100 UTC [40] <postmaster> FATAL:  could not create lock file \"/tmp/.s.PGSQL.5432.lock\": Permission denied\n");
        assert!(s.fatal.is_some());
        let s = feed("2026-12-03 13:00:00.100 UTC [55] <client backend> PANIC:  could not write to file \"pg_wal/xlogtemp.55\": No space left on device\n");
        assert!(s.fatal.is_some(), "a PANIC takes the whole server down");
        // A log written with another prefix: every FATAL counts, as before.
        let s = feed(
            "2026-12-03 13:00:00.100 UTC [42] FATAL:  could not connect to the primary server\n",
        );
        assert!(s.fatal.is_some());
    }

    #[test]
    fn paused_at_an_xid_target() {
        let s = feed(
            "2026-11-21 19:40:00.100 UTC [42] LOG:  starting point-in-time recovery to XID 743\n\
2026-11-21 19:40:00.120 UTC [42] LOG:  restored log file \"000000010000000000000003\" from archive\n\
2026-11-21 19:40:00.130 UTC [42] LOG:  redo starts at 0/3000028\n\
2026-11-21 19:40:00.140 UTC [42] LOG:  consistent recovery state reached at 0/3000100\n\
2026-11-21 19:40:00.141 UTC [40] LOG:  database system is ready to accept read-only connections\n\
2026-11-21 19:40:00.150 UTC [42] LOG:  recovery stopping before commit of transaction 743, time 2025-07-10 12:36:52.242927-07\n\
2026-11-21 19:40:00.151 UTC [42] LOG:  pausing at the end of recovery\n\
2026-11-21 19:40:00.151 UTC [42] HINT:  Execute pg_wal_replay_resume() to promote.\n",
        );
        assert_eq!(s.outcome(true, false), Some(RecoveryOutcome::Paused));
        assert_eq!(s.stop_xid, Some(743));
        assert_eq!(
            s.stop_time.as_deref(),
            Some("2025-07-10 12:36:52.242927-07")
        );
        assert_eq!(s.consistent_at.as_deref(), Some("0/3000100"));
        assert_eq!(s.replay_timeline, Some(1));
        assert!(s.relevant.iter().any(|l| l.contains("HINT")));
    }

    #[test]
    fn promoted_at_an_lsn_target() {
        let s = feed(
            "LOG:  recovery stopping after WAL location (LSN) \"0/4031F10\"\n\
LOG:  redo done at 0/4031F10 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.01 s\n\
LOG:  last completed transaction was at log time 2026-11-21 19:39:00.123456+00\n\
LOG:  selected new timeline ID: 2\n\
LOG:  archive recovery complete\n\
LOG:  database system is ready to accept connections\n",
        );
        assert_eq!(s.outcome(true, false), Some(RecoveryOutcome::Promoted));
        assert_eq!(s.stop_lsn.as_deref(), Some("0/4031F10"));
        assert_eq!(s.redo_done_at.as_deref(), Some("0/4031F10"));
        assert_eq!(s.new_timeline, Some(2));
        assert_eq!(
            s.last_transaction_time.as_deref(),
            Some("2026-11-21 19:39:00.123456+00")
        );
    }

    #[test]
    fn shut_down_at_the_target() {
        let s = feed(
            "LOG:  recovery stopping at restore point \"before_drop\", time 2026-11-21 19:39:00.1+00\n\
LOG:  shutdown at recovery target\n\
LOG:  database system is shut down\n",
        );
        assert_eq!(s.outcome(false, false), Some(RecoveryOutcome::ShutDown));
        assert!(s.stopping.as_deref().unwrap().contains("before_drop"));
    }

    #[test]
    fn a_missed_target_is_a_failure_not_an_outcome() {
        let s = feed(
            "LOG:  redo done at 0/5000060 system usage: CPU: user: 0.00 s\n\
FATAL:  recovery ended before configured recovery target was reached\n\
LOG:  startup process (PID 12) exited with exit code 1\n\
LOG:  aborting startup due to startup process failure\n\
LOG:  database system is shut down\n",
        );
        assert_eq!(
            s.fatal.as_deref(),
            Some("recovery ended before configured recovery target was reached")
        );
        assert_eq!(s.outcome(false, false), None);
        assert!(s.relevant.iter().any(|l| l.starts_with("FATAL")));
    }

    #[test]
    fn an_unfinished_recovery_has_no_outcome_yet() {
        let s = feed("LOG:  database system is ready to accept read-only connections\n");
        assert_eq!(s.outcome(true, false), None);
        assert_eq!(s.outcome(true, true), Some(RecoveryOutcome::Standby));
        assert_eq!(s.outcome(false, false), None);
    }
}
