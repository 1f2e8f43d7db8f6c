//! The streaming WAL decoder on arbitrary bytes, fed in arbitrary chunk sizes; every record
//! is also interpreted and summarized. Seeds: prefixes of real segments (see README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::wal::{TxnTracker, WalDecoder};

fn drain(dec: &mut WalDecoder, tracker: &mut TxnTracker) -> bool {
    loop {
        match dec.next_record() {
            Ok(Some(r)) => {
                assert!(r.total_len() as usize == r.raw().len());
                assert!(r.end_lsn > r.lsn);
                for b in r.blocks() {
                    std::hint::black_box(b);
                }
                let _ = r.identify();
                let _ = r.kind();
                let _ = tracker.add(&r);
            }
            Ok(None) => return true,
            Err(e) => {
                let _ = e.to_string();
                // Errors are sticky.
                assert_eq!(dec.next_record().err(), Some(e));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the chunk size, the rest is WAL.
    let (chunk, wal) = match data {
        [a, b, rest @ ..] => (1 + usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let mut dec = WalDecoder::new();
    let mut tracker = TxnTracker::new();
    for c in wal.chunks(chunk) {
        dec.feed(c);
        if !drain(&mut dec, &mut tracker) {
            return;
        }
    }
    dec.finish();
    if drain(&mut dec, &mut tracker) {
        let end = dec.end().expect("a finished decoder reports its end");
        let _ = end.to_string();
    }
});
