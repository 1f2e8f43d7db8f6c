//! Decoder tests on synthetic WAL: cases real servers rarely produce on demand (overwritten
//! continuation records, timeline changes, hand-made block references).

use super::*;
use crate::page::{XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER};
use crate::Lsn;

const BLCKSZ: u64 = 8192;
const SEG: u64 = 1 << 20;
const MAGIC_16: u16 = 0xD113;

/// Writes WAL the way PostgreSQL lays it out: page headers, 8-byte aligned records,
/// continuation pages with `xlp_rem_len`.
struct Writer {
    buf: Vec<u8>,
    start: u64,
    pos: u64,
    prev: u64,
    tli: u32,
    magic: u16,
    /// Extra flags for the next page header written.
    next_page_flags: u16,
}

impl Writer {
    fn new(start: u64) -> Writer {
        Writer {
            buf: Vec::new(),
            start,
            pos: start,
            prev: 0,
            tli: 1,
            magic: MAGIC_16,
            next_page_flags: 0,
        }
    }

    fn put(&mut self, b: &[u8]) {
        let off = (self.pos - self.start) as usize;
        if self.buf.len() < off + b.len() {
            self.buf.resize(off + b.len(), 0);
        }
        self.buf[off..off + b.len()].copy_from_slice(b);
        self.pos += b.len() as u64;
    }

    fn page_header(&mut self, rem_len: u32) {
        let long = self.pos % SEG == 0;
        let mut info = self.next_page_flags;
        self.next_page_flags = 0;
        if rem_len > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        if long {
            info |= XLP_LONG_HEADER;
        }
        let mut h = Vec::new();
        h.extend_from_slice(&self.magic.to_le_bytes());
        h.extend_from_slice(&info.to_le_bytes());
        h.extend_from_slice(&self.tli.to_le_bytes());
        h.extend_from_slice(&self.pos.to_le_bytes());
        h.extend_from_slice(&rem_len.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        if long {
            h.extend_from_slice(&42u64.to_le_bytes());
            h.extend_from_slice(&(SEG as u32).to_le_bytes());
            h.extend_from_slice(&(BLCKSZ as u32).to_le_bytes());
        }
        self.put(&h);
    }

    /// Writes a record; returns its LSN. `cut` stops after that many bytes of the record
    /// (a crash), leaving the writer at the next page boundary.
    fn record_cut(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8], cut: Option<usize>) -> u64 {
        if self.pos % BLCKSZ == 0 {
            self.page_header(0);
        }
        let lsn = self.pos;
        let tot = (RECORD_HEADER_LEN + body.len()) as u32;
        let mut rec = Vec::new();
        rec.extend_from_slice(&tot.to_le_bytes());
        rec.extend_from_slice(&xid.to_le_bytes());
        rec.extend_from_slice(&self.prev.to_le_bytes());
        rec.push(info);
        rec.push(rmid);
        rec.extend_from_slice(&[0, 0]);
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(body);
        let crc = record_crc(&rec);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        let limit = cut.unwrap_or(rec.len());
        let mut done = 0;
        while done < limit {
            if self.pos % BLCKSZ == 0 {
                self.page_header((rec.len() - done) as u32);
            }
            let space = (BLCKSZ - self.pos % BLCKSZ) as usize;
            let n = space.min(limit - done);
            let chunk = rec[done..done + n].to_vec();
            self.put(&chunk);
            done += n;
        }
        if cut.is_some() {
            // Crashed: nothing more of this record reached the disk.
            self.pos = self.pos.div_ceil(BLCKSZ) * BLCKSZ;
            return lsn;
        }
        self.pos = (self.pos + 7) & !7;
        self.prev = lsn;
        lsn
    }

    fn record(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8]) -> u64 {
        self.record_cut(rmid, info, xid, body, None)
    }

    /// Pads the output with zeros to the end of the current segment.
    fn pad_segment(&mut self) {
        let end = (self.pos / SEG + 1) * SEG;
        self.buf.resize((end - self.start) as usize, 0);
    }
}

