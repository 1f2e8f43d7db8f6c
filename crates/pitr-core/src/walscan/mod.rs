//! `pitr wal`: reads archived WAL from the repository, decodes it with `pitr_pg::wal` and
//! reports what each transaction did (`log`), and which transactions destroyed data
//! (`incidents`), with the recovery targets that undo them.
//!
//! The plan: pick the timeline (default the newest archived) and, along its history, the
//! archived segment that holds each segment number (the newest timeline whose part of the
//! history covers it, as PostgreSQL's `XLogFileReadAnyTLI`); cut the run to `--from`/`--to`
//! (an LSN or segment name narrows the segments; a time filters what is reported); stop at the
//! first missing segment. Segments are fetched (verified) ahead of the decoder, which streams
//! them in order so records may cross segment boundaries. The `pg_class` / `pg_namespace`
//! rows written to the WAL are read on the way ([`CatalogTracker`]) and kept per transaction
//! until it ends; relation names are filled in afterwards by [`names`], which also uses the
//! rows of transactions committed before.

pub mod names;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use pitr_pg::wal::{
    CatalogChange, CatalogEvent, CatalogRow, CatalogTracker, EndReason, ImageCompression,
    PgTimestamp, RecordKind, RelFileLocator, RmgrId, TxnOutcome, TxnSummary, TxnTracker,
    WalDecoder, WalError, Xid,
};
use pitr_pg::{Lsn, SegNo, TimelineHistory, TimelineId, WalFileName, WalSegSize};
use pitr_repo::{ClusterRepo, RepoError};
use serde::Serialize;

use crate::restore::target::{parse_time, TargetError};

/// Segments fetched ahead of the decoder.
const PREFETCH: usize = 4;

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum WalScanError {
    /// Repository problem (including a segment whose checksum does not match).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Nothing archived for the cluster.
    #[error("cluster {cluster:?} has no archived WAL in {repo}\nhint: check --repo and --cluster, and that archive_command runs `pitr archive-push %p`")]
    NoWal {
        /// Cluster name.
        cluster: String,
        /// Repository location.
        repo: String,
    },
    /// The timeline asked for has no archived WAL.
    #[error("timeline {tli} has no archived WAL (archived timelines: {available})")]
    NoTimeline {
        /// Timeline asked for.
        tli: u32,
        /// Timelines that have WAL.
        available: String,
    },
    /// `--from` / `--to` cannot be parsed.
    #[error("invalid {flag} {input:?}: {reason}\nhint: give an LSN (0/4031F10), a WAL segment name (000000010000000000000004) or a time ('2025-07-10 12:36:52+02')")]
    Bound {
        /// Which flag.
        flag: &'static str,
        /// What was given.
        input: String,
        /// Why it is not valid.
        reason: String,
    },
    /// `--from` is after `--to`.
    #[error("--from {from} is after --to {to}")]
    EmptyRange {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// No archived segment in the range.
    #[error("no archived WAL of timeline {tli} between {from} and {to}")]
    NothingInRange {
        /// Timeline.
        tli: u32,
        /// Range start.
        from: String,
        /// Range end.
        to: String,
    },
    /// The WAL is damaged in the middle (valid WAL continues after the bad spot).
    #[error("archived WAL is damaged at {lsn} (segment {segment}): {source}")]
    Damaged {
        /// Where.
        lsn: Lsn,
        /// Segment being decoded.
        segment: String,
        /// The decoder's error.
        source: WalError,
    },
    /// The history file of the timeline is unreadable.
    #[error("timeline history {name}: {reason}")]
    History {
        /// File name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl WalScanError {
    /// True for errors in the options rather than in the data.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WalScanError::Bound { .. }
                | WalScanError::EmptyRange { .. }
                | WalScanError::NoTimeline { .. }
        )
    }

    /// True when stored data failed verification.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            WalScanError::Damaged { .. } | WalScanError::Repo(RepoError::Corrupt { .. })
        )
    }
}

/// One end of the range: `--from` / `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A WAL position.
    Lsn(Lsn),
    /// A segment: from its first byte (`--from`) or through its last byte (`--to`).
    Segment(WalFileName),
    /// A time: transactions, restore points and checkpoints from (or up to) it.
    Time(Timestamp),
}

