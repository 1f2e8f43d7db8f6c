//! The transaction resource manager: commits, aborts, two-phase prepares and subtransaction
//! assignments (`access/xact.h`, `ParseCommitRecord` and friends in `xactdesc.c`).

use crate::Lsn;

use super::super::bytes::Cursor;
use super::super::record::Record;
use super::super::timestamp::PgTimestamp;
use super::super::types::{Oid, RelFileLocator, Xid};
use super::{count, cstring, take_n, until_nul, RecordKind, RelList, XidList};

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

/// `SizeOfXLogRecord`-independent size of a shared invalidation message.
const INVAL_MSG_LEN: usize = 16;

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

/// Interprets a transaction record's main data (`Err`: what is wrong with it).
pub(super) fn interpret<'a>(
    rec: &Record<'a>,
    data: &'a [u8],
    info: u8,
) -> Result<RecordKind<'a>, &'static str> {
    match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => xact_end(rec, data, info, true)
            .map(RecordKind::Commit)
            .ok_or("commit record too short"),
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => xact_end(rec, data, info, false)
            .map(RecordKind::Abort)
            .ok_or("abort record too short"),
        XLOG_XACT_PREPARE => prepare(rec, data)
            .map(RecordKind::Prepare)
            .ok_or("prepare record too short"),
        XLOG_XACT_ASSIGNMENT => assignment(data)
            .map(RecordKind::Assignment)
            .ok_or("assignment record too short"),
        _ => Ok(RecordKind::Other),
    }
}

/// `pg_waldump`'s name of a transaction record type.
pub(super) fn name(info: u8) -> Option<&'static str> {
    Some(match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT => "COMMIT",
        XLOG_XACT_PREPARE => "PREPARE",
        XLOG_XACT_ABORT => "ABORT",
        XLOG_XACT_COMMIT_PREPARED => "COMMIT_PREPARED",
        XLOG_XACT_ABORT_PREPARED => "ABORT_PREPARED",
        XLOG_XACT_ASSIGNMENT => "ASSIGNMENT",
        XLOG_XACT_INVALIDATIONS => "INVALIDATION",
        _ => return None,
    })
}

/// `xl_xact_assignment`.
fn assignment(data: &[u8]) -> Option<XactAssignment<'_>> {
    let mut c = Cursor::new(data);
    let top = Xid(c.u32()?);
    let n = count(&mut c)?;
    let subxacts = XidList(take_n(&mut c, n, 4)?);
    Some(XactAssignment { top, subxacts })
}

/// `ParseCommitRecord` / `ParseAbortRecord`.
fn xact_end<'a>(rec: &Record<'a>, data: &'a [u8], info: u8, commit: bool) -> Option<XactEnd<'a>> {
    let fmt = rec.format();
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
            Some(x) if prepared || !rec.xid().is_valid() => x,
            _ => rec.xid(),
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
fn prepare<'a>(rec: &Record<'a>, data: &'a [u8]) -> Option<XactPrepare<'a>> {
    let fmt = rec.format();
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
