//! `ControlFile::parse` (the contents of `global/pg_control`) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::control::ControlFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ControlFile::parse(data) {
        let _ = format!("{c:?}");
    }
});