impl Bound {
    /// Parses a segment name, an LSN or a time, in that order; `flag` names the option in
    /// errors.
    pub fn parse(flag: &'static str, s: &str) -> Result<Bound, WalScanError> {
        let t = s.trim();
        if t.len() == 24 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(n @ WalFileName::Segment { .. }) = WalFileName::parse(&t.to_uppercase()) {
                return Ok(Bound::Segment(n));
            }
        }
        if t.contains('/') && !t.contains(' ') && !t.contains('[') {
            return t.parse().map(Bound::Lsn).map_err(|_| WalScanError::Bound {
                flag,
                input: s.to_string(),
                reason: "not an LSN".into(),
            });
        }
        parse_time(t)
            .map(|tt| Bound::Time(tt.at))
            .map_err(|e| WalScanError::Bound {
                flag,
                input: s.to_string(),
                reason: match e {
                    TargetError::Time { reason, .. } => reason,
                    other => other.to_string(),
                },
            })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Lsn(l) => write!(f, "{l}"),
            Bound::Segment(s) => write!(f, "{s}"),
            Bound::Time(t) => write!(f, "{t}"),
        }
    }
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Start of the range (default: the oldest archived WAL).
    pub from: Option<Bound>,
    /// End of the range (default: the end of archived WAL).
    pub to: Option<Bound>,
    /// Timeline to follow (default: the newest archived).
    pub timeline: Option<TimelineId>,
    /// Report only transactions that may be incidents (with this row threshold), not every
    /// transaction, restore point and checkpoint: keeps memory and time small on big ranges.
    pub incidents_only: Option<u64>,
}

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
    fn new(r: RelFileLocator) -> RelReport {
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

/// The segments of one scan, in order.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Timeline followed.
    pub timeline: TimelineId,
    /// Its history.
    pub history: TimelineHistory,
    /// True when `timeline` is the newest archived one.
    pub latest: bool,
    /// Segment size.
    pub seg_size: WalSegSize,
    /// Files to decode, in order.
    pub files: Vec<WalFileName>,
    /// The first missing segment, when the run stops before the range ends.
    pub gap: Option<WalFileName>,
    /// LSN range for records (`--from`/`--to` given as LSN or segment).
    pub lsn_range: (Lsn, Lsn),
}

fn seg_of(b: &Bound, seg_size: WalSegSize) -> Option<SegNo> {
    match b {
        Bound::Lsn(l) => Some(seg_size.segno_of(*l)),
        Bound::Segment(n) => n.segno(seg_size),
        Bound::Time(_) => None,
    }
}

