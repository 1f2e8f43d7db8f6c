//! The logical decoding message resource manager (`replication/message.h`).

use super::super::bytes::Cursor;
use super::super::types::Oid;
use super::{until_nul, RecordKind};

/// `XLOG_LOGICAL_MESSAGE`.
pub(super) const XLOG_LOGICAL_MESSAGE: u8 = 0x00;

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

/// Interprets a logical message record's main data (`Err`: what is wrong with it).
pub(super) fn interpret(data: &[u8]) -> Result<RecordKind<'_>, &'static str> {
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
    .ok_or("logical message record too short")
}
