//! The streaming WAL decoder on arbitrary bytes, fed in arbitrary chunk sizes through both
//! APIs (`feed`/`next_record` and the zero-copy `decode_slice`); every record is also
//! interpreted, summarized and fed to a `CatalogTracker`. Seeds: prefixes of real segments
//! (see README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::wal::{CatalogTracker, Record, TxnTracker, WalDecoder};

fn look(r: &Record<'_>, tracker: &mut TxnTracker) {
    assert!(r.total_len() as usize == r.raw().len());
    assert!(r.end_lsn > r.lsn);
    for b in r.blocks() {
        std::hint::black_box(b);
    }
    let _ = r.identify();
    let _ = r.kind();
    let _ = tracker.add(r);
}

/// Pulls records with `next_record`; false after an error.
fn drain(dec: &mut WalDecoder, tracker: &mut TxnTracker, seen: &mut Vec<u64>) -> bool {
    loop {
        match dec.next_record() {
            Ok(Some(r)) => {
                look(&r, tracker);
                seen.push(r.lsn.0);
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

    // Buffered API.
    let mut dec = WalDecoder::new();
    let mut tracker = TxnTracker::new();
    let mut seen_a = Vec::new();
    let mut res_a = Ok(());
    for c in wal.chunks(chunk) {
        dec.feed(c);
        if !drain(&mut dec, &mut tracker, &mut seen_a) {
            res_a = Err(());
            break;
        }
    }
    if res_a.is_ok() {
        dec.finish();
        if drain(&mut dec, &mut tracker, &mut seen_a) {
            let end = dec.end().expect("a finished decoder reports its end");
            let _ = end.to_string();
        } else {
            res_a = Err(());
        }
    }

    // Zero-copy API: same records, same outcome.
    let mut dec = WalDecoder::new();
    let mut tracker = TxnTracker::new();
    let mut seen_b = Vec::new();
    let mut res_b = Ok(());
    let mut catalog = CatalogTracker::new();
    let mut catalog_events = Vec::new();
    let mut on = |r: Record<'_>| {
        look(&r, &mut tracker);
        catalog.record(&r, &mut catalog_events);
        catalog_events.clear();
        seen_b.push(r.lsn.0);
    };
    for c in wal.chunks(chunk) {
        if dec.decode_slice(c, &mut on).is_err() {
            res_b = Err(());
            break;
        }
    }
    if res_b.is_ok() {
        dec.finish();
        res_b = dec.decode_slice(&[], &mut on).map_err(|_| ());
    }
    assert_eq!(seen_a, seen_b);
    assert_eq!(res_a, res_b);
});
