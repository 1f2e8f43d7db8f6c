//! The XLOG resource manager: checkpoints, restore points, segment switches
//! (`catalog/pg_control.h`, `access/xlog_internal.h`).

use crate::{Lsn, TimelineId};

use super::super::bytes::Cursor;
use super::super::format::WalFormat;
use super::super::timestamp::PgTimestamp;
use super::super::types::{Oid, Xid};
use super::{until_nul, RecordKind};

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

/// Interprets an XLOG record's main data (`Err`: what is wrong with it).
pub(super) fn interpret<'a>(
    data: &'a [u8],
    info: u8,
    fmt: &WalFormat,
) -> Result<RecordKind<'a>, &'static str> {
    match info {
        XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
            checkpoint(data, info == 0, fmt.checkpoint_wal_level)
                .map(RecordKind::Checkpoint)
                .ok_or("checkpoint record too short")
        }
        XLOG_RESTORE_POINT => restore_point(data)
            .map(RecordKind::RestorePoint)
            .ok_or("restore point record too short"),
        XLOG_SWITCH => Ok(RecordKind::Switch),
        _ => Ok(RecordKind::Other),
    }
}

/// `pg_waldump`'s name of an XLOG record type.
pub(super) fn name(info: u8, fmt: &WalFormat) -> Option<&'static str> {
    Some(match info {
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
    })
}

/// `xl_restore_point`.
fn restore_point(data: &[u8]) -> Option<RestorePoint<'_>> {
    let mut c = Cursor::new(data);
    let time = PgTimestamp(c.i64()?);
    let name = until_nul(c.take(c.remaining())?);
    Some(RestorePoint { time, name })
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
