//! Per-transaction summaries: what each transaction did, reported when it ends.
//!
//! Records are accumulated by the xid in their header (a subtransaction's own xid); when a
//! commit, abort or prepare record arrives, the subtransactions it lists are merged into the
//! top-level transaction and the summary is returned. A rolled-back subtransaction writes its
//! own abort record and is reported on its own. `COMMIT PREPARED` / `ROLLBACK PREPARED` are
//! reported as separate summaries holding only that record (the work was reported at
//! `PREPARE`).

use std::collections::{BTreeMap, HashMap};

use crate::Lsn;

use super::error::WalError;
use super::record::Record;
use super::records::{HeapOp, RecordKind, XidList};
use super::timestamp::PgTimestamp;
use super::types::{ForkNumber, Oid, RelFileLocator, RmgrId, Xid};

/// Tuple changes to one relation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelChanges {
    /// Tuples inserted (multi-inserts count each tuple).
    pub inserts: u64,
    /// Tuples updated (including HOT updates).
    pub updates: u64,
    /// Tuples deleted.
    pub deletes: u64,
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Committed (or `COMMIT PREPARED`).
    Committed,
    /// Aborted (or `ROLLBACK PREPARED`).
    Aborted,
    /// Prepared for two-phase commit with this global id.
    Prepared {
        /// The GID given to `PREPARE TRANSACTION`.
        gid: String,
    },
}

/// What one transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnSummary {
    /// The top-level transaction.
    pub xid: Xid,
    /// How it ended.
    pub outcome: TxnOutcome,
    /// Commit, abort or prepare time.
    pub time: PgTimestamp,
    /// True for `COMMIT PREPARED` / `ROLLBACK PREPARED`.
    pub two_phase_end: bool,
    /// LSN of its first record seen.
    pub first_lsn: Lsn,
    /// LSN of the record that ended it.
    pub end_lsn: Lsn,
    /// Records, including the ending one.
    pub records: u64,
    /// Bytes of those records (`xl_tot_len`).
    pub bytes: u64,
    /// Records per resource manager.
    pub records_by_rmgr: BTreeMap<RmgrId, u64>,
    /// Tuple changes per relation file.
    pub relations: BTreeMap<RelFileLocator, RelChanges>,
    /// Relations emptied by `TRUNCATE` (relation OIDs; logged with wal_level=logical).
    pub truncated: Vec<Oid>,
    /// Relation files deleted when the transaction ended (`DROP TABLE`, rewrites, …).
    pub dropped: Vec<RelFileLocator>,
    /// Relation files created (main fork): the new file of a `TRUNCATE` or rewrite, which
    /// then drops the old one, and those of `CREATE TABLE`. A creation logged before the
    /// transaction had an xid (the first table of a `CREATE TABLE` often is) is not counted;
    /// statements that lock an existing table exclusively get their xid first.
    pub created: Vec<RelFileLocator>,
    /// Relation files truncated in place to this many blocks (`TRUNCATE` of a table created
    /// or emptied in the same transaction).
    pub file_truncates: Vec<(RelFileLocator, u32)>,
    /// Database: from the end record when it says, else from the first relation file touched.
    pub db: Option<Oid>,
    /// Subtransactions merged into this summary.
    pub subxacts: Vec<Xid>,
}

#[derive(Debug, Clone, Default)]
struct Partial {
    first_lsn: Option<Lsn>,
    records: u64,
    bytes: u64,
    by_rmgr: BTreeMap<RmgrId, u64>,
    relations: BTreeMap<RelFileLocator, RelChanges>,
    truncated: Vec<Oid>,
    created: Vec<RelFileLocator>,
    file_truncates: Vec<(RelFileLocator, u32)>,
    db: Option<Oid>,
}

impl Partial {
    fn count(&mut self, rec: &Record<'_>) {
        self.first_lsn.get_or_insert(rec.lsn);
        self.records += 1;
        self.bytes += u64::from(rec.total_len());
        *self.by_rmgr.entry(rec.rmgr()).or_default() += 1;
    }

    fn merge(&mut self, other: Partial) {
        self.first_lsn = match (self.first_lsn, other.first_lsn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.records += other.records;
        self.bytes += other.bytes;
        for (k, v) in other.by_rmgr {
            *self.by_rmgr.entry(k).or_default() += v;
        }
        for (k, v) in other.relations {
            let e = self.relations.entry(k).or_default();
            e.inserts += v.inserts;
            e.updates += v.updates;
            e.deletes += v.deletes;
        }
        self.truncated.extend(other.truncated);
        self.created.extend(other.created);
        self.file_truncates.extend(other.file_truncates);
        self.db = self.db.or(other.db);
    }
}

/// Remembers the first database seen (0 is a shared catalog, not a database).
fn note_db(db: &mut Option<Oid>, seen: Oid) {
    if db.is_none() && seen.0 != 0 {
        *db = Some(seen);
    }
}

/// Follows transactions through a WAL stream and summarizes each one when it ends.
#[derive(Debug, Clone, Default)]
pub struct TxnTracker {
    open: HashMap<Xid, Partial>,
}

impl TxnTracker {
    /// An empty tracker.
    pub fn new() -> TxnTracker {
        TxnTracker::default()
    }

