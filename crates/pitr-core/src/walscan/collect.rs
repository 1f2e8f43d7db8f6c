//! What the decoding loop collects from each record: transaction ends, restore points,
//! checkpoints, the files each transaction created and wrote, and the catalog rows written.

use std::collections::HashMap;

use jiff::Timestamp;
use pitr_pg::wal::{
    CatalogChange, CatalogEvent, CatalogTracker, PgTimestamp, Record, RecordKind, RelFileLocator,
    RmgrId, TxnOutcome, TxnSummary, TxnTracker, WalError, Xid,
};
use pitr_pg::Lsn;

use super::classify::{may_be_incident, txn_report};
use super::image::decompress_image;
use super::report::{pg_time_to_ts, rfc3339};
use super::{Bound, CheckpointReport, Event, RestorePointReport, ScanOptions, SegmentPlan};

/// The decoding loop's state.
pub(super) struct Acc {
    lsn_from: Lsn,
    lsn_to: Lsn,
    time_from: Option<Timestamp>,
    time_to: Option<Timestamp>,
    incidents_only: Option<u64>,
    /// Follows transactions to their end.
    pub(super) tracker: TxnTracker,
    /// Events collected and not yet handed over.
    pub(super) events: Vec<Event>,
    /// Files created per transaction, and those of them that were then written to (a
    /// rewrite fills its new file; TRUNCATE leaves it empty).
    created: HashMap<Xid, Vec<RelFileLocator>>,
    written: HashMap<Xid, Vec<RelFileLocator>>,
    /// The first record that could not be interpreted.
    pub(super) failure: Option<WalError>,
    /// Reads the catalog rows written to the WAL.
    pub(super) catalog: CatalogTracker,
    catalog_events: Vec<CatalogEvent>,
    /// Catalog rows per transaction, until it ends.
    catalog_pending: HashMap<Xid, Vec<CatalogChange>>,
    /// Catalog rows of committed transactions, with the commit LSN, for [`names::WalNames`].
    ///
    /// [`names::WalNames`]: super::names::WalNames
    pub(super) catalog_learnt: Vec<(Lsn, Vec<CatalogChange>)>,
    /// Catalog rows that could not be read: how many, and the first one.
    pub(super) catalog_unreadable: (u64, Option<String>),
}

impl Acc {
    /// The state before the first record of `plan`, with the range of `opts`.
    pub(super) fn new(plan: &SegmentPlan, opts: &ScanOptions) -> Acc {
        let (lsn_from, lsn_to) = plan.lsn_range;
        Acc {
            lsn_from,
            lsn_to,
            time_from: match &opts.from {
                Some(Bound::Time(t)) => Some(*t),
                _ => None,
            },
            time_to: match &opts.to {
                Some(Bound::Time(t)) => Some(*t),
                _ => None,
            },
            incidents_only: opts.incidents_only,
            tracker: TxnTracker::new(),
            events: Vec::new(),
            created: HashMap::new(),
            written: HashMap::new(),
            failure: None,
            catalog: CatalogTracker::new().with_decompressor(decompress_image),
            catalog_events: Vec::new(),
            catalog_pending: HashMap::new(),
            catalog_learnt: Vec::new(),
            catalog_unreadable: (0, None),
        }
    }

    fn in_time(&self, t: PgTimestamp) -> bool {
        let ts = pg_time_to_ts(t);
        self.time_from.is_none_or(|f| ts.is_some_and(|x| x >= f))
            && self.time_to.is_none_or(|to| ts.is_some_and(|x| x <= to))
    }

