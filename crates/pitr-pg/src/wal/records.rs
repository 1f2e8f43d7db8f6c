//! Interpretation of the records pitr needs: transaction ends (commit, abort, prepare and
//! their two-phase forms), checkpoints, restore points, segment switches, relation file
//! creation and truncation, heap changes and logical messages.
//!
//! Layouts: `src/include/access/xact.h` (`ParseCommitRecord` and friends in
//! `xactdesc.c`), `catalog/pg_control.h`, `access/xlog_internal.h`, `catalog/storage_xlog.h`,
//! `access/heapam_xlog.h`, `replication/message.h`. Version differences come from
//! [`WalFormat`].

use crate::{Lsn, TimelineId};

use super::bytes::Cursor;
use super::error::WalError;
use super::format::WalFormat;
use super::record::Record;
use super::timestamp::PgTimestamp;
use super::types::{ForkNumber, Oid, RelFileLocator, RmgrId, Xid};

// XLOG opcodes (pg_control.h).
/// `XLOG_CHECKPOINT_SHUTDOWN`.
pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
/// `XLOG_CHECKPOINT_ONLINE`.
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
/// `XLOG_NOOP`.
pub const XLOG_NOOP: u8 = 0x20;
/// `XLOG_NEXTOID`.
pub const XLOG_NEXTOID: u8 = 0x30;
/// `XLOG_SWITCH`.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLOG_BACKUP_END`.
pub const XLOG_BACKUP_END: u8 = 0x50;
/// `XLOG_PARAMETER_CHANGE`.
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
/// `XLOG_RESTORE_POINT`.
pub const XLOG_RESTORE_POINT: u8 = 0x70;
/// `XLOG_FPW_CHANGE`.
pub const XLOG_FPW_CHANGE: u8 = 0x80;
/// `XLOG_END_OF_RECOVERY`.
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
/// `XLOG_FPI_FOR_HINT`.
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
/// `XLOG_FPI`.
pub const XLOG_FPI: u8 = 0xB0;
/// `XLOG_OVERWRITE_CONTRECORD`.
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;
/// `XLOG_CHECKPOINT_REDO` (PG17+).
pub const XLOG_CHECKPOINT_REDO: u8 = 0xE0;

// Transaction opcodes (xact.h).
/// `XLOG_XACT_COMMIT`.
pub const XLOG_XACT_COMMIT: u8 = 0x00;
/// `XLOG_XACT_PREPARE`.
pub const XLOG_XACT_PREPARE: u8 = 0x10;
/// `XLOG_XACT_ABORT`.
pub const XLOG_XACT_ABORT: u8 = 0x20;
/// `XLOG_XACT_COMMIT_PREPARED`.
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
/// `XLOG_XACT_ABORT_PREPARED`.
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// `XLOG_XACT_ASSIGNMENT`.
pub const XLOG_XACT_ASSIGNMENT: u8 = 0x50;
/// `XLOG_XACT_INVALIDATIONS`.
pub const XLOG_XACT_INVALIDATIONS: u8 = 0x60;
/// `XLOG_XACT_OPMASK`.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// `XLOG_XACT_HAS_INFO`: an `xinfo` word follows the timestamp.
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;

/// `XACT_XINFO_HAS_DBINFO`.
pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
/// `XACT_XINFO_HAS_SUBXACTS`.
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
/// `XACT_XINFO_HAS_RELFILELOCATORS` (`..._RELFILENODES` before PG16).
pub const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
/// `XACT_XINFO_HAS_INVALS`.
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
/// `XACT_XINFO_HAS_TWOPHASE`.
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
/// `XACT_XINFO_HAS_ORIGIN`.
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
/// `XACT_XINFO_HAS_AE_LOCKS`.
pub const XACT_XINFO_HAS_AE_LOCKS: u32 = 1 << 6;
/// `XACT_XINFO_HAS_GID`.
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
/// `XACT_XINFO_HAS_DROPPED_STATS` (PG15+).
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

// Storage (smgr) opcodes.
/// `XLOG_SMGR_CREATE`.
pub const XLOG_SMGR_CREATE: u8 = 0x10;
/// `XLOG_SMGR_TRUNCATE`.
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;

// Heap opcodes.
/// `XLOG_HEAP_OPMASK`.
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
/// `XLOG_HEAP_INIT_PAGE`: the record initializes its page.
pub const XLOG_HEAP_INIT_PAGE: u8 = 0x80;

/// `SizeOfXLogRecord`-independent size of a shared invalidation message.
const INVAL_MSG_LEN: usize = 16;