/// Main data only: `XLR_BLOCK_ID_DATA_SHORT` or `_LONG`.
fn main_data(data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    if data.len() < 256 {
        b.push(XLR_BLOCK_ID_DATA_SHORT);
        b.push(data.len() as u8);
    } else {
        b.push(XLR_BLOCK_ID_DATA_LONG);
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// (LSN, rmgr, main data length) of each record, and how decoding ended.
type Decoded = (Vec<(Lsn, u8, usize)>, Result<EndOfWal, WalError>);

fn decode_all(bytes: &[u8]) -> Decoded {
    let mut dec = WalDecoder::new();
    dec.feed(bytes);
    dec.finish();
    let mut out = Vec::new();
    loop {
        match dec.next_record() {
            Ok(Some(r)) => out.push((r.lsn, r.rmgr().0, r.main_data().len())),
            Ok(None) => return (out, Ok(dec.end().cloned().unwrap())),
            Err(e) => {
                // Errors are sticky.
                assert_eq!(dec.next_record().unwrap_err(), e);
                return (out, Err(e));
            }
        }
    }
}

#[test]
fn decodes_records_across_pages_and_segments() {
    let mut w = Writer::new(5 * SEG);
    let mut lsns = Vec::new();
    for i in 0..400u32 {
        // Lengths from tiny to several pages, so records end at every kind of offset.
        let len = (i as usize * 977) % 30_000;
        lsns.push(w.record(21, 0, i, &main_data(&vec![i as u8; len])));
    }
    w.pad_segment();
    let (got, end) = decode_all(&w.buf);
    assert_eq!(got.iter().map(|g| g.0 .0).collect::<Vec<_>>(), lsns);
    assert!(w.buf.len() as u64 > 2 * SEG, "crosses segments");
    let end = end.unwrap();
    assert_eq!(
        end.reason,
        EndReason::Invalid(WalError::ZeroLength { lsn: end.lsn })
    );
}

#[test]
fn overwritten_contrecord_is_skipped() {
    let mut w = Writer::new(SEG);
    let a = w.record(0, 0x20, 0, &main_data(b"noop"));
    // A record that crashed after 5000 bytes: its continuation never reached the disk.
    w.record_cut(21, 0, 7, &main_data(&[1; 20_000]), Some(5000));
    // After recovery PostgreSQL writes new WAL there, flagging the page.
    w.next_page_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
    let c = w.record(0, 0xD0, 0, &main_data(&[0; 16]));
    w.pad_segment();
    let (got, _) = decode_all(&w.buf);
    assert_eq!(got.iter().map(|g| g.0 .0).collect::<Vec<_>>(), vec![a, c]);
}

#[test]
fn missing_continuation_page_is_the_end_of_wal() {
    let mut w = Writer::new(SEG);
    w.record(0, 0x20, 0, &main_data(b"noop"));
    let b = w.record_cut(21, 0, 7, &main_data(&[1; 20_000]), Some(5000));
    w.pad_segment();
    let (got, end) = decode_all(&w.buf);
    assert_eq!(got.len(), 1);
    let end = end.unwrap();
    assert_eq!(end.lsn.0, b);
    assert!(
        matches!(end.reason, EndReason::Invalid(WalError::Page { .. })),
        "{end}"
    );
}

#[test]
fn timelines_may_grow_but_not_shrink() {
    let mut w = Writer::new(SEG);
    w.record(0, 0x20, 0, &main_data(&[0; 9000]));
    w.tli = 2;
    let b = w.record(0, 0x20, 0, &main_data(&[0; 9000]));
    w.record(0, 0x20, 0, &main_data(&[0; 10]));
    w.pad_segment();
    let mut dec = WalDecoder::new();
    dec.feed(&w.buf);
    dec.finish();
    let mut tlis = Vec::new();
    while let Some(r) = dec.next_record().unwrap() {
        tlis.push((r.lsn.0, r.timeline.0));
    }
    // The record at `b` starts on a timeline-1 page (the one the first record ended on).
    assert_eq!(tlis[1], (b, 1));
    assert_eq!(tlis[2].1, 2);

    let mut w = Writer::new(SEG);
    w.tli = 3;
    w.record(0, 0x20, 0, &main_data(&[0; 9000]));
    w.tli = 2;
    w.record(0, 0x20, 0, &main_data(&[0; 9000]));
    w.record(0, 0x20, 0, &main_data(&[0; 9000]));
    w.pad_segment();
    let (got, end) = decode_all(&w.buf);
    assert_eq!(got.len(), 1);
    // The continuation page is the one going backwards; the following pages are of the
    // same (backwards) timeline, hence valid: corruption.
    assert!(
        matches!(end, Err(WalError::TimelineBackwards { .. })),
        "{end:?}"
    );
}

#[test]
fn bad_prev_link_at_the_end_is_the_end_of_wal() {
    let mut w = Writer::new(SEG);
    w.record(0, 0x20, 0, &main_data(b"a"));
    let stale = w.pos;
    w.prev = 12345;
    w.record(0, 0x20, 0, &main_data(b"b"));
    w.pad_segment();
    let (got, end) = decode_all(&w.buf);
    assert_eq!(got.len(), 1);
    assert_eq!(
        end.unwrap().reason,
        EndReason::Invalid(WalError::BadPrevLink {
            lsn: Lsn(stale),
            found: Lsn(12345),
            expected: Lsn(SEG + 40),
        })
    );
}

#[test]
fn invalid_rmgr_is_reported() {
    let mut w = Writer::new(SEG);
    w.record(0, 0x20, 0, &main_data(b"a"));
    w.record(100, 0, 0, &main_data(b"b"));
    w.pad_segment();
    let (_, end) = decode_all(&w.buf);
    assert!(matches!(
        end.unwrap().reason,
        EndReason::Invalid(WalError::InvalidRmgr { rmid: 100, .. })
    ));
}

#[test]
fn decodes_block_references() {
    // Block 0: relation, image with a hole, data. Block 2: same relation, data only.
    // Then origin, toplevel xid and long main data.
    let mut body = Vec::new();
    body.push(0u8); // block id 0
    body.push(BKPBLOCK_HAS_IMAGE | BKPBLOCK_HAS_DATA); // main fork
    body.extend_from_slice(&3u16.to_le_bytes()); // data length
    body.extend_from_slice(&4000u16.to_le_bytes()); // bimg_len
    body.extend_from_slice(&100u16.to_le_bytes()); // hole offset
    body.push(0x01 | 0x02); // PG15+: HAS_HOLE | APPLY
    for v in [1663u32, 5, 16384] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&7u32.to_le_bytes()); // block number
    body.push(2u8); // block id 2
    body.push(BKPBLOCK_HAS_DATA | BKPBLOCK_SAME_REL | 2); // vm fork
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend_from_slice(&9u32.to_le_bytes());
    body.push(XLR_BLOCK_ID_ORIGIN);
    body.extend_from_slice(&77u16.to_le_bytes());
    body.push(XLR_BLOCK_ID_TOPLEVEL_XID);
    body.extend_from_slice(&900u32.to_le_bytes());
    body.push(XLR_BLOCK_ID_DATA_LONG);
    body.extend_from_slice(&300u32.to_le_bytes());
    body.extend_from_slice(&[0xAA; 4000]); // image
    body.extend_from_slice(b"abc"); // block 0 data
    body.extend_from_slice(b"de"); // block 2 data
    body.extend_from_slice(&[0x55; 300]); // main data

    let mut w = Writer::new(SEG);
    w.record(10, 0, 901, &body);
    w.pad_segment();
    let mut dec = WalDecoder::new();
    dec.feed(&w.buf);
    let r = dec.next_record().unwrap().unwrap();
    assert_eq!(r.block_count(), 2);
    let b0 = r.block(0).unwrap();
    assert_eq!(b0.rel.to_string(), "1663/5/16384");
    assert_eq!(b0.block, 7);
    assert_eq!(b0.data, b"abc");
    let img = b0.image.unwrap();
    assert_eq!((img.hole_offset, img.hole_length), (100, 8192 - 4000));
    assert_eq!(img.data.len(), 4000);
    assert!(img.apply);
    assert_eq!(img.compression, ImageCompression::None);
    let b2 = r.block(2).unwrap();
    assert_eq!(b2.rel, b0.rel);
    assert_eq!(b2.fork, ForkNumber::VISIBILITY_MAP);
    assert_eq!(b2.data, b"de");
    assert!(r.block(1).is_none());
    assert_eq!(r.origin(), Some(77));
    assert_eq!(r.toplevel_xid(), Some(Xid(900)));
    assert_eq!(r.main_data(), &[0x55; 300][..]);
    assert_eq!(r.fpi_len(), 4000);

    // The same record, standalone.
    let raw = r.raw().to_vec();
    let lsn = r.lsn;
    let mut scratch = BlockScratch::default();
    let v16 = crate::PgMajor::new(16).unwrap();
    let r2 = Record::decode(&raw, lsn, v16, crate::TimelineId(1), 8192, &mut scratch).unwrap();
    assert_eq!(r2.block(2).unwrap().data, b"de");
}

#[test]
fn malformed_block_headers_are_errors_not_panics() {
    let v16 = crate::PgMajor::new(16).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vec![0, BKPBLOCK_SAME_REL, 0, 0, 1, 0, 0, 0],
            "no previous relation",
        ),
        (vec![0, BKPBLOCK_HAS_DATA, 0, 0], "no data included"),
        (vec![40], "invalid block id"),
        (vec![XLR_BLOCK_ID_DATA_SHORT, 10, 1], "shorter"),
    ];
    for (body, what) in cases {
        let mut raw = vec![0u8; RECORD_HEADER_LEN];
        raw.extend_from_slice(&body);
        let len = raw.len() as u32;
        raw[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = record_crc(&raw);
        raw[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut scratch = BlockScratch::default();
        let err = Record::decode(&raw, Lsn(80), v16, crate::TimelineId(1), 8192, &mut scratch)
            .unwrap_err();
        assert!(err.to_string().contains(what), "{err} lacks {what:?}");
        assert_eq!(err.lsn(), Lsn(80));
    }
}

#[test]
fn empty_and_short_input() {
    let (got, end) = decode_all(&[]);
    assert!(got.is_empty());
    assert_eq!(end.unwrap().reason, EndReason::InputEnded);
    let (_, end) = decode_all(&[0xD1; 10]);
    assert!(matches!(end, Err(WalError::InputTooShort { len: 10, .. })));
    // Not at a segment start.
    let mut w = Writer::new(SEG);
    w.record(0, 0x20, 0, &main_data(b"a"));
    let mut buf = w.buf.clone();
    buf[8..16].copy_from_slice(&(SEG + 8192).to_le_bytes());
    let (_, end) = decode_all(&buf);
    assert!(
        matches!(end, Err(WalError::NotSegmentStart { .. })),
        "{end:?}"
    );
}

#[test]
fn image_pages_get_their_hole_back_and_bad_images_are_errors() {
    use super::{BlockImage, ImageCompression, ImageError};
    let img = |data: &'static [u8], hole_offset, hole_length, compression| BlockImage {
        data,
        hole_offset,
        hole_length,
        info: 0,
        compression,
        apply: true,
        page_size: 8,
    };
    let plain = img(b"abcdef", 2, 2, ImageCompression::None);
    assert_eq!(plain.page(None).unwrap(), b"ab\0\0cdef".to_vec());
    assert_eq!(
        img(b"abcdefgh", 0, 0, ImageCompression::None)
            .page(None)
            .unwrap(),
        b"abcdefgh".to_vec()
    );
    // The hole does not fit, the length is wrong, no decompressor, corrupt pglz.
    assert!(img(b"abcdef", 7, 2, ImageCompression::None)
        .page(None)
        .is_err());
    assert!(img(b"abc", 2, 2, ImageCompression::None)
        .page(None)
        .is_err());
    assert!(img(b"abcdef", 2, 9, ImageCompression::None)
        .page(None)
        .is_err());
    assert_eq!(
        img(b"xx", 0, 0, ImageCompression::Zstd).page(None),
        Err(ImageError::NoDecompressor(ImageCompression::Zstd))
    );
    assert_eq!(
        img(b"\x01\x00\x00", 0, 0, ImageCompression::Pglz).page(None),
        Err(ImageError::Corrupt(ImageCompression::Pglz))
    );
}
