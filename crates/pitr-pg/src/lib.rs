//! PostgreSQL formats that pitr reads and writes: LSNs, timelines, WAL file names, timeline
//! history files, WAL page headers and WAL records ([`wal`]).
//!
//! Everything here is pure: no I/O, no allocation beyond what a result needs, and no panic on
//! any input (bytes from disk or a user are untrusted). Segment size and timeline always come
//! from the data; nothing assumes 16 MB segments or timeline 1.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod history;
pub mod lsn;
pub mod page;
pub mod segment;
pub mod timeline;
pub mod version;
pub mod wal;
pub mod walname;

pub use history::{HistoryEntry, TimelineHistory};
pub use lsn::Lsn;
pub use page::{LongPageHeader, PageHeader};
pub use segment::{SegNo, WalSegSize};
pub use timeline::TimelineId;
pub use version::PgMajor;
pub use walname::WalFileName;
