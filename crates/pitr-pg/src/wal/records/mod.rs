//! Interpretation of the records pitr needs: transaction ends (commit, abort, prepare and
//! their two-phase forms), checkpoints, restore points, segment switches, relation file
//! creation and truncation, heap changes and logical messages.
//!
//! Layouts: `src/include/access/xact.h` (`ParseCommitRecord` and friends in
//! `xactdesc.c`), `catalog/pg_control.h`, `access/xlog_internal.h`, `catalog/storage_xlog.h`,
//! `access/heapam_xlog.h`, `replication/message.h`. Version differences come from
//! [`WalFormat`].
//!
//! One module per resource manager (`xact`, `xlog`, `smgr`, `heap`, `logicalmsg`), each with
//! its opcodes, its record types, an `interpret` and a `name` (`pg_waldump`'s); this file
//! dispatches on the resource manager.

mod heap;
mod lists;
mod logicalmsg;
mod smgr;
mod xact;
mod xlog;

pub use heap::*;
pub use lists::*;
pub use logicalmsg::LogicalMessage;
pub use smgr::*;
pub use xact::*;
pub use xlog::*;

use super::bytes::Cursor;
use super::error::WalError;
use super::record::Record;
use super::types::RmgrId;

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
        let data = self.main_data();
        let kind = match self.rmgr() {
            RmgrId::XACT => xact::interpret(self, data, info),
            RmgrId::XLOG => xlog::interpret(data, info, self.format()),
            RmgrId::SMGR => smgr::interpret(data, info),
            RmgrId::HEAP | RmgrId::HEAP2 => heap::interpret(self, data, info),
            RmgrId::LOGICALMSG if info == logicalmsg::XLOG_LOGICAL_MESSAGE => {
                logicalmsg::interpret(data)
            }
            _ => Ok(RecordKind::Other),
        };
        kind.map_err(|what| WalError::Interpret {
            lsn: self.lsn,
            rmgr: self.rmgr(),
            info: self.header.info,
            what,
        })
    }

    /// `pg_waldump`'s record type name (the first word of its `desc:`) for the resource
    /// managers pitr interprets (XLOG, Transaction, Storage, Standby, Heap, Heap2,
    /// LogicalMessage); `None` for others.
    pub fn identify(&self) -> Option<String> {
        let info = self.rmgr_info();
        let fmt = self.format();
        let found = match self.rmgr() {
            RmgrId::XLOG => xlog::name(info, fmt),
            RmgrId::XACT => xact::name(info),
            RmgrId::SMGR => smgr::name(info),
            RmgrId::STANDBY => standby_name(info),
            RmgrId::HEAP | RmgrId::HEAP2 => {
                return heap::name(self.rmgr() == RmgrId::HEAP2, info, fmt);
            }
            RmgrId::LOGICALMSG if info == logicalmsg::XLOG_LOGICAL_MESSAGE => Some("MESSAGE"),
            _ => None,
        };
        found.map(str::to_string)
    }
}

/// `pg_waldump`'s name of a standby record type (`standbydefs.h`).
fn standby_name(info: u8) -> Option<&'static str> {
    match info {
        0x00 => Some("LOCK"),
        0x10 => Some("RUNNING_XACTS"),
        0x20 => Some("INVALIDATIONS"),
        _ => None,
    }
}