/// Chooses the segments to decode.
pub async fn plan(cluster: &ClusterRepo, opts: &ScanOptions) -> Result<SegmentPlan, WalScanError> {
    let no_wal = || WalScanError::NoWal {
        cluster: cluster.name().to_string(),
        repo: cluster.repo().location(),
    };
    let identity = cluster.identity().await?.ok_or_else(no_wal)?;
    let seg_size = WalSegSize::new(identity.wal_seg_size).map_err(|_| no_wal())?;
    let entries = cluster.list_wal().await?;
    let mut by_tli: BTreeMap<TimelineId, BTreeMap<SegNo, WalFileName>> = BTreeMap::new();
    for e in &entries {
        if let (WalFileName::Segment { .. }, Some(n)) = (&e.name, e.name.segno(seg_size)) {
            by_tli
                .entry(e.name.timeline())
                .or_default()
                .insert(n, e.name);
        }
    }
    let newest = *by_tli.keys().next_back().ok_or_else(no_wal)?;
    let tli = opts.timeline.unwrap_or(newest);
    if !by_tli.contains_key(&tli) {
        return Err(WalScanError::NoTimeline {
            tli: tli.0,
            available: by_tli
                .keys()
                .map(|t| t.0.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let history = if tli.0 > 1 {
        let name = WalFileName::History { tli };
        match cluster.get_wal(&name).await? {
            Some(bytes) => {
                TimelineHistory::parse(tli, &bytes).map_err(|e| WalScanError::History {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?
            }
            None => TimelineHistory::root(tli),
        }
    } else {
        TimelineHistory::root(tli)
    };
    // For each segment number, the newest timeline of the history that covers it and whose
    // file is archived.
    let mut tlis: Vec<TimelineId> = history.entries.iter().map(|e| e.parent).collect();
    tlis.push(tli);
    let mut chosen: BTreeMap<SegNo, WalFileName> = BTreeMap::new();
    for t in tlis.iter().rev() {
        let Some(files) = by_tli.get(t) else { continue };
        let begin = history
            .begin_of(*t)
            .map_or(SegNo(0), |l| seg_size.segno_of(l));
        let end = match history.end_of(*t) {
            Ok(Some(l)) => Some(seg_size.segno_of(l)),
            _ => None,
        };
        for (n, f) in files {
            if *n >= begin && end.is_none_or(|e| *n <= e) {
                chosen.entry(*n).or_insert(*f);
            }
        }
    }
    let first_archived = *chosen.keys().next().ok_or_else(no_wal)?;
    let last_archived = *chosen.keys().next_back().ok_or_else(no_wal)?;
    let from_seg = opts
        .from
        .as_ref()
        .and_then(|b| seg_of(b, seg_size))
        .unwrap_or(first_archived)
        .max(first_archived);
    let to_seg = opts
        .to
        .as_ref()
        .and_then(|b| seg_of(b, seg_size))
        .unwrap_or(last_archived)
        .min(last_archived);
    let lsn_from = match &opts.from {
        Some(Bound::Lsn(l)) => *l,
        _ => Lsn::INVALID,
    };
    let lsn_to = match &opts.to {
        Some(Bound::Lsn(l)) => *l,
        _ => Lsn(u64::MAX),
    };
    if let (Some(f), Some(t)) = (&opts.from, &opts.to) {
        let inverted = match (f, t) {
            (Bound::Time(a), Bound::Time(b)) => a > b,
            (Bound::Time(_), _) | (_, Bound::Time(_)) => false,
            _ => seg_of(f, seg_size) > seg_of(t, seg_size) || lsn_from > lsn_to,
        };
        if inverted {
            return Err(WalScanError::EmptyRange {
                from: f.to_string(),
                to: t.to_string(),
            });
        }
    }
    let mut files = Vec::new();
    let mut gap = None;
    let mut n = from_seg;
    // Start at the first archived segment at or after `from`.
    if !chosen.contains_key(&n) {
        n = chosen
            .range(n..)
            .next()
            .map_or(SegNo(u64::MAX), |(k, _)| *k);
    }
    while n <= to_seg {
        match chosen.get(&n) {
            Some(f) => files.push(*f),
            None => {
                gap = Some(WalFileName::segment(
                    history.timeline_at(seg_size.start_of(n).unwrap_or(Lsn::INVALID)),
                    n,
                    seg_size,
                ));
                break;
            }
        }
        n = n.next();
    }
    if files.is_empty() {
        return Err(WalScanError::NothingInRange {
            tli: tli.0,
            from: opts
                .from
                .as_ref()
                .map_or("the start".into(), |b| b.to_string()),
            to: opts.to.as_ref().map_or("the end".into(), |b| b.to_string()),
        });
    }
    Ok(SegmentPlan {
        timeline: tli,
        history,
        latest: tli == newest,
        seg_size,
        files,
        gap,
        lsn_range: (lsn_from, lsn_to),
    })
}

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
fn may_be_incident(s: &TxnSummary, threshold: u64) -> bool {
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
fn txn_report(
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

/// Serializes with `Display` (LSNs as `X/X`).
fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A PostgreSQL timestamp as RFC 3339 UTC (microseconds).
pub fn rfc3339(t: PgTimestamp) -> String {
    match Timestamp::from_microsecond(t.to_unix_micros()) {
        Ok(ts) => ts.to_string(),
        Err(_) => t.to_string(),
    }
}

fn pg_time_to_ts(t: PgTimestamp) -> Option<Timestamp> {
    Timestamp::from_microsecond(t.to_unix_micros()).ok()
}

/// Hands the events decoded so far to `emit`, named and classified, after teaching `namer` the
/// catalog rows they wrote; returns how many relations stayed unnamed.
async fn hand_over<F: FnMut(Event)>(
    acc: &mut Acc,
    namer: &mut names::Namer<'_>,
    emit: &mut F,
) -> usize {
    for (lsn, rows) in acc.catalog_learnt.drain(..) {
        namer.wal.learn(lsn, &rows);
    }
    let mut unnamed = 0;
    for mut e in acc.events.drain(..) {
        namer.name_event(&mut e).await;
        if let Event::Transaction(t) = &mut e {
            classify(t);
            unnamed += t
                .relations
                .iter()
                .filter(|r| r.name.is_none() && r.db_oid != 0)
                .count();
        }
        emit(e);
    }
    unnamed
}

/// Decodes the planned segments and collects the report (see [`scan`]).
pub async fn log(
    cluster: &ClusterRepo,
    plan: &SegmentPlan,
    opts: &ScanOptions,
    namer: &mut names::Namer<'_>,
) -> Result<WalLog, WalScanError> {
    let mut events = Vec::new();
    let scan = scan(cluster, plan, opts, namer, |e| events.push(e)).await?;
    Ok(WalLog { scan, events })
}

/// Decodes the planned segments and hands each transaction, restore point and checkpoint to
/// `emit` in WAL order, named by `namer`, as the segments are decoded (memory stays bounded
/// however long the range).
pub async fn scan<F: FnMut(Event)>(
    cluster: &ClusterRepo,
    plan: &SegmentPlan,
    opts: &ScanOptions,
    namer: &mut names::Namer<'_>,
    mut emit: F,
) -> Result<ScanInfo, WalScanError> {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<(WalFileName, Vec<u8>), WalScanError>>(PREFETCH);
    let fetcher = {
        let cluster = cluster.clone();
        let files = plan.files.clone();
        tokio::spawn(async move {
            for f in files {
                let got = match cluster.get_wal(&f).await {
                    Ok(Some(b)) => Ok((f, b)),
                    Ok(None) => Err(WalScanError::Repo(RepoError::Corrupt {
                        repo: cluster.repo().location(),
                        key: cluster.wal_key(&f),
                        source: pitr_repo::frame::FrameError::Truncated(0),
                    })),
                    Err(e) => Err(e.into()),
                };
                let stop = got.is_err();
                if tx.send(got).await.is_err() || stop {
                    return;
                }
            }
        })
    };
    let (lsn_from, lsn_to) = plan.lsn_range;
    let mut acc = Acc {
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
    };
    let scan_start = plan
        .files
        .first()
        .and_then(|f| f.segno(plan.seg_size))
        .and_then(|n| plan.seg_size.start_of(n))
        .unwrap_or(Lsn::INVALID);
    for (db, node) in namer.class_filenodes(scan_start).await {
        acc.catalog.set_class_filenode(db, node);
    }
    let mut dec = WalDecoder::new();
    let mut bytes = 0u64;
    let mut last_seg = String::new();
    let mut segments = 0u64;
    let mut first_seg = String::new();
    let mut fetch_error = None;
    // Relations left unnamed in the report (a catalog row that could not be read may be why).
    let mut unnamed = 0usize;
    while let Some(got) = rx.recv().await {
        let (name, data) = match got {
            Ok(x) => x,
            Err(e) => {
                fetch_error = Some(e);
                break;
            }
        };
        if first_seg.is_empty() {
            first_seg = name.to_string();
        }
        last_seg = name.to_string();
        segments += 1;
        bytes += data.len() as u64;
        if let Err(e) = dec.decode_slice(&data, |r| acc.record(r)) {
            acc.failure.get_or_insert(e);
        }
        unnamed += hand_over(&mut acc, namer, &mut emit).await;
        if acc.failure.is_some() || dec.end().is_some() {
            break;
        }
    }
    fetcher.abort();
    if let Some(e) = fetch_error {
        return Err(e);
    }
    if dec.end().is_none() && acc.failure.is_none() {
        dec.finish();
        if let Err(e) = dec.decode_slice(&[], |r| acc.record(r)) {
            acc.failure.get_or_insert(e);
        }
        unnamed += hand_over(&mut acc, namer, &mut emit).await;
    }
    if let Some(e) = acc.failure {
        return Err(WalScanError::Damaged {
            lsn: e.lsn(),
            segment: last_seg,
            source: e,
        });
    }
    let (end, end_lsn) = match dec.end() {
        Some(e) => {
            let why = match &e.reason {
                EndReason::InputEnded => match &plan.gap {
                    Some(g) => format!("segment {g} is not archived"),
                    None => "end of the archived WAL in the range".to_string(),
                },
                _ => e.to_string(),
            };
            (why, e.lsn)
        }
        None => ("decoding stopped".into(), dec.next_lsn()),
    };
    Ok(ScanInfo {
        cluster: cluster.name().to_string(),
        timeline: plan.timeline.0,
        latest_timeline: plan.latest,
        segments,
        first_segment: first_seg,
        last_segment: last_seg,
        bytes,
        records: dec.records_decoded(),
        end,
        end_lsn,
        gap: plan.gap.as_ref().map(|g| g.to_string()),
        open_transactions: acc.tracker.open_transactions().count(),
        warnings: {
            let mut w = std::mem::take(&mut namer.warnings);
            if let (n, Some(first)) = &acc.catalog_unreadable {
                if unnamed > 0 {
                    w.push(format!(
                        "{unnamed} relation file(s) left unnamed; {n} pg_class/pg_namespace \
                         row(s) written to the WAL could not be read (first {first})"
                    ));
                }
            }
            w
        },
    })
}

/// LZ4 and zstd full-page images for [`CatalogTracker`] (PostgreSQL writes a raw LZ4 block
/// and a zstd frame, each decompressing to the page minus its hole).
fn decompress_image(c: ImageCompression, data: &[u8], len: usize) -> Option<Vec<u8>> {
    match c {
        ImageCompression::Lz4 => lz4_flex::block::decompress(data, len).ok(),
        ImageCompression::Zstd => zstd::bulk::decompress(data, len).ok(),
        ImageCompression::None | ImageCompression::Pglz => None,
    }
}

/// The decoding loop's state.
struct Acc {
    lsn_from: Lsn,
    lsn_to: Lsn,
    time_from: Option<Timestamp>,
    time_to: Option<Timestamp>,
    incidents_only: Option<u64>,
    tracker: TxnTracker,
    events: Vec<Event>,
    /// Files created per transaction, and those of them that were then written to (a
    /// rewrite fills its new file; TRUNCATE leaves it empty).
    created: HashMap<Xid, Vec<RelFileLocator>>,
    written: HashMap<Xid, Vec<RelFileLocator>>,
    failure: Option<WalError>,
    /// Reads the catalog rows written to the WAL.
    catalog: CatalogTracker,
    catalog_events: Vec<CatalogEvent>,
    /// Catalog rows per transaction, until it ends.
    catalog_pending: HashMap<Xid, Vec<CatalogChange>>,
    /// Catalog rows of committed transactions, with the commit LSN, for [`names::WalNames`].
    catalog_learnt: Vec<(Lsn, Vec<CatalogChange>)>,
    /// Catalog rows that could not be read: how many, and the first one.
    catalog_unreadable: (u64, Option<String>),
}

impl Acc {
    fn in_time(&self, t: PgTimestamp) -> bool {
        let ts = pg_time_to_ts(t);
        self.time_from.is_none_or(|f| ts.is_some_and(|x| x >= f))
            && self.time_to.is_none_or(|to| ts.is_some_and(|x| x <= to))
    }

    fn record(&mut self, rec: pitr_pg::wal::Record<'_>) {
        if self.failure.is_some() {
            return;
        }
        self.catalog.record(&rec, &mut self.catalog_events);
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
        let xid = rec.xid();
        if !self.created.is_empty() && xid.is_valid() {
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
            Ok(Some(s)) => {
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
            Ok(None) => {}
            Err(e) => self.failure = Some(e),
        }
    }
}

/// Why a transaction is an incident.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// The transaction.
    pub transaction: TxnReport,
    /// What it did, for people: "DROP public.t", "deleted 5000 rows from public.x", …
    pub reasons: Vec<String>,
    /// `pitr restore` to just before the transaction, by xid, promoting there.
    pub restore_by_xid: String,
    /// The same by LSN (the commit record's LSN, exclusive).
    pub restore_by_lsn: String,
}

/// `pitr wal incidents`.
#[derive(Debug, Clone, Serialize)]
pub struct Incidents {
    /// What was read.
    pub scan: ScanInfo,
    /// Rows deleted or updated in one transaction above which it is an incident.
    pub threshold: u64,
    /// The incidents, in WAL order.
    pub incidents: Vec<Incident>,
}

/// How to spell the repository and cluster in suggested commands.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Program name.
    pub program: String,
    /// `--repo` value.
    pub repo: String,
    /// `--cluster` value, when not the default.
    pub cluster: Option<String>,
    /// Extra global options (e.g. `--config FILE`).
    pub extra: Vec<String>,
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Picks the transactions that destroyed data and suggests the restores that undo them.
pub fn incidents(log: WalLog, threshold: u64, ctx: &CommandContext) -> Incidents {
    let mut out = Vec::new();
    for e in log.events {
        let Event::Transaction(t) = e else { continue };
        if !t.outcome.starts_with("commit") {
            continue;
        }
        let mut reasons = Vec::new();
        for r in &t.relations {
            // Indexes and TOAST tables go with their table: not reported on their own.
            let companion = matches!(r.kind.as_deref(), Some("i" | "I" | "t"));
            if r.dropped && !companion {
                reasons.push(format!("DROP {}", r.label()));
            }
            if r.truncated && !companion {
                reasons.push(format!("TRUNCATE {}", r.label()));
            }
            if r.deletes > threshold {
                reasons.push(format!("deleted {} rows from {}", r.deletes, r.label()));
            }
            if r.updates > threshold {
                reasons.push(format!("updated {} rows of {}", r.updates, r.label()));
            }
        }
        for o in &t.truncated_oids {
            reasons.push(format!("TRUNCATE relation oid {o}"));
        }
        if reasons.is_empty() {
            continue;
        }
        let mut base = vec![ctx.program.clone()];
        base.extend(ctx.extra.iter().map(|s| shell_quote(s)));
        base.push("--repo".into());
        base.push(shell_quote(&ctx.repo));
        if let Some(c) = &ctx.cluster {
            base.push("--cluster".into());
            base.push(shell_quote(c));
        }
        base.extend(["restore", "--pgdata", "NEWDIR"].map(String::from));
        // Promote at the target: a paused recovery stops just before the commit, so the
        // transaction is still in progress and its locks (DROP and TRUNCATE take an ACCESS
        // EXCLUSIVE lock) keep the table unreadable until recovery ends.
        let mut tail = vec![
            "--target-exclusive".to_string(),
            "--target-action".into(),
            "promote".into(),
        ];
        if !log.scan.latest_timeline {
            tail.push("--target-timeline".into());
            tail.push(log.scan.timeline.to_string());
        }
        let by_xid = [
            base.clone(),
            vec!["--target-xid".into(), t.xid.to_string()],
            tail.clone(),
        ]
        .concat()
        .join(" ");
        let by_lsn = [base, vec!["--target-lsn".into(), t.lsn.to_string()], tail]
            .concat()
            .join(" ");
        out.push(Incident {
            transaction: t,
            reasons,
            restore_by_xid: by_xid,
            restore_by_lsn: by_lsn,
        });
    }
    Incidents {
        scan: log.scan,
        threshold,
        incidents: out,
    }
}

impl FromStr for Bound {
    type Err = WalScanError;
    fn from_str(s: &str) -> Result<Bound, WalScanError> {
        Bound::parse("bound", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_segments_lsns_and_times() {
        assert_eq!(
            Bound::parse("--from", "000000010000000000000004").unwrap(),
            Bound::Segment(WalFileName::parse("000000010000000000000004").unwrap())
        );
        assert_eq!(
            Bound::parse("--from", "0/4031F10").unwrap(),
            Bound::Lsn(Lsn(0x4031F10))
        );
        match Bound::parse("--to", "2025-07-10 12:36:52.242927-07").unwrap() {
            Bound::Time(t) => assert_eq!(t.to_string(), "2025-07-10T19:36:52.242927Z"),
            other => panic!("{other:?}"),
        }
        let e = Bound::parse("--to", "yesterday-ish").unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("--to"), "{e}");
        assert!(Bound::parse("--from", "0/XYZ").is_err());
    }

    /// A repository whose WAL listing holds `names` (contents are never read by `plan`), and
    /// `history` as timeline 2's history file; 1 MB segments.
    async fn repo_with(
        dir: &std::path::Path,
        names: &[&str],
        history: Option<&str>,
    ) -> ClusterRepo {
        use pitr_storage::{LocalFs, PutMode, Storage};
        let storage: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(LocalFs::create(dir).unwrap());
        let cluster = pitr_repo::Repo::new(storage.clone())
            .cluster("main")
            .unwrap();
        cluster
            .register(&pitr_repo::ClusterIdentity {
                system_id: 1,
                pg_major: 16,
                wal_seg_size: 1 << 20,
            })
            .await
            .unwrap();
        for n in names {
            let name = WalFileName::parse(n).unwrap();
            storage
                .put(
                    &cluster.wal_key(&name),
                    vec![0u8; 8].into(),
                    PutMode::Create,
                )
                .await
                .unwrap();
        }
        if let Some(h) = history {
            let (obj, _) =
                pitr_repo::frame::encode(h.as_bytes(), pitr_repo::Compression::None).unwrap();
            let name = WalFileName::History { tli: TimelineId(2) };
            storage
                .put(&cluster.wal_key(&name), obj.into(), PutMode::Create)
                .await
                .unwrap();
        }
        cluster
    }

    fn names(p: &SegmentPlan) -> Vec<String> {
        p.files.iter().map(|f| f.to_string()).collect()
    }

    #[tokio::test]
    async fn plan_follows_the_history_and_prefers_the_newest_timeline_per_segment() {
        let d = tempfile::tempdir().unwrap();
        // Timeline 2 forked from 1 at 0/320000 (in segment 3); 1 went on to segment 5.
        let c = repo_with(
            d.path(),
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000020000000000000003",
                "000000020000000000000004",
            ],
            Some("1\t0/320000\tno recovery target specified\n"),
        )
        .await;
        let p = plan(&c, &ScanOptions::default()).await.unwrap();
        assert_eq!(p.timeline, TimelineId(2));
        assert!(p.latest && p.gap.is_none());
        assert_eq!(
            names(&p),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000020000000000000003",
                "000000020000000000000004"
            ]
        );
        // Timeline 1 alone: its own segments to the end.
        let opts = ScanOptions {
            timeline: Some(TimelineId(1)),
            ..Default::default()
        };
        let p = plan(&c, &opts).await.unwrap();
        assert!(!p.latest);
        assert_eq!(p.files.len(), 5);
        // A range by LSN and by segment name.
        let opts = ScanOptions {
            from: Some(Bound::Lsn(Lsn(0x0021_0000))),
            to: Some(Bound::parse("--to", "000000020000000000000003").unwrap()),
            ..Default::default()
        };
        let p = plan(&c, &opts).await.unwrap();
        assert_eq!(
            names(&p),
            ["000000010000000000000002", "000000020000000000000003"]
        );
        assert_eq!(p.lsn_range.0, Lsn(0x0021_0000));
        // Unknown timeline, inverted range.
        let bad = ScanOptions {
            timeline: Some(TimelineId(3)),
            ..Default::default()
        };
        assert!(plan(&c, &bad).await.unwrap_err().is_usage());
        let inverted = ScanOptions {
            from: Some(Bound::Lsn(Lsn(0x0040_0000))),
            to: Some(Bound::Lsn(Lsn(0x0020_0000))),
            ..Default::default()
        };
        assert!(plan(&c, &inverted).await.unwrap_err().is_usage());
    }

    #[tokio::test]
    async fn plan_stops_at_the_first_missing_segment() {
        let d = tempfile::tempdir().unwrap();
        let c = repo_with(
            d.path(),
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000004",
            ],
            None,
        )
        .await;
        let p = plan(&c, &ScanOptions::default()).await.unwrap();
        assert_eq!(p.files.len(), 2);
        assert_eq!(
            p.gap.map(|g| g.to_string()).as_deref(),
            Some("000000010000000000000003")
        );
        // Starting after the gap reads what is there.
        let opts = ScanOptions {
            from: Some(Bound::parse("--from", "000000010000000000000003").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            names(&plan(&c, &opts).await.unwrap()),
            ["000000010000000000000004"]
        );
        let empty = tempfile::tempdir().unwrap();
        let none = repo_with(empty.path(), &[], None).await;
        assert!(matches!(
            plan(&none, &ScanOptions::default()).await,
            Err(WalScanError::NoWal { .. })
        ));
    }

    #[test]
    fn shell_quoting_leaves_plain_words_alone() {
        assert_eq!(shell_quote("/srv/repo"), "/srv/repo");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