/// A 4-byte chunk as a little-endian u32 (chunks come from `chunks_exact(4)`).
fn le_u32(c: &[u8]) -> u32 {
    c.try_into().map(u32::from_le_bytes).unwrap_or(0)
}

/// A list of 32-bit transaction ids stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XidList<'a>(&'a [u8]);

impl<'a> XidList<'a> {
    /// Number of xids.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The xids.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Xid> + 'a {
        self.0.chunks_exact(4).map(|c| Xid(le_u32(c)))
    }
}

/// A list of 32-bit object ids stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OidList<'a>(&'a [u8]);

impl<'a> OidList<'a> {
    /// Number of oids.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oids.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Oid> + 'a {
        self.0.chunks_exact(4).map(|c| Oid(le_u32(c)))
    }
}

/// A list of relation files stored in a record (e.g. those a commit drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelList<'a>(&'a [u8]);

impl<'a> RelList<'a> {
    /// Number of relations.
    pub fn len(&self) -> usize {
        self.0.len() / RelFileLocator::LEN
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The relations.
    pub fn iter(&self) -> impl Iterator<Item = RelFileLocator> + 'a {
        self.0
            .chunks_exact(RelFileLocator::LEN)
            .filter_map(RelFileLocator::parse)
    }
}

/// A statistics entry dropped with a transaction (`xl_xact_stats_item`, PG15+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DroppedStat {
    /// Statistics kind (`PgStat_Kind`; 2 = relation, 3 = function).
    pub kind: i32,
    /// Database OID.
    pub db_oid: Oid,
    /// Object id (64 bits since PG18; a relation or function OID before).
    pub obj_id: u64,
}

/// Dropped statistics entries: 12 bytes each in PG15–17, 16 in PG18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DroppedStats<'a> {
    bytes: &'a [u8],
    item_len: usize,
}

impl<'a> DroppedStats<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len().checked_div(self.item_len).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = DroppedStat> + 'a {
        let wide = self.item_len == 16;
        self.bytes
            .chunks_exact(self.item_len.max(1))
            .filter_map(move |c| {
                let mut r = Cursor::new(c);
                let kind = r.i32()?;
                let db_oid = Oid(r.u32()?);
                let lo = r.u32()?;
                let hi = if wide { r.u32()? } else { 0 };
                Some(DroppedStat {
                    kind,
                    db_oid,
                    obj_id: (u64::from(hi) << 32) | u64::from(lo),
                })
            })
    }
}

/// Replication origin of a transaction end (`xl_xact_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactOrigin {
    /// LSN of the transaction at the origin.
    pub lsn: Lsn,
    /// Commit time at the origin.
    pub time: PgTimestamp,
}

/// A commit or abort record (`xl_xact_commit` / `xl_xact_abort` with the parts `xinfo`
/// announces), including `COMMIT PREPARED` / `ROLLBACK PREPARED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactEnd<'a> {
    /// True for `COMMIT PREPARED` / `ROLLBACK PREPARED` of a two-phase transaction.
    pub prepared: bool,
    /// The transaction that ended: the record's xid, or for a prepared transaction the xid it
    /// had when prepared.
    pub xid: Xid,
    /// Commit or abort time.
    pub time: PgTimestamp,
    /// The `xinfo` flags (0 when the record has none).
    pub xinfo: u32,
    /// Database and tablespace of the transaction (`XACT_XINFO_HAS_DBINFO`).
    pub db: Option<(Oid, Oid)>,
    /// Committed (or aborted) subtransactions.
    pub subxacts: XidList<'a>,
    /// Relation files deleted by this commit or abort (e.g. by `DROP TABLE`).
    pub dropped_rels: RelList<'a>,
    /// Statistics entries dropped (PG15+).
    pub dropped_stats: DroppedStats<'a>,
    /// Number of cache invalidation messages (commits only).
    pub invalidations: u32,
    /// Two-phase transaction id (`XACT_XINFO_HAS_TWOPHASE`).
    pub twophase_xid: Option<Xid>,
    /// Global transaction id of a prepared transaction, if logged (wal_level=logical).
    pub gid: Option<&'a [u8]>,
    /// Replication origin.
    pub origin: Option<XactOrigin>,
}

