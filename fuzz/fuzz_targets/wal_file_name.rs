//! `WalFileName::parse`: never panics, and what it accepts prints back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::WalFileName;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = WalFileName::parse(s) {
        assert_eq!(name.to_string(), s);
        for mb in [1u64, 16, 1024] {
            if let Ok(size) = pitr_pg::WalSegSize::new(mb << 20) {
                let _ = name.segno(size);
            }
        }
    }
});
