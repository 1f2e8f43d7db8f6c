//! WAL decoding: page and record headers, block references, and the records pitr cares about
//! (transaction ends, checkpoints, restore points, relation changes).
//!
//! - [`WalDecoder`] turns a stream of WAL bytes into [`Record`]s (push-style, sans-IO).
//! - [`Record::kind`] interprets a record's main data ([`RecordKind`]).
//! - [`TxnTracker`] summarizes what each transaction did.
//! - [`CatalogTracker`] reads the `pg_class` / `pg_namespace` rows written to the WAL.
//!
//! Transaction ids and object ids are the [`Xid`] and [`Oid`] newtypes so they cannot be
//! swapped; both print as plain numbers.
//!
//! ```
//! use pitr_pg::wal::{EndOfWal, RecordKind, WalDecoder, WalError};
//! use pitr_pg::Lsn;
//!
//! /// Commit LSNs and times in some segments (whole files, in order), and where WAL ends.
//! fn commits(segments: &[Vec<u8>]) -> Result<(Vec<(Lsn, String)>, EndOfWal), WalError> {
//!     let mut dec = WalDecoder::new();
//!     let mut out = Vec::new();
//!     let mut on_record = |rec: pitr_pg::wal::Record<'_>| {
//!         if let Ok(RecordKind::Commit(c)) = rec.kind() {
//!             out.push((rec.lsn, c.time.to_string()));
//!         }
//!     };
//!     for seg in segments {
//!         dec.decode_slice(seg, &mut on_record)?; // zero-copy
//!     }
//!     dec.finish();
//!     dec.decode_slice(&[], &mut on_record)?;
//!     let end = dec.end().cloned().expect("a finished decoder knows where WAL ends");
//!     Ok((out, end))
//! }
//! let (found, end) = commits(&[]).unwrap();
//! assert!(found.is_empty());
//! assert_eq!(end.reason, pitr_pg::wal::EndReason::InputEnded);
//! ```

mod bytes;
mod catalog_changes;
mod decoder;
mod error;
mod format;
mod pglz;
mod record;
mod records;
mod summary;
#[cfg(test)]
mod tests;
mod timestamp;
mod tuples;
mod types;

pub use catalog_changes::{
    CatalogChange, CatalogEvent, CatalogRow, CatalogTracker, UnreadableReason, PG_CLASS_OID,
    PG_NAMESPACE_OID,
};
pub use decoder::WalDecoder;
pub use error::{EndOfWal, EndReason, WalError};
pub use format::{BkpImageBits, WalFormat, WAL_FORMATS};
pub use record::{
    record_crc, BlockImage, BlockRef, BlockScratch, ImageCompression, ImageDecompressor,
    ImageError, Record, RecordHeader, BKPBLOCK_FORK_MASK, BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE,
    BKPBLOCK_SAME_REL, BKPBLOCK_WILL_INIT, MAX_RECORD_LEN, RECORD_HEADER_LEN,
    XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT, XLR_BLOCK_ID_ORIGIN,
    XLR_BLOCK_ID_TOPLEVEL_XID, XLR_INFO_MASK, XLR_MAX_BLOCK_ID,
};
pub use records::*;
pub use summary::{RelChanges, TxnOutcome, TxnSummary, TxnTracker};
pub use timestamp::PgTimestamp;
pub use tuples::{
    LoggedTuple, TupleSource, XLH_UPDATE_PREFIX_FROM_OLD, XLH_UPDATE_SUFFIX_FROM_OLD,
};
pub use types::{
    ForkNumber, Oid, RelFileLocator, RmgrId, Xid, DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID,
};