/// A `PREPARE TRANSACTION` record (`xl_xact_prepare`, the two-phase state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactPrepare<'a> {
    /// The prepared transaction.
    pub xid: Xid,
    /// Its database.
    pub db: Oid,
    /// When it was prepared.
    pub prepared_at: PgTimestamp,
    /// Role that ran it.
    pub owner: Oid,
    /// Global transaction id given to `PREPARE TRANSACTION`.
    pub gid: &'a [u8],
    /// Subtransactions.
    pub subxacts: XidList<'a>,
    /// Relation files to delete if it commits.
    pub commit_rels: RelList<'a>,
    /// Relation files to delete if it aborts.
    pub abort_rels: RelList<'a>,
    /// Number of invalidation messages.
    pub invalidations: u32,
}

/// An `XLOG_XACT_ASSIGNMENT` record: subtransactions assigned to a top-level transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactAssignment<'a> {
    /// Top-level transaction.
    pub top: Xid,
    /// Its subtransactions.
    pub subxacts: XidList<'a>,
}

/// A checkpoint record (`CheckPoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Shutdown checkpoint (else online).
    pub shutdown: bool,
    /// Where replay must start (`redo`).
    pub redo: Lsn,
    /// Current timeline.
    pub timeline: TimelineId,
    /// Previous timeline (equal to `timeline` unless this checkpoint begins a new one).
    pub prev_timeline: TimelineId,
    /// `full_page_writes` was on.
    pub full_page_writes: bool,
    /// `wal_level` (PG17+; `None` before).
    pub wal_level: Option<WalLevel>,
    /// Next full transaction id (epoch in the high 32 bits).
    pub next_xid: u64,
    /// Next OID.
    pub next_oid: Oid,
    /// Next multixact id.
    pub next_multi: u32,
    /// Next multixact offset.
    pub next_multi_offset: u32,
    /// Oldest `datfrozenxid`.
    pub oldest_xid: Xid,
    /// Database holding it.
    pub oldest_xid_db: Oid,
    /// Oldest `datminmxid`.
    pub oldest_multi: u32,
    /// Database holding it.
    pub oldest_multi_db: Oid,
    /// Checkpoint time (seconds precision: `pg_time_t`).
    pub time: PgTimestamp,
    /// Oldest xid with a commit timestamp.
    pub oldest_commit_ts_xid: Xid,
    /// Newest xid with a commit timestamp.
    pub newest_commit_ts_xid: Xid,
    /// Oldest running xid (online checkpoints, wal_level ≥ replica).
    pub oldest_active_xid: Xid,
}

/// The `wal_level` setting (`WalLevel` in `xlog.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalLevel {
    /// `minimal`.
    Minimal,
    /// `replica`.
    Replica,
    /// `logical`.
    Logical,
    /// A value PostgreSQL does not define.
    Unknown(i32),
}

impl WalLevel {
    /// From the stored integer.
    pub fn from_i32(v: i32) -> WalLevel {
        match v {
            0 => WalLevel::Minimal,
            1 => WalLevel::Replica,
            2 => WalLevel::Logical,
            v => WalLevel::Unknown(v),
        }
    }

    /// The setting's name (`replica`, …; `unknown` for undefined values).
    pub fn name(self) -> &'static str {
        match self {
            WalLevel::Minimal => "minimal",
            WalLevel::Replica => "replica",
            WalLevel::Logical => "logical",
            WalLevel::Unknown(_) => "unknown",
        }
    }
}

/// A named restore point (`pg_create_restore_point`, `xl_restore_point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePoint<'a> {
    /// When it was created.
    pub time: PgTimestamp,
    /// Its name (bytes up to the terminating NUL).
    pub name: &'a [u8],
}

impl RestorePoint<'_> {
    /// The name as text (invalid UTF-8 replaced).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

/// A new relation fork file (`xl_smgr_create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmgrCreate {
    /// The relation.
    pub rel: RelFileLocator,
    /// The fork created.
    pub fork: ForkNumber,
}

/// A relation truncated to `blocks` blocks (`xl_smgr_truncate`, e.g. by VACUUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmgrTruncate {
    /// New length in blocks.
    pub blocks: u32,
    /// The relation.
    pub rel: RelFileLocator,
    /// `SMGR_TRUNCATE_*` flags (which forks).
    pub flags: i32,
}

