//! PostgreSQL formats that pitr reads and writes: LSNs, timelines, WAL file names, timeline
//! history files, WAL page headers, WAL records ([`wal`]), `pg_control`, `backup_label` /
//! `tablespace_map`, and data page checksums.
//!
//! Everything here is pure: no I/O, no allocation beyond what a result needs, and no panic on
//! any input (bytes from disk or a user are untrusted). Segment size and timeline always come
//! from the data; nothing assumes 16 MB segments or timeline 1.

#![deny(clippy::indexing_slicing)] // parsers never panic on any input (STYLE rule 3)
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backup_label;
pub mod catalog;
pub mod control;
pub mod history;
pub mod lsn;
pub mod page;
pub mod page_checksum;
pub mod segment;
pub mod system_id;
pub mod timeline;
pub mod version;
pub mod wal;
pub mod walname;

pub use backup_label::{
    BackupFrom, BackupLabel, BackupLabelError, BackupMethod, BackupStop, IncrementalFrom,
    TablespaceMap, TablespaceMapEntry, TablespaceMapError,
};
pub use control::{
    CheckpointCopy, ControlFile, ControlFileError, ControlLayout, DbState, WalLevel,
};
pub use history::{HistoryEntry, TimelineHistory};
pub use lsn::Lsn;
pub use page::{LongPageHeader, PageHeader};
pub use page_checksum::{pg_checksum_page, verify_page, PageCheck};
pub use segment::{SegNo, WalSegSize};
pub use system_id::SystemId;
pub use timeline::TimelineId;
pub use version::PgMajor;
pub use walname::WalFileName;
