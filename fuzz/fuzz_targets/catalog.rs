//! The catalog heap-file parsers and the relation mapper file on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::catalog::{named_rows, pg_class_rows, RelMap};
use pitr_pg::PgMajor;

fuzz_target!(|data: &[u8]| {
    for major in [14, 18] {
        let _ = pg_class_rows(data, PgMajor::new(major).unwrap());
    }
    let _ = named_rows(data);
    let _ = RelMap::parse(data);
});