/// What a heap or heap2 record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapOp {
    /// `INSERT`.
    Insert,
    /// `MULTI_INSERT` (COPY and other bulk inserts).
    MultiInsert,
    /// `UPDATE`.
    Update,
    /// `HOT_UPDATE`.
    HotUpdate,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE` (logged with wal_level=logical).
    Truncate,
    /// `HEAP_CONFIRM` (speculative insertion).
    Confirm,
    /// `LOCK`.
    Lock,
    /// `INPLACE`.
    Inplace,
    /// HEAP2 `REWRITE`.
    Rewrite,
    /// HEAP2 `PRUNE` (PG14–16).
    Prune,
    /// HEAP2 `VACUUM` (PG14–16).
    Vacuum,
    /// HEAP2 `FREEZE_PAGE` (PG14–16).
    FreezePage,
    /// HEAP2 `PRUNE_ON_ACCESS` (PG17+).
    PruneOnAccess,
    /// HEAP2 `PRUNE_VACUUM_SCAN` (PG17+).
    PruneVacuumScan,
    /// HEAP2 `PRUNE_VACUUM_CLEANUP` (PG17+).
    PruneVacuumCleanup,
    /// HEAP2 `VISIBLE`.
    Visible,
    /// HEAP2 `LOCK_UPDATED`.
    LockUpdated,
    /// HEAP2 `NEW_CID`.
    NewCid,
}

impl HeapOp {
    /// `pg_waldump`'s name for the operation.
    pub fn name(self) -> &'static str {
        match self {
            HeapOp::Insert => "INSERT",
            HeapOp::MultiInsert => "MULTI_INSERT",
            HeapOp::Update => "UPDATE",
            HeapOp::HotUpdate => "HOT_UPDATE",
            HeapOp::Delete => "DELETE",
            HeapOp::Truncate => "TRUNCATE",
            HeapOp::Confirm => "HEAP_CONFIRM",
            HeapOp::Lock => "LOCK",
            HeapOp::Inplace => "INPLACE",
            HeapOp::Rewrite => "REWRITE",
            HeapOp::Prune => "PRUNE",
            HeapOp::Vacuum => "VACUUM",
            HeapOp::FreezePage => "FREEZE_PAGE",
            HeapOp::PruneOnAccess => "PRUNE_ON_ACCESS",
            HeapOp::PruneVacuumScan => "PRUNE_VACUUM_SCAN",
            HeapOp::PruneVacuumCleanup => "PRUNE_VACUUM_CLEANUP",
            HeapOp::Visible => "VISIBLE",
            HeapOp::LockUpdated => "LOCK_UPDATED",
            HeapOp::NewCid => "NEW_CID",
        }
    }

    /// Decodes the opcode of a HEAP (`heap2` false) or HEAP2 record.
    pub fn from_info(heap2: bool, info: u8, fmt: &WalFormat) -> HeapOp {
        let op = info & XLOG_HEAP_OPMASK;
        if !heap2 {
            return match op {
                0x00 => HeapOp::Insert,
                0x10 => HeapOp::Delete,
                0x20 => HeapOp::Update,
                0x30 => HeapOp::Truncate,
                0x40 => HeapOp::HotUpdate,
                0x50 => HeapOp::Confirm,
                0x60 => HeapOp::Lock,
                _ => HeapOp::Inplace,
            };
        }
        match (op, fmt.heap2_prune_v17) {
            (0x00, _) => HeapOp::Rewrite,
            (0x10, false) => HeapOp::Prune,
            (0x20, false) => HeapOp::Vacuum,
            (0x30, false) => HeapOp::FreezePage,
            (0x10, true) => HeapOp::PruneOnAccess,
            (0x20, true) => HeapOp::PruneVacuumScan,
            (0x30, true) => HeapOp::PruneVacuumCleanup,
            (0x40, _) => HeapOp::Visible,
            (0x50, _) => HeapOp::MultiInsert,
            (0x60, _) => HeapOp::LockUpdated,
            _ => HeapOp::NewCid,
        }
    }

    /// True for operations that add, change or remove tuples on behalf of a transaction.
    pub fn is_data_change(self) -> bool {
        matches!(
            self,
            HeapOp::Insert
                | HeapOp::MultiInsert
                | HeapOp::Update
                | HeapOp::HotUpdate
                | HeapOp::Delete
                | HeapOp::Truncate
        )
    }
}

/// A HEAP or HEAP2 record other than `TRUNCATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapChange {
    /// The operation.
    pub op: HeapOp,
    /// The record initializes its page (`XLOG_HEAP_INIT_PAGE`).
    pub init_page: bool,
    /// The relation of block reference 0, if the record has one.
    pub rel: Option<RelFileLocator>,
    /// Block number of block reference 0.
    pub block: Option<u32>,
    /// Tuples affected: `ntuples` of a multi-insert, 1 for insert/update/delete, else 0.
    pub tuples: u32,
}

