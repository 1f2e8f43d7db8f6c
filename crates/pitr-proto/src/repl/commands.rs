//! The short replication commands: `IDENTIFY_SYSTEM`, `TIMELINE_HISTORY`, and physical slots
//! (`CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`, `READ_REPLICATION_SLOT`).

use bytes::Bytes;
use pitr_pg::history::HistoryError;
use pitr_pg::{Lsn, SystemId, TimelineHistory, TimelineId};

use super::conn::ReplConnection;
use super::version::create_slot_sql;
use crate::ProtoError;

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier.
    pub system_id: SystemId,
    /// The server's current timeline.
    pub timeline: TimelineId,
    /// The current WAL flush position (on a standby: the replay position).
    pub xlogpos: Lsn,
    /// The database (only for logical replication connections; `None` here).
    pub dbname: Option<String>,
}

/// A timeline history file as `TIMELINE_HISTORY` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryFile {
    /// The timeline asked for.
    pub timeline: TimelineId,
    /// Its file name, e.g. `00000002.history`.
    pub file_name: String,
    /// The file's bytes, unchanged.
    pub content: Bytes,
}

impl TimelineHistoryFile {
    /// The file parsed (pitr-pg's parser).
    pub fn history(&self) -> Result<TimelineHistory, HistoryError> {
        TimelineHistory::parse(self.timeline, &self.content)
    }
}

/// Options of a physical slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotOptions {
    /// Dropped when this connection ends (or on error).
    pub temporary: bool,
    /// Reserve WAL at once (from the current redo position) instead of at the first
    /// `START_REPLICATION` on the slot.
    pub reserve_wal: bool,
}

/// A slot just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Its name.
    pub name: String,
    /// `consistent_point` (for physical slots, where reserved WAL starts when known).
    pub consistent_point: Option<Lsn>,
}

/// A physical slot as `READ_REPLICATION_SLOT` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// `physical`.
    pub slot_type: String,
    /// Oldest WAL the slot retains (`None` until WAL is reserved).
    pub restart_lsn: Option<Lsn>,
    /// Timeline of `restart_lsn`.
    pub restart_tli: Option<TimelineId>,
}

/// Checks a slot name as PostgreSQL's `ReplicationSlotValidateName` does (lower-case letters,
/// digits, underscores; at most 63 bytes), so it can be sent unquoted.
pub fn validate_slot_name(name: &str) -> Result<(), ProtoError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProtoError::InvalidSlotName {
            name: name.to_string(),
        })
    }
}

/// A string literal of the replication grammar: single quotes doubled, no backslash escapes
/// (`repl_scanner.l`), no NUL byte.
pub(crate) fn quote_literal(what: &'static str, value: &str) -> Result<String, ProtoError> {
    if value.contains('\0') {
        return Err(ProtoError::InvalidArgument {
            what,
            value: value.replace('\0', "\\0"),
            why: "it contains a NUL byte",
        });
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

impl ReplConnection {
    /// `IDENTIFY_SYSTEM`: system identifier, current timeline and WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ProtoError> {
        let what = "IDENTIFY_SYSTEM";
        let sets = self.simple_query(what, "IDENTIFY_SYSTEM").await?;
        let row = self.one_row(&sets, what)?;
        Ok(SystemIdentity {
            system_id: self.parse_req(row, 0, what)?,
            timeline: TimelineId(self.parse_req(row, 1, what)?),
            xlogpos: self.parse_req(row, 2, what)?,
            dbname: self.text(row, 3, what)?,
        })
    }

    /// `TIMELINE_HISTORY tli`: the history file of a timeline (there is none for 1).
    pub async fn timeline_history(
        &mut self,
        timeline: TimelineId,
    ) -> Result<TimelineHistoryFile, ProtoError> {
        let what = "TIMELINE_HISTORY";
        let sql = format!("TIMELINE_HISTORY {}", timeline.0);
        let sets = self.simple_query(what, &sql).await?;
        let row = self.one_row(&sets, what)?;
        let file_name = self.req_text(row, 0, what)?;
        // The server declares the column bytea but sends the file's raw bytes.
        let content = match row.get(1) {
            Some(Some(b)) => b.clone(),
            _ => return Err(self.unexpected_result(what, "no content column")),
        };
        Ok(TimelineHistoryFile {
            timeline,
            file_name,
            content,
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] PHYSICAL [RESERVE_WAL]`, in the server's
    /// grammar (14: bare keyword; 15+: option list).
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        opts: SlotOptions,
    ) -> Result<CreatedSlot, ProtoError> {
        let what = "CREATE_REPLICATION_SLOT";
        validate_slot_name(name)?;
        let sql = create_slot_sql(self.features(), name, opts.temporary, opts.reserve_wal);
        let sets = self.simple_query(what, &sql).await?;
        let row = self.one_row(&sets, what)?;
        Ok(CreatedSlot {
            name: self.req_text(row, 0, what)?,
            consistent_point: self.parse_opt(row, 1, what)?,
        })
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`: with `wait`, waits for an active slot to be
    /// released instead of failing.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), ProtoError> {
        validate_slot_name(name)?;
        let sql = format!(
            "DROP_REPLICATION_SLOT {name}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query("DROP_REPLICATION_SLOT", &sql).await?;
        Ok(())
    }

    /// `READ_REPLICATION_SLOT name` (15+): `None` when no such slot exists.
    pub async fn read_slot(&mut self, name: &str) -> Result<Option<SlotInfo>, ProtoError> {
        let what = "READ_REPLICATION_SLOT";
        self.require(what, 15, self.features().read_replication_slot)?;
        validate_slot_name(name)?;
        let sets = self
            .simple_query(what, &format!("READ_REPLICATION_SLOT {name}"))
            .await?;
        let row = self.one_row(&sets, what)?;
        let Some(slot_type) = self.text(row, 0, what)? else {
            return Ok(None);
        };
        Ok(Some(SlotInfo {
            slot_type,
            restart_lsn: self.parse_opt(row, 1, what)?,
            restart_tli: self.parse_opt::<u32>(row, 2, what)?.map(TimelineId),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_postgresql_rules() {
        assert!(validate_slot_name("pitr_1").is_ok());
        assert!(validate_slot_name(&"a".repeat(63)).is_ok());
        for bad in ["", "Pitr", "a-b", "a b", "x;DROP", &"a".repeat(64)] {
            let err = validate_slot_name(bad).unwrap_err();
            assert!(err.to_string().contains("lower-case"), "{err}");
        }
    }

    #[test]
    fn literals_double_quotes_and_refuse_nul() {
        assert_eq!(quote_literal("label", "it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("label", "a\\b").unwrap(), "'a\\b'");
        assert!(quote_literal("label", "a\0b").is_err());
    }
}
