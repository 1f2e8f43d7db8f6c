//! `Lsn: FromStr`: never panics, and parses what it prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::Lsn;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lsn) = s.parse::<Lsn>() {
        assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
    }
});