/// A heap `TRUNCATE` record (`xl_heap_truncate`, wal_level=logical only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapTruncate<'a> {
    /// Database.
    pub db: Oid,
    /// Relation OIDs truncated (not relfilenumbers).
    pub relids: OidList<'a>,
    /// `XLH_TRUNCATE_CASCADE` (1) / `XLH_TRUNCATE_RESTART_SEQS` (2).
    pub flags: u8,
}

/// A logical decoding message (`pg_logical_emit_message`, `xl_logical_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalMessage<'a> {
    /// Database it was emitted from.
    pub db: Oid,
    /// Transactional message.
    pub transactional: bool,
    /// Prefix (without its terminating NUL).
    pub prefix: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

/// The meaning of a record, for the record types pitr interprets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind<'a> {
    /// Transaction commit (also `COMMIT PREPARED`).
    Commit(XactEnd<'a>),
    /// Transaction abort (also `ROLLBACK PREPARED`, and rolled-back subtransactions).
    Abort(XactEnd<'a>),
    /// `PREPARE TRANSACTION`.
    Prepare(XactPrepare<'a>),
    /// Subtransaction assignment.
    Assignment(XactAssignment<'a>),
    /// Checkpoint (online or shutdown).
    Checkpoint(Checkpoint),
    /// Named restore point.
    RestorePoint(RestorePoint<'a>),
    /// `pg_switch_wal()`: the rest of the segment is unused.
    Switch,
    /// A relation fork file was created.
    SmgrCreate(SmgrCreate),
    /// A relation was physically truncated.
    SmgrTruncate(SmgrTruncate),
    /// A heap change.
    Heap(HeapChange),
    /// A heap `TRUNCATE`.
    HeapTruncate(HeapTruncate<'a>),
    /// A logical decoding message.
    LogicalMessage(LogicalMessage<'a>),
    /// Anything else.
    Other,
}

/// Reads a count stored as int32; negative counts are malformed.
fn count(c: &mut Cursor<'_>) -> Option<usize> {
    usize::try_from(c.i32()?).ok()
}

fn take_n<'a>(c: &mut Cursor<'a>, n: usize, size: usize) -> Option<&'a [u8]> {
    c.take(n.checked_mul(size)?)
}

/// The bytes of a NUL-terminated string at the cursor; moves past the NUL.
fn cstring<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let n = c.rest().iter().position(|&b| b == 0)?;
    let s = c.take(n)?;
    c.take(1)?;
    Some(s)
}

/// Bytes up to the first NUL (or all of them).
fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    b.get(..n).unwrap_or(b)
}

impl<'a> Record<'a> {
    /// Interprets the record's main data for the record types of [`RecordKind`]; `Other` for
    /// the rest. Fails when the main data is too short or inconsistent for its type.
    pub fn kind(&self) -> Result<RecordKind<'a>, WalError> {
        let info = self.rmgr_info();
        let err = |what: &'static str| WalError::Interpret {
            lsn: self.lsn,
            rmgr: self.rmgr(),
            info: self.header.info,
            what,
        };
        let data = self.main_data();
        match self.rmgr() {
            RmgrId::XACT => {
                let op = info & XLOG_XACT_OPMASK;
                match op {
                    XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => self
                        .xact_end(data, info, true)
                        .map(RecordKind::Commit)
                        .ok_or_else(|| err("commit record too short")),
                    XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => self
                        .xact_end(data, info, false)
                        .map(RecordKind::Abort)
                        .ok_or_else(|| err("abort record too short")),
                    XLOG_XACT_PREPARE => self
                        .prepare(data)
                        .map(RecordKind::Prepare)
                        .ok_or_else(|| err("prepare record too short")),
                    XLOG_XACT_ASSIGNMENT => {
                        let mut c = Cursor::new(data);
                        let parsed = (|| {
                            let top = Xid(c.u32()?);
                            let n = count(&mut c)?;
                            let subxacts = XidList(take_n(&mut c, n, 4)?);
                            Some(XactAssignment { top, subxacts })
                        })();
                        parsed
                            .map(RecordKind::Assignment)
                            .ok_or_else(|| err("assignment record too short"))
                    }
                    _ => Ok(RecordKind::Other),
                }
            }
            RmgrId::XLOG => match info {
                XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
                    checkpoint(data, info == 0, self.format().checkpoint_wal_level)
                        .map(RecordKind::Checkpoint)
                        .ok_or_else(|| err("checkpoint record too short"))
                }
                XLOG_RESTORE_POINT => {
                    let mut c = Cursor::new(data);
                    let parsed = (|| {
                        let time = PgTimestamp(c.i64()?);
                        let name = until_nul(c.take(c.remaining())?);
                        Some(RestorePoint { time, name })
                    })();
                    parsed
                        .map(RecordKind::RestorePoint)
                        .ok_or_else(|| err("restore point record too short"))
                }
                XLOG_SWITCH => Ok(RecordKind::Switch),
                _ => Ok(RecordKind::Other),
            },
            RmgrId::SMGR => {
                let mut c = Cursor::new(data);
                match info {
                    XLOG_SMGR_CREATE => (|| {
                        let rel = RelFileLocator::parse(c.take(RelFileLocator::LEN)?)?;
                        let fork = ForkNumber(u8::try_from(c.i32()?).ok()?);
                        Some(RecordKind::SmgrCreate(SmgrCreate { rel, fork }))
                    })()
                    .ok_or_else(|| err("smgr create record too short")),
                    XLOG_SMGR_TRUNCATE => (|| {
                        let blocks = c.u32()?;
                        let rel = RelFileLocator::parse(c.take(RelFileLocator::LEN)?)?;
                        let flags = c.i32()?;
                        Some(RecordKind::SmgrTruncate(SmgrTruncate {
                            blocks,
                            rel,
                            flags,
                        }))
                    })()
                    .ok_or_else(|| err("smgr truncate record too short")),
                    _ => Ok(RecordKind::Other),
                }
            }
            RmgrId::HEAP | RmgrId::HEAP2 => {
                let heap2 = self.rmgr() == RmgrId::HEAP2;
                let op = HeapOp::from_info(heap2, info, self.format());
                if op == HeapOp::Truncate {
                    let mut c = Cursor::new(data);
                    return (|| {
                        let db = Oid(c.u32()?);
                        let n = usize::try_from(c.u32()?).ok()?;
                        let flags = c.u8()?;
                        c.take(3)?; // padding before the Oid array
                        let relids = OidList(take_n(&mut c, n, 4)?);
                        Some(RecordKind::HeapTruncate(HeapTruncate { db, relids, flags }))
                    })()
                    .ok_or_else(|| err("heap truncate record too short"));
                }
                let tuples = match op {
                    HeapOp::MultiInsert => {
                        // xl_heap_multi_insert: uint8 flags, (pad), uint16 ntuples.
                        let mut c = Cursor::new(data);
                        c.take(2)
                            .and_then(|_| c.u16())
                            .map(u32::from)
                            .ok_or_else(|| err("multi-insert record too short"))?
                    }
                    HeapOp::Insert | HeapOp::Update | HeapOp::HotUpdate | HeapOp::Delete => 1,
                    _ => 0,
                };
                let b0 = self.block(0);
                Ok(RecordKind::Heap(HeapChange {
                    op,
                    init_page: info & XLOG_HEAP_INIT_PAGE != 0
                        && matches!(
                            op,
                            HeapOp::Insert
                                | HeapOp::Update
                                | HeapOp::HotUpdate
                                | HeapOp::MultiInsert
                        ),
                    rel: b0.map(|b| b.rel),
                    block: b0.map(|b| b.block),
                    tuples,
                }))
            }
            RmgrId::LOGICALMSG if info == 0x00 => {
                let mut c = Cursor::new(data);
                (|| {
                    let db = Oid(c.u32()?);
                    let transactional = c.u8()? != 0;
                    c.take(3)?;
                    let prefix_size = usize::try_from(c.u64()?).ok()?;
                    let message_size = usize::try_from(c.u64()?).ok()?;
                    let prefix = c.take(prefix_size)?;
                    let payload = c.take(message_size)?;
                    Some(RecordKind::LogicalMessage(LogicalMessage {
                        db,
                        transactional,
                        prefix: until_nul(prefix),
                        payload,
                    }))
                })()
                .ok_or_else(|| err("logical message record too short"))
            }
            _ => Ok(RecordKind::Other),
        }
    }

    /// `ParseCommitRecord` / `ParseAbortRecord`.
    fn xact_end(&self, data: &'a [u8], info: u8, commit: bool) -> Option<XactEnd<'a>> {
        let fmt = self.format();
        let mut c = Cursor::new(data);
        let time = PgTimestamp(c.i64()?);
        let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
            c.u32()?
        } else {
            0
        };
        let db = if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
            Some((Oid(c.u32()?), Oid(c.u32()?)))
        } else {
            None
        };
        let mut subxacts = XidList::default();
        if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
            let n = count(&mut c)?;
            subxacts = XidList(take_n(&mut c, n, 4)?);
        }
        let mut dropped_rels = RelList::default();
        if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
            let n = count(&mut c)?;
            dropped_rels = RelList(take_n(&mut c, n, RelFileLocator::LEN)?);
        }
        let mut dropped_stats = DroppedStats::default();
        if let Some(item_len) = fmt.dropped_stats_item_len {
            if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
                let n = count(&mut c)?;
                dropped_stats = DroppedStats {
                    bytes: take_n(&mut c, n, item_len)?,
                    item_len,
                };
            }
        }
        let mut invalidations = 0;
        if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
            let n = count(&mut c)?;
            take_n(&mut c, n, INVAL_MSG_LEN)?;
            invalidations = u32::try_from(n).ok()?;
        }
        let mut twophase_xid = None;
        let mut gid = None;
        if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
            twophase_xid = Some(Xid(c.u32()?));
            if xinfo & XACT_XINFO_HAS_GID != 0 {
                gid = Some(cstring(&mut c)?);
            }
        }
        let origin = if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
            Some(XactOrigin {
                lsn: Lsn(c.u64()?),
                time: PgTimestamp(c.i64()?),
            })
        } else {
            None
        };
        let op = info & XLOG_XACT_OPMASK;
        let prepared = op == XLOG_XACT_COMMIT_PREPARED || op == XLOG_XACT_ABORT_PREPARED;
        Some(XactEnd {
            prepared,
            xid: match twophase_xid {
                Some(x) if prepared || !self.xid().is_valid() => x,
                _ => self.xid(),
            },
            time,
            xinfo,
            db,
            subxacts,
            dropped_rels,
            dropped_stats,
            invalidations,
            twophase_xid,
            gid,
            origin,
        })
    }

    /// `ParsePrepareRecord`.
    fn prepare(&self, data: &'a [u8]) -> Option<XactPrepare<'a>> {
        let fmt = self.format();
        let mut c = Cursor::new(data);
        let _magic = c.u32()?;
        let _total_len = c.u32()?;
        let xid = Xid(c.u32()?);
        let db = Oid(c.u32()?);
        let prepared_at = PgTimestamp(c.i64()?);
        let owner = Oid(c.u32()?);
        let nsubxacts = count(&mut c)?;
        let ncommitrels = count(&mut c)?;
        let nabortrels = count(&mut c)?;
        let (ncommitstats, nabortstats) = if fmt.dropped_stats_item_len.is_some() {
            (count(&mut c)?, count(&mut c)?)
        } else {
            (0, 0)
        };
        let ninvalmsgs = count(&mut c)?;
        let _initfileinval = c.u8()?;
        c.take(1)?;
        let gidlen = usize::from(c.u16()?);
        // origin_lsn and origin_timestamp close the header; everything after is MAXALIGNed.
        let mut c = Cursor::new(data);
        c.take(fmt.prepare_header_len)?;
        let gid = until_nul(c.take(gidlen)?);
        c.align8()?;
        let subxacts = XidList(take_n(&mut c, nsubxacts, 4)?);
        c.align8()?;
        let commit_rels = RelList(take_n(&mut c, ncommitrels, RelFileLocator::LEN)?);
        c.align8()?;
        let abort_rels = RelList(take_n(&mut c, nabortrels, RelFileLocator::LEN)?);
        c.align8()?;
        if let Some(item_len) = fmt.dropped_stats_item_len {
            take_n(&mut c, ncommitstats, item_len)?;
            c.align8()?;
            take_n(&mut c, nabortstats, item_len)?;
            c.align8()?;
        }
        take_n(&mut c, ninvalmsgs, INVAL_MSG_LEN)?;
        Some(XactPrepare {
            xid,
            db,
            prepared_at,
            owner,
            gid,
            subxacts,
            commit_rels,
            abort_rels,
            invalidations: u32::try_from(ninvalmsgs).ok()?,
        })
    }

    /// `pg_waldump`'s record type name (the first word of its `desc:`) for the resource
    /// managers pitr interprets (XLOG, Transaction, Storage, Standby, Heap, Heap2,
    /// LogicalMessage); `None` for others.
    pub fn identify(&self) -> Option<String> {
        let info = self.rmgr_info();
        let fmt = self.format();
        let name: &str = match self.rmgr() {
            RmgrId::XLOG => match info {
                XLOG_CHECKPOINT_SHUTDOWN => "CHECKPOINT_SHUTDOWN",
                XLOG_CHECKPOINT_ONLINE => "CHECKPOINT_ONLINE",
                XLOG_NOOP => "NOOP",
                XLOG_NEXTOID => "NEXTOID",
                XLOG_SWITCH => "SWITCH",
                XLOG_BACKUP_END => "BACKUP_END",
                XLOG_PARAMETER_CHANGE => "PARAMETER_CHANGE",
                XLOG_RESTORE_POINT => "RESTORE_POINT",
                XLOG_FPW_CHANGE => "FPW_CHANGE",
                XLOG_END_OF_RECOVERY => "END_OF_RECOVERY",
                XLOG_FPI_FOR_HINT => "FPI_FOR_HINT",
                XLOG_FPI => "FPI",
                XLOG_OVERWRITE_CONTRECORD => "OVERWRITE_CONTRECORD",
                XLOG_CHECKPOINT_REDO if fmt.checkpoint_redo => "CHECKPOINT_REDO",
                _ => return None,
            },
            RmgrId::XACT => match info & XLOG_XACT_OPMASK {
                XLOG_XACT_COMMIT => "COMMIT",
                XLOG_XACT_PREPARE => "PREPARE",
                XLOG_XACT_ABORT => "ABORT",
                XLOG_XACT_COMMIT_PREPARED => "COMMIT_PREPARED",
                XLOG_XACT_ABORT_PREPARED => "ABORT_PREPARED",
                XLOG_XACT_ASSIGNMENT => "ASSIGNMENT",
                XLOG_XACT_INVALIDATIONS => "INVALIDATION",
                _ => return None,
            },
            RmgrId::SMGR => match info {
                XLOG_SMGR_CREATE => "CREATE",
                XLOG_SMGR_TRUNCATE => "TRUNCATE",
                _ => return None,
            },
            RmgrId::STANDBY => match info {
                0x00 => "LOCK",
                0x10 => "RUNNING_XACTS",
                0x20 => "INVALIDATIONS",
                _ => return None,
            },
            RmgrId::HEAP | RmgrId::HEAP2 => {
                let op = HeapOp::from_info(self.rmgr() == RmgrId::HEAP2, info, fmt);
                let init = info & XLOG_HEAP_INIT_PAGE != 0
                    && matches!(
                        op,
                        HeapOp::Insert | HeapOp::Update | HeapOp::HotUpdate | HeapOp::MultiInsert
                    );
                if info & XLOG_HEAP_INIT_PAGE != 0 && !init {
                    return None;
                }
                return Some(if init {
                    format!("{}+INIT", op.name())
                } else {
                    op.name().to_string()
                });
            }
            RmgrId::LOGICALMSG if info == 0x00 => "MESSAGE",
            _ => return None,
        };
        Some(name.to_string())
    }
}

