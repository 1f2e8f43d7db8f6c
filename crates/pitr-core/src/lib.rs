//! pitr's engines: each command is a library function that returns a report; the CLI only
//! parses arguments, calls these and renders the result.

pub mod archive;
pub mod backup;
pub mod check;
pub mod drill;
pub mod expire;
pub mod history;
pub mod info;
pub mod metrics;
pub mod pause;
pub mod pgbin;
pub mod pin;
pub mod progress;
pub mod report;
pub mod restore;
pub mod standby;
pub mod status;
pub mod stream;
pub mod undo;
pub mod verify;
pub mod walscan;
