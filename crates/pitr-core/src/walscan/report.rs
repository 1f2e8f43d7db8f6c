//! What a scan reports: transactions with the relations they touched, restore points,
//! checkpoints, and what was read.

use std::fmt;

use jiff::Timestamp;
use pitr_pg::wal::{CatalogChange, PgTimestamp, RelFileLocator};
use pitr_pg::Lsn;
use serde::Serialize;

/// A relation named (or not) in a report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RelReport {
    /// Storage: tablespace/database/file number, as `pg_waldump` prints it.
    pub file: String,
    /// Tablespace OID.
    pub spc_oid: u32,
    /// Database OID.
    pub db_oid: u32,
    /// File number (`relfilenode`).
    pub filenode: u32,
    /// Relation OID, when the catalog that named it says.
    pub oid: Option<u32>,
    /// `schema.name`, when known.
    pub name: Option<String>,
    /// `relkind` (`r` table, `i` index, `t` TOAST, …), when known.
    pub kind: Option<String>,
    /// Where the name comes from: `live` (the running server), `backup <label>` or
    /// `wal <LSN>` (the `pg_class` row written at that LSN).
    pub name_from: Option<String>,
    /// Tuples inserted.
    pub inserts: u64,
    /// Tuples updated.
    pub updates: u64,
    /// Tuples deleted.
    pub deletes: u64,
    /// Emptied by `TRUNCATE` (heap truncate record with wal_level=logical, a file truncated to
    /// 0 blocks, or its file replaced by an empty new one).
    pub truncated: bool,
    /// Its file was deleted at commit with no replacement created: `DROP`.
    pub dropped: bool,
    /// Its file was replaced by a rewritten one (VACUUM FULL, CLUSTER, ALTER TABLE rewrite).
    pub rewritten: bool,
    /// Its file was created by this transaction.
    pub created: bool,
    /// `truncated` was inferred from files replaced by empty ones (not from a TRUNCATE record).
    #[serde(skip)]
    pub(crate) inferred_truncate: bool,
}

impl RelReport {
    pub(super) fn new(r: RelFileLocator) -> RelReport {
        RelReport {
            file: r.default_path().unwrap_or_else(|| r.to_string()),
            spc_oid: r.spc_oid.0,
            db_oid: r.db_oid.0,
            filenode: r.rel_number,
            oid: None,
            name: None,
            kind: None,
            name_from: None,
            inserts: 0,
            updates: 0,
            deletes: 0,
            truncated: false,
            dropped: false,
            rewritten: false,
            created: false,
            inferred_truncate: false,
        }
    }

    /// The name if known, else the file.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.file)
    }

    /// `DROP`, `TRUNCATE`, `rewrite`, `create` and the row counts, for people.
    pub fn how(&self) -> String {
        let mut parts = Vec::new();
        if self.dropped {
            parts.push("DROP".to_string());
        }
        if self.truncated {
            parts.push("TRUNCATE".to_string());
        }
        if self.rewritten {
            parts.push("rewrite".to_string());
        }
        if self.created {
            parts.push("create".to_string());
        }
        for (n, what) in [
            (self.inserts, "ins"),
            (self.updates, "upd"),
            (self.deletes, "del"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(" ")
    }
}

/// A database, by OID and, when known, name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DbRef {
    /// OID.
    pub oid: u32,
    /// Name, when known.
    pub name: Option<String>,
}

