//! Record body decoding and interpretation on arbitrary bodies with a valid header and CRC,
//! so that the fuzzer explores block references and main data rather than checksums.
//! Input: version selector, rmid, xl_info, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_pg::wal::{record_crc, BlockScratch, CatalogTracker, Record, TxnTracker};
use pitr_pg::{Lsn, PgMajor, TimelineId};

fuzz_target!(|data: &[u8]| {
    let [v, rmid, info, body @ ..] = data else {
        return;
    };
    let Ok(version) = PgMajor::new(14 + u32::from(*v % 5)) else {
        return;
    };
    let mut raw = vec![0u8; 24];
    raw.extend_from_slice(body);
    let len = raw.len() as u32;
    raw[0..4].copy_from_slice(&len.to_le_bytes());
    raw[4..8].copy_from_slice(&1000u32.to_le_bytes());
    raw[16] = *info;
    raw[17] = *rmid;
    let crc = record_crc(&raw);
    raw[20..24].copy_from_slice(&crc.to_le_bytes());
    let mut scratch = BlockScratch::default();
    if let Ok(r) = Record::decode(&raw, Lsn(0x0100_0028), version, TimelineId(1), 8192, &mut scratch)
    {
        for b in r.blocks() {
            std::hint::black_box(b);
        }
        let _ = r.identify();
        if let Ok(k) = r.kind() {
            let _ = format!("{k:?}");
        }
        let _ = TxnTracker::new().add(&r);
        let _ = r.heap_tuples();
        for b in r.blocks() {
            if let Some(img) = b.image {
                let _ = img.page(None);
            }
        }
        // Block references to pg_class (1259) make the tracker read rows and images.
        let mut events = Vec::new();
        CatalogTracker::new().record(&r, &mut events);
    }
});