    /// Transactions with records but no end seen yet, with their first LSN.
    pub fn open_transactions(&self) -> impl Iterator<Item = (Xid, Lsn)> + '_ {
        self.open
            .iter()
            .map(|(x, p)| (*x, p.first_lsn.unwrap_or(Lsn::INVALID)))
    }

    /// Accounts for one record; returns the summary of the transaction it ends, if any.
    pub fn add(&mut self, rec: &Record<'_>) -> Result<Option<TxnSummary>, WalError> {
        let kind = rec.kind()?;
        let xid = rec.xid();
        let (top, outcome, time, subxacts, dropped, two_phase_end, end_db) = match kind {
            RecordKind::Commit(e) | RecordKind::Abort(e) => {
                let outcome = if matches!(kind, RecordKind::Commit(_)) {
                    TxnOutcome::Committed
                } else {
                    TxnOutcome::Aborted
                };
                (
                    e.xid,
                    outcome,
                    e.time,
                    e.subxacts,
                    e.dropped_rels.iter().collect(),
                    e.prepared,
                    e.db.map(|(db, _)| db),
                )
            }
            RecordKind::Prepare(p) => (
                p.xid,
                TxnOutcome::Prepared {
                    gid: String::from_utf8_lossy(p.gid).into_owned(),
                },
                p.prepared_at,
                p.subxacts,
                Vec::new(),
                false,
                Some(p.db),
            ),
            _ => {
                if xid.is_valid() {
                    let p = self.open.entry(xid).or_default();
                    p.count(rec);
                    match kind {
                        RecordKind::Heap(h) => {
                            if let Some(rel) = h.rel {
                                note_db(&mut p.db, rel.db_oid);
                                let c = p.relations.entry(rel).or_default();
                                match h.op {
                                    HeapOp::Insert | HeapOp::MultiInsert => {
                                        c.inserts += u64::from(h.tuples)
                                    }
                                    HeapOp::Update | HeapOp::HotUpdate => c.updates += 1,
                                    HeapOp::Delete => c.deletes += 1,
                                    _ => {}
                                }
                            }
                        }
                        RecordKind::HeapTruncate(t) => {
                            note_db(&mut p.db, t.db);
                            p.truncated.extend(t.relids.iter())
                        }
                        RecordKind::SmgrCreate(c) if c.fork == ForkNumber::MAIN => {
                            note_db(&mut p.db, c.rel.db_oid);
                            p.created.push(c.rel)
                        }
                        RecordKind::SmgrTruncate(t) => {
                            note_db(&mut p.db, t.rel.db_oid);
                            p.file_truncates.push((t.rel, t.blocks))
                        }
                        _ => {}
                    }
                }
                return Ok(None);
            }
        };
        Ok(Some(self.close(
            rec,
            top,
            outcome,
            time,
            subxacts,
            dropped,
            two_phase_end,
            end_db,
        )))
    }

    #[allow(clippy::too_many_arguments)]
    fn close(
        &mut self,
        rec: &Record<'_>,
        top: Xid,
        outcome: TxnOutcome,
        time: PgTimestamp,
        subxacts: XidList<'_>,
        dropped: Vec<RelFileLocator>,
        two_phase_end: bool,
        end_db: Option<Oid>,
    ) -> TxnSummary {
        let mut p = self.open.remove(&top).unwrap_or_default();
        // The ending record may carry a subtransaction's xid (a rolled-back savepoint).
        if rec.xid().is_valid() && rec.xid() != top {
            if let Some(own) = self.open.remove(&rec.xid()) {
                p.merge(own);
            }
        }
        let mut subs = Vec::with_capacity(subxacts.len());
        for sub in subxacts.iter() {
            if let Some(s) = self.open.remove(&sub) {
                p.merge(s);
            }
            subs.push(sub);
        }
        p.count(rec);
        let db = end_db
            .filter(|d| d.0 != 0)
            .or(p.db)
            .or_else(|| dropped.iter().map(|r| r.db_oid).find(|d| d.0 != 0));
        TxnSummary {
            xid: top,
            outcome,
            time,
            two_phase_end,
            first_lsn: p.first_lsn.unwrap_or(rec.lsn),
            end_lsn: rec.lsn,
            records: p.records,
            bytes: p.bytes,
            records_by_rmgr: p.by_rmgr,
            relations: p.relations,
            truncated: p.truncated,
            dropped,
            created: p.created,
            file_truncates: p.file_truncates,
            db,
            subxacts: subs,
        }
    }
}
