//! What a transaction did to relation files (created, dropped, truncated, rewritten), from
//! the decoder's summary, refined once names are known; and the cheap test that keeps only
//! possible incidents.

use std::collections::BTreeMap;

use pitr_pg::wal::{CatalogChange, CatalogRow, RelFileLocator, TxnOutcome, TxnSummary};
use pitr_pg::Lsn;

use super::report::rfc3339;
use super::{DbRef, RelReport, TxnReport};

/// Refines the file-based guess once names are known: a rewrite (`VACUUM FULL`, `CLUSTER`,
/// `ALTER TABLE` that rewrites) builds the new heap as a scratch relation, i.e. inserts a
/// `pg_class` row and deletes it again; `TRUNCATE` only updates `pg_class` rows. So files
/// replaced by empty ones (an empty TOAST table, say) in a transaction that inserted and deleted
/// `pg_class` rows were rewritten, not truncated.
pub fn classify(t: &mut TxnReport) {
    let scratch_relation = t.relations.iter().any(|r| {
        r.name.as_deref() == Some("pg_catalog.pg_class") && r.inserts > 0 && r.deletes > 0
    });
    if scratch_relation {
        for r in &mut t.relations {
            if r.inferred_truncate {
                r.truncated = false;
                r.inferred_truncate = false;
                r.rewritten = true;
            }
        }
    }
    undo_replacements_that_were_drops(t);
}

/// A file is only TRUNCATEd or rewritten when its relation's `pg_class` row gets the new file
/// number; the file-based guess calls every dropped file "replaced" as soon as the transaction
/// created any file (a migration: CREATE the new table, DROP the old one). When every `pg_class`
/// update of the transaction was read from the WAL and none gave a relation (known by OID) a new
/// file number, its row was deleted instead: that relation was dropped.
fn undo_replacements_that_were_drops(t: &mut TxnReport) {
    let Some(class_updates) = t
        .relations
        .iter()
        .find(|r| r.name.as_deref() == Some("pg_catalog.pg_class"))
        .map(|r| r.updates)
    else {
        return; // pg_class not identified: its updates cannot be counted
    };
    let updated: Vec<(u32, &pitr_pg::catalog::ClassRow)> = t
        .catalog
        .iter()
        .filter(|c| !c.inserted)
        .filter_map(|c| match &c.row {
            CatalogRow::Class(row) => Some((c.db.0, row)),
            CatalogRow::Namespace(_) => None,
        })
        .collect();
    if (updated.len() as u64) < class_updates {
        return; // some pg_class updates could not be read
    }
    for r in &mut t.relations {
        if !(r.rewritten || r.inferred_truncate) {
            continue;
        }
        let Some(oid) = r.oid else { continue };
        let refiled = updated
            .iter()
            .any(|(db, row)| *db == r.db_oid && row.oid.0 == oid && row.filenode != r.filenode);
        if !refiled {
            r.rewritten = false;
            r.truncated = false;
            r.inferred_truncate = false;
            r.dropped = true;
        }
    }
}

/// A cheap test on the summary: could [`incidents`] report this transaction?
pub(super) fn may_be_incident(s: &TxnSummary, threshold: u64) -> bool {
    s.outcome == TxnOutcome::Committed
        && (!s.dropped.is_empty()
            || !s.truncated.is_empty()
            || s.file_truncates.iter().any(|(_, b)| *b == 0)
            || s.relations
                .values()
                .any(|c| c.deletes > threshold || c.updates > threshold))
}

/// Turns the decoder's per-transaction summary into a report (names are filled in later).
/// `catalog` holds the `pg_class` rows the transaction wrote: a file whose row it inserted was
/// created by it, even when the file's creation was logged before it had an xid (PostgreSQL
/// 14 does that for the first file of `CREATE TABLE`).
pub(super) fn txn_report(
    s: TxnSummary,
    created_written: &[RelFileLocator],
    catalog: Vec<CatalogChange>,
) -> TxnReport {
    let outcome = match (&s.outcome, s.two_phase_end) {
        (TxnOutcome::Committed, false) => "commit",
        (TxnOutcome::Committed, true) => "commit prepared",
        (TxnOutcome::Aborted, false) => "abort",
        (TxnOutcome::Aborted, true) => "rollback prepared",
        (TxnOutcome::Prepared { .. }, _) => "prepare",
    };
    let committed = s.outcome == TxnOutcome::Committed;
    let mut rels: BTreeMap<RelFileLocator, RelReport> = BTreeMap::new();
    for (r, c) in &s.relations {
        let e = rels.entry(*r).or_insert_with(|| RelReport::new(*r));
        e.inserts = c.inserts;
        e.updates = c.updates;
        e.deletes = c.deletes;
    }
    for r in &s.created {
        rels.entry(*r).or_insert_with(|| RelReport::new(*r)).created = true;
    }
    let inserted_file = |r: &RelFileLocator| {
        catalog.iter().any(|c| match &c.row {
            CatalogRow::Class(row) => {
                c.inserted && c.db == r.db_oid && row.filenode != 0 && row.filenode == r.rel_number
            }
            CatalogRow::Namespace(_) => false,
        })
    };
    for (r, e) in rels.iter_mut() {
        if inserted_file(r) {
            e.created = true;
        }
    }
    if committed {
        // Files created and dropped by the same transaction are transient (CREATE and DROP in
        // one transaction, the scratch heap of VACUUM FULL). Of the others: new files that
        // received no writes replace dropped ones: TRUNCATE (refined by `classify` once names
        // are known). New files that were all written: a rewrite. No new files: DROP.
        let new_files: Vec<&RelFileLocator> = s
            .created
            .iter()
            .filter(|c| !s.dropped.contains(c))
            .collect();
        let empty_new = new_files.iter().any(|c| !created_written.contains(c));
        for r in &s.dropped {
            if s.created.contains(r) {
                continue;
            }
            if inserted_file(r) {
                rels.entry(*r).or_insert_with(|| RelReport::new(*r)).created = true;
                continue;
            }
            let e = rels.entry(*r).or_insert_with(|| RelReport::new(*r));
            if new_files.is_empty() {
                e.dropped = true;
            } else if empty_new {
                e.truncated = true;
                e.inferred_truncate = true;
            } else {
                e.rewritten = true;
            }
        }
        for (r, blocks) in &s.file_truncates {
            if *blocks == 0 {
                rels.entry(*r)
                    .or_insert_with(|| RelReport::new(*r))
                    .truncated = true;
            }
        }
    }
    TxnReport {
        xid: s.xid.0,
        outcome: outcome.to_string(),
        time: rfc3339(s.time),
        lsn: s.end_lsn,
        end_lsn: Lsn::INVALID,
        first_lsn: s.first_lsn,
        database: s.db.map(|d| DbRef {
            oid: d.0,
            name: None,
        }),
        records: s.records,
        bytes: s.bytes,
        subxacts: s.subxacts.iter().map(|x| x.0).collect(),
        relations: rels.into_values().collect(),
        truncated_oids: if committed {
            s.truncated.iter().map(|o| o.0).collect()
        } else {
            Vec::new()
        },
        catalog,
    }
}