    /// Takes in one record, in WAL order.
    pub(super) fn record(&mut self, rec: Record<'_>) {
        if self.failure.is_some() {
            return;
        }
        self.catalog_rows(&rec);
        let xid = rec.xid();
        self.note_written(xid, &rec);
        let in_lsn = rec.lsn >= self.lsn_from && rec.lsn < self.lsn_to;
        // Only storage and XLOG records matter here; the tracker interprets the rest.
        let kind = if rec.rmgr() == RmgrId::SMGR || rec.rmgr() == RmgrId::XLOG {
            match rec.kind() {
                Ok(k) => k,
                Err(e) => {
                    self.failure = Some(e);
                    return;
                }
            }
        } else {
            RecordKind::Other
        };
        match &kind {
            RecordKind::SmgrCreate(c) if xid.is_valid() => {
                self.created.entry(xid).or_default().push(c.rel);
            }
            RecordKind::RestorePoint(rp)
                if in_lsn && self.incidents_only.is_none() && self.in_time(rp.time) =>
            {
                self.events.push(Event::RestorePoint(RestorePointReport {
                    name: String::from_utf8_lossy(rp.name).into_owned(),
                    time: rfc3339(rp.time),
                    lsn: rec.lsn,
                }));
            }
            RecordKind::Checkpoint(c)
                if in_lsn && self.incidents_only.is_none() && self.in_time(c.time) =>
            {
                self.events.push(Event::Checkpoint(CheckpointReport {
                    shutdown: c.shutdown,
                    lsn: rec.lsn,
                    redo: c.redo,
                    time: rfc3339(c.time),
                    timeline: c.timeline.0,
                }));
            }
            _ => {}
        }
        match self.tracker.add(&rec) {
            Ok(Some(s)) => self.txn_ended(s, &rec, in_lsn),
            Ok(None) => {}
            Err(e) => self.failure = Some(e),
        }
    }

    /// Keeps the catalog rows `rec` wrote, per transaction, and counts those it could not
    /// read.
    fn catalog_rows(&mut self, rec: &Record<'_>) {
        self.catalog.record(rec, &mut self.catalog_events);
        for e in self.catalog_events.drain(..) {
            match e {
                CatalogEvent::Row(c) if c.xid.is_valid() => {
                    self.catalog_pending.entry(c.xid).or_default().push(c);
                }
                CatalogEvent::Row(_) => {}
                CatalogEvent::Unreadable {
                    lsn, rel, reason, ..
                } => {
                    let (n, first) = &mut self.catalog_unreadable;
                    *n += 1;
                    first.get_or_insert_with(|| format!("at {lsn} in {rel}: {reason}"));
                }
            }
        }
    }

    /// Notes the files that transaction `xid` created and `rec` writes to.
    fn note_written(&mut self, xid: Xid, rec: &Record<'_>) {
        if self.created.is_empty() || !xid.is_valid() {
            return;
        }
        if let Some(c) = self.created.get(&xid) {
            for b in rec.blocks() {
                if c.contains(&b.rel) {
                    let w = self.written.entry(xid).or_default();
                    if !w.contains(&b.rel) {
                        w.push(b.rel);
                    }
                }
            }
        }
    }

    /// A transaction ended at `rec`: gathers what it and its subtransactions created, wrote
    /// and put in the catalog, and reports it when it is in the range (and, with
    /// `incidents_only`, may be an incident).
    fn txn_ended(&mut self, s: TxnSummary, rec: &Record<'_>, in_lsn: bool) {
        let mut sub_written = Vec::new();
        let mut catalog = Vec::new();
        let prepared = matches!(s.outcome, TxnOutcome::Prepared { .. });
        for x in std::iter::once(s.xid).chain(s.subxacts.iter().copied()) {
            self.created.remove(&x);
            if let Some(w) = self.written.remove(&x) {
                sub_written.extend(w);
            }
            // A prepared transaction's rows count when COMMIT PREPARED comes.
            let rows = if prepared {
                self.catalog_pending.get(&x).cloned()
            } else {
                self.catalog_pending.remove(&x)
            };
            catalog.extend(rows.into_iter().flatten());
        }
        catalog.sort_by_key(|c| c.lsn);
        if s.outcome == TxnOutcome::Committed && !catalog.is_empty() {
            self.catalog_learnt.push((s.end_lsn, catalog.clone()));
        }
        let wanted = match self.incidents_only {
            None => true,
            Some(t) => may_be_incident(&s, t),
        };
        if wanted && in_lsn && self.in_time(s.time) {
            let mut t = txn_report(s, &sub_written, catalog);
            t.end_lsn = rec.end_lsn;
            self.events.push(Event::Transaction(t));
        }
    }
}
