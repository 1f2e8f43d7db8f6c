//! `BackupLabel::parse` and `TablespaceMap::parse` on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::backup_label::{BackupLabel, TablespaceMap};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(l) = BackupLabel::parse(&text) {
        let _ = format!("{l:?}");
    }
    if let Ok(m) = TablespaceMap::parse(&text) {
        let _ = format!("{m:?}");
    }
});