/// `CheckPoint` (88 bytes; PG17+ keeps `wal_level` in what was padding).
fn checkpoint(data: &[u8], shutdown: bool, has_wal_level: bool) -> Option<Checkpoint> {
    let mut c = Cursor::new(data);
    let redo = Lsn(c.u64()?);
    let timeline = TimelineId(c.u32()?);
    let prev_timeline = TimelineId(c.u32()?);
    let full_page_writes = c.u8()? != 0;
    c.take(3)?;
    let wal_level = c.i32()?;
    let wal_level = has_wal_level.then(|| WalLevel::from_i32(wal_level));
    let next_xid = c.u64()?;
    let next_oid = Oid(c.u32()?);
    let next_multi = c.u32()?;
    let next_multi_offset = c.u32()?;
    let oldest_xid = Xid(c.u32()?);
    let oldest_xid_db = Oid(c.u32()?);
    let oldest_multi = c.u32()?;
    let oldest_multi_db = Oid(c.u32()?);
    c.take(4)?;
    let time = PgTimestamp::from_unix_secs(c.i64()?);
    let oldest_commit_ts_xid = Xid(c.u32()?);
    let newest_commit_ts_xid = Xid(c.u32()?);
    let oldest_active_xid = Xid(c.u32()?);
    Some(Checkpoint {
        shutdown,
        redo,
        timeline,
        prev_timeline,
        full_page_writes,
        wal_level,
        next_xid,
        next_oid,
        next_multi,
        next_multi_offset,
        oldest_xid,
        oldest_xid_db,
        oldest_multi,
        oldest_multi_db,
        time,
        oldest_commit_ts_xid,
        newest_commit_ts_xid,
        oldest_active_xid,
    })
}
