//! `pitr wal`: reads archived WAL from the repository, decodes it with `pitr_pg::wal` and
//! reports what each transaction did (`log`), and which transactions destroyed data
//! (`incidents`), with the recovery targets that undo them.
//!
//! The plan: pick the timeline (default the newest archived) and, along its history, the
//! archived segment that holds each segment number (the newest timeline whose part of the
//! history covers it, as PostgreSQL's `XLogFileReadAnyTLI`); cut the run to `--from`/`--to`
//! (an LSN or segment name narrows the segments; a time filters what is reported); stop at the
//! first missing segment. Segments are fetched (verified) ahead of the decoder, which streams
//! them in order so records may cross segment boundaries. The `pg_class` / `pg_namespace`
//! rows written to the WAL are read on the way ([`CatalogTracker`]) and kept per transaction
//! until it ends; relation names are filled in afterwards by [`names`], which also uses the
//! rows of transactions committed before.
//!
//! One module per step: [`plan`] (which segments), `scan` (decoding them), `collect` (what
//! each record contributes), `classify` (what a transaction did to relation files),
//! [`names`] (relation names), [`incidents`]; `report` holds the report types, `options` the
//! range, `error` the errors, `image` and `shell` two helpers.
//!
//! [`CatalogTracker`]: pitr_pg::wal::CatalogTracker

mod classify;
mod collect;
mod error;
mod image;
mod incidents;
pub mod names;
mod options;
mod plan;
mod report;
mod scan;
mod shell;

pub use classify::classify;
pub use error::WalScanError;
pub use incidents::{damaged_tables, incidents, CommandContext, Incident, Incidents};
pub use options::{Bound, ScanOptions};
pub use plan::{plan, SegmentPlan};
pub use report::{
    rfc3339, CheckpointReport, DbRef, Event, RelReport, RestorePointReport, ScanInfo, TxnReport,
    WalLog,
};
pub use scan::{log, scan};
pub use shell::shell_quote;
