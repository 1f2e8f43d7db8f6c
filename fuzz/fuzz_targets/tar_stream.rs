//! `pitr_proto::tar::TarParser` on arbitrary bytes fed in arbitrary chunk sizes: never
//! panics, never returns more data than an entry declared, and consumes what it is given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_proto::tar::{TarEvent, TarParser};

fuzz_target!(|data: &[u8]| {
    let [chunk, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let mut p = TarParser::new();
    let mut left_in_entry: u64 = 0;
    for piece in rest.chunks(chunk) {
        let mut input = piece;
        loop {
            let Ok((n, ev)) = p.parse(input) else {
                return;
            };
            assert!(n <= input.len());
            input = &input[n..];
            match ev {
                Some(TarEvent::Entry(e)) => left_in_entry = e.size,
                Some(TarEvent::Data(d)) => {
                    assert!(d.len() as u64 <= left_in_entry);
                    left_in_entry -= d.len() as u64;
                }
                Some(TarEvent::EntryEnd) => assert_eq!(left_in_entry, 0),
                Some(TarEvent::End) => {}
                None if input.is_empty() => break,
                None => {}
            }
        }
    }
    let _ = p.finish();
});
