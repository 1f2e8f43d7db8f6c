//! `TimelineHistory::parse` and its queries on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::{Lsn, TimelineHistory, TimelineId};

fuzz_target!(|data: &[u8]| {
    let [t, rest @ ..] = data else {
        return;
    };
    let tli = TimelineId(u32::from(*t).max(1));
    if let Ok(h) = TimelineHistory::parse(tli, rest) {
        for lsn in [0u64, 0x0100_0000, u64::MAX] {
            let _ = h.timeline_at(Lsn(lsn));
            let _ = h.includes_point(tli, Lsn(lsn));
        }
        for e in &h.entries {
            let _ = h.end_of(e.parent);
            let _ = h.contains(e.parent);
        }
    }
});
