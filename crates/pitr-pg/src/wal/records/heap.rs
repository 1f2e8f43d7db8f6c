//! The HEAP and HEAP2 resource managers: tuple changes, table truncation, vacuum and
//! friends (`access/heapam_xlog.h`).

use super::super::bytes::Cursor;
use super::super::format::WalFormat;
use super::super::record::Record;
use super::super::types::{Oid, RelFileLocator, RmgrId};
use super::{take_n, OidList, RecordKind};

// Heap opcodes.
/// `XLOG_HEAP_OPMASK`.
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
/// `XLOG_HEAP_INIT_PAGE`: the record initializes its page.
pub const XLOG_HEAP_INIT_PAGE: u8 = 0x80;

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

/// True when a record with this `info` and operation initializes its page.
fn inits_page(op: HeapOp, info: u8) -> bool {
    info & XLOG_HEAP_INIT_PAGE != 0
        && matches!(
            op,
            HeapOp::Insert | HeapOp::Update | HeapOp::HotUpdate | HeapOp::MultiInsert
        )
}

/// Interprets a HEAP or HEAP2 record's main data (`Err`: what is wrong with it).
pub(super) fn interpret<'a>(
    rec: &Record<'a>,
    data: &'a [u8],
    info: u8,
) -> Result<RecordKind<'a>, &'static str> {
    let heap2 = rec.rmgr() == RmgrId::HEAP2;
    let op = HeapOp::from_info(heap2, info, rec.format());
    if op == HeapOp::Truncate {
        return truncate(data)
            .map(RecordKind::HeapTruncate)
            .ok_or("heap truncate record too short");
    }
    let tuples = match op {
        HeapOp::MultiInsert => {
            // xl_heap_multi_insert: uint8 flags, (pad), uint16 ntuples.
            let mut c = Cursor::new(data);
            c.take(2)
                .and_then(|_| c.u16())
                .map(u32::from)
                .ok_or("multi-insert record too short")?
        }
        HeapOp::Insert | HeapOp::Update | HeapOp::HotUpdate | HeapOp::Delete => 1,
        _ => 0,
    };
    let b0 = rec.block(0);
    Ok(RecordKind::Heap(HeapChange {
        op,
        init_page: inits_page(op, info),
        rel: b0.map(|b| b.rel),
        block: b0.map(|b| b.block),
        tuples,
    }))
}

/// `xl_heap_truncate`.
fn truncate(data: &[u8]) -> Option<HeapTruncate<'_>> {
    let mut c = Cursor::new(data);
    let db = Oid(c.u32()?);
    let n = usize::try_from(c.u32()?).ok()?;
    let flags = c.u8()?;
    c.take(3)?; // padding before the Oid array
    let relids = OidList(take_n(&mut c, n, 4)?);
    Some(HeapTruncate { db, relids, flags })
}

/// `pg_waldump`'s name of a HEAP (`heap2` false) or HEAP2 record type (`+INIT` when it
/// initializes its page).
pub(super) fn name(heap2: bool, info: u8, fmt: &WalFormat) -> Option<String> {
    let op = HeapOp::from_info(heap2, info, fmt);
    let init = inits_page(op, info);
    if info & XLOG_HEAP_INIT_PAGE != 0 && !init {
        return None;
    }
    Some(if init {
        format!("{}+INIT", op.name())
    } else {
        op.name().to_string()
    })
}
