//! The storage manager (smgr) resource manager: relation fork files created and truncated
//! (`catalog/storage_xlog.h`).

use super::super::bytes::Cursor;
use super::super::types::{ForkNumber, RelFileLocator};
use super::RecordKind;

// Storage (smgr) opcodes.
/// `XLOG_SMGR_CREATE`.
pub const XLOG_SMGR_CREATE: u8 = 0x10;
/// `XLOG_SMGR_TRUNCATE`.
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;

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

/// Interprets a storage record's main data (`Err`: what is wrong with it).
pub(super) fn interpret(data: &[u8], info: u8) -> Result<RecordKind<'_>, &'static str> {
    let mut c = Cursor::new(data);
    match info {
        XLOG_SMGR_CREATE => (|| {
            let rel = RelFileLocator::parse(c.take(RelFileLocator::LEN)?)?;
            let fork = ForkNumber(u8::try_from(c.i32()?).ok()?);
            Some(RecordKind::SmgrCreate(SmgrCreate { rel, fork }))
        })()
        .ok_or("smgr create record too short"),
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
        .ok_or("smgr truncate record too short"),
        _ => Ok(RecordKind::Other),
    }
}

/// `pg_waldump`'s name of a storage record type.
pub(super) fn name(info: u8) -> Option<&'static str> {
    match info {
        XLOG_SMGR_CREATE => Some("CREATE"),
        XLOG_SMGR_TRUNCATE => Some("TRUNCATE"),
        _ => None,
    }
}