/// One transaction end.
#[derive(Debug, Clone, Serialize)]
pub struct TxnReport {
    /// Top-level transaction ID.
    pub xid: u32,
    /// `commit`, `abort`, `prepare`, `commit prepared` or `rollback prepared`.
    pub outcome: String,
    /// Commit/abort time (UTC, RFC 3339).
    pub time: String,
    /// LSN of the commit (abort, prepare) record: `--target-lsn` for this transaction.
    #[serde(serialize_with = "display")]
    pub lsn: Lsn,
    /// LSN just after that record.
    #[serde(serialize_with = "display")]
    pub end_lsn: Lsn,
    /// First record of the transaction seen in the range.
    #[serde(serialize_with = "display")]
    pub first_lsn: Lsn,
    /// Database.
    pub database: Option<DbRef>,
    /// Records written (in the range).
    pub records: u64,
    /// Bytes of those records.
    pub bytes: u64,
    /// Subtransactions.
    pub subxacts: Vec<u32>,
    /// Relations touched, and how.
    pub relations: Vec<RelReport>,
    /// Relation OIDs truncated (heap truncate record) that no catalog could place.
    pub truncated_oids: Vec<u32>,
    /// The `pg_class` / `pg_namespace` rows this transaction wrote (names what it created).
    #[serde(skip)]
    pub(crate) catalog: Vec<CatalogChange>,
}

/// A named restore point (`pg_create_restore_point`).
#[derive(Debug, Clone, Serialize)]
pub struct RestorePointReport {
    /// Name: `--target-name`.
    pub name: String,
    /// Time (UTC, RFC 3339).
    pub time: String,
    /// LSN of the record.
    #[serde(serialize_with = "display")]
    pub lsn: Lsn,
}

/// A checkpoint record.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Shutdown checkpoint (else online).
    pub shutdown: bool,
    /// LSN of the record.
    #[serde(serialize_with = "display")]
    pub lsn: Lsn,
    /// Its redo point.
    #[serde(serialize_with = "display")]
    pub redo: Lsn,
    /// Time (UTC, RFC 3339).
    pub time: String,
    /// Timeline.
    pub timeline: u32,
}

/// Something in the WAL worth showing, in WAL order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A transaction ended.
    Transaction(TxnReport),
    /// A restore point.
    RestorePoint(RestorePointReport),
    /// A checkpoint.
    Checkpoint(CheckpointReport),
}

impl Event {
    /// LSN of the record.
    pub fn lsn(&self) -> Lsn {
        match self {
            Event::Transaction(t) => t.lsn,
            Event::RestorePoint(r) => r.lsn,
            Event::Checkpoint(c) => c.lsn,
        }
    }
}

/// What was scanned.
#[derive(Debug, Clone, Serialize)]
pub struct ScanInfo {
    /// Cluster name.
    pub cluster: String,
    /// Timeline followed.
    pub timeline: u32,
    /// True when `timeline` is the newest archived one.
    pub latest_timeline: bool,
    /// Segments decoded.
    pub segments: u64,
    /// First segment decoded.
    pub first_segment: String,
    /// Last segment decoded.
    pub last_segment: String,
    /// Bytes of WAL decoded.
    pub bytes: u64,
    /// Records decoded.
    pub records: u64,
    /// Where decoding stopped, and why.
    pub end: String,
    /// LSN where decoding stopped.
    #[serde(serialize_with = "display")]
    pub end_lsn: Lsn,
    /// Missing segment that stopped the scan before the end of the range.
    pub gap: Option<String>,
    /// Transactions still open at the end.
    pub open_transactions: usize,
    /// Warnings (names that could not be looked up, …).
    pub warnings: Vec<String>,
}

/// `pitr wal log`.
#[derive(Debug, Clone, Serialize)]
pub struct WalLog {
    /// What was read.
    pub scan: ScanInfo,
    /// Transactions, restore points and checkpoints, in WAL order.
    pub events: Vec<Event>,
}

/// Serializes with `Display` (LSNs as `X/X`).
pub(super) fn display<T: fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A PostgreSQL timestamp as RFC 3339 UTC (microseconds).
pub fn rfc3339(t: PgTimestamp) -> String {
    match Timestamp::from_microsecond(t.to_unix_micros()) {
        Ok(ts) => ts.to_string(),
        Err(_) => t.to_string(),
    }
}

/// A PostgreSQL timestamp as a [`Timestamp`], when in range.
pub(super) fn pg_time_to_ts(t: PgTimestamp) -> Option<Timestamp> {
    Timestamp::from_microsecond(t.to_unix_micros()).ok()
}
