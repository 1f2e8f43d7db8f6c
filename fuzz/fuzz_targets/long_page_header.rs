//! `PageHeader::parse` / `LongPageHeader::parse` on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::{LongPageHeader, PageHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = PageHeader::parse(data) {
        assert!(h.len() <= 40);
    }
    if let Ok(h) = LongPageHeader::parse(data) {
        assert!(h.short.is_long());
        assert!(h.seg_size.bytes().is_power_of_two());
    }
});
