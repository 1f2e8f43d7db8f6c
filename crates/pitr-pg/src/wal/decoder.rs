//! The streaming WAL decoder: bytes in, records out (`XLogReadRecord` without the I/O).
//!
//! Feed it WAL in order — whole segments or chunks of any size — with [`WalDecoder::feed`],
//! and pull records with [`WalDecoder::next_record`]; or hand it slices with
//! [`WalDecoder::decode_slice`], which decodes records in place without copying the input
//! (only an incomplete record at the end of a slice is kept). Records may continue across
//! pages and segments. The segment size, page size and version come from the first long
//! page header; every later page header is checked against them (magic, page address,
//! timeline order, system identifier).
//!
//! # End of WAL versus corruption
//!
//! PostgreSQL stops replay at the first invalid record: that is how the end of WAL is found
//! (the zeroed or recycled tail of the last segment). The decoder does the same but also
//! looks further: when a record or page is invalid, it examines the following pages of that
//! segment and the first page of the next one. If one of them is a valid page at its
//! expected address, WAL went on after the bad spot, so the error is returned as corruption;
//! otherwise decoding ends normally with [`EndReason::Invalid`]. Errors that can never be an
//! end (another system or version, a malformed record whose checksum is correct) are
//! returned at once.
//!
//! Feed only bytes that were written: zero-filled space (as in a `pg_receivewal` `.partial`
//! file) reads as the end of WAL.

use crate::page::{
    PageHeader, LONG_HEADER_LEN, SHORT_HEADER_LEN, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD,
};
use crate::{LongPageHeader, Lsn, PgMajor, TimelineId};

use super::bytes::{maxalign, u32_at};
use super::error::{EndOfWal, EndReason, WalError};
use super::format::WalFormat;
use super::record::{
    decode_body, record_crc, BlockSlot, BodyInfo, Record, RecordHeader, MAX_RECORD_LEN,
    RECORD_HEADER_LEN,
};
use super::types::RmgrId;

/// `XLOG_SWITCH` opcode of the XLOG resource manager.
const XLOG_SWITCH: u8 = 0x40;

/// Facts about the stream, from its first long page header.
#[derive(Debug, Clone, Copy)]
struct Stream {
    version: PgMajor,
    fmt: &'static WalFormat,
    seg_size: u64,
    blcksz: u64,
    sysid: u64,
    /// LSN of the first byte fed.
    start: u64,
}

/// A validated page header.
#[derive(Debug, Clone, Copy)]
struct PageInfo {
    info: u16,
    tli: u32,
    rem_len: u32,
    hdr_len: u64,
}

#[derive(Debug, Clone)]
enum State {
    Running,
    /// An invalid record or page at `at`; pages `scan..scan_end` decide between the end of
    /// WAL and corruption.
    Suspect {
        err: WalError,
        at: u64,
        scan: u64,
        scan_end: u64,
    },
    Ended(EndOfWal),
    Failed(WalError),
}

/// Bytes of the stream available to the state machine: `bytes[0]` is at LSN `base`.
#[derive(Debug, Clone, Copy)]
struct Window<'w> {
    bytes: &'w [u8],
    base: u64,
}

impl<'w> Window<'w> {
    /// The bytes from `lsn` on (empty if outside the window).
    fn from(&self, lsn: u64) -> &'w [u8] {
        lsn.checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| self.bytes.get(o..))
            .unwrap_or(&[])
    }

    /// LSN just after the last byte.
    fn end(&self) -> u64 {
        self.base.saturating_add(self.bytes.len() as u64)
    }
}

/// Where the bytes of a decoded record are.
#[derive(Debug, Clone, Copy)]
enum RawLoc {
    /// In the window, at the record's LSN.
    Input { len: usize },
    /// In `rec_buf` (reassembled from several pages).
    Assembled,
}

#[derive(Debug, Clone, Copy)]
struct Decoded {
    loc: RawLoc,
    version: PgMajor,
    fmt: &'static WalFormat,
    lsn: u64,
    end: u64,
    header: RecordHeader,
    tli: u32,
    body: BodyInfo,
}

enum Step {
    /// Moved forward (past a page header or skipped bytes); try again.
    Continue,
    /// More input is needed.
    NeedData,
    /// A record was decoded.
    Record(Decoded),
    /// Invalid WAL; decide with the pages from the given LSN on.
    Invalid(WalError, u64),
}

/// How far the continuation pages of a record were checked before input ran out.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// The record.
    rec: u64,
    /// Next continuation page to check.
    page: u64,
    /// Bytes of the record on the pages checked.
    got: u64,
    /// Timeline of the last page checked.
    tli: u32,
    /// The header, once complete and checked.
    header: Option<RecordHeader>,
}

/// The decoder's state machine, independent of where the input bytes are kept.
#[derive(Debug, Clone)]
struct Core {
    /// LSN of the first byte not yet consumed.
    pos: u64,
    finished: bool,
    stream: Option<Stream>,
    /// Where the next record (or page header) starts.
    next: u64,
    /// LSN of the last record returned (for the prev-link check).
    prev_rec: Option<u64>,
    /// Timeline of the last page accepted.
    last_tli: u32,
    /// Still skipping the tail of a record that began before the input.
    skip_cont: bool,
    /// Bytes needed from `next` before it is worth trying again.
    need: u64,
    /// Progress on a record whose continuation pages have not all arrived.
    resume: Option<Resume>,
    state: State,
    rec_buf: Vec<u8>,
    frags: Vec<(usize, usize)>,
    blocks: Vec<BlockSlot>,
    records: u64,
}

/// Decodes a stream of WAL bytes into records. Sans-IO, never panics, and allocates nothing
/// per record once its buffers have grown (records that span pages are reassembled into a
/// reused buffer; others are borrowed from the input).
#[derive(Debug, Clone)]
pub struct WalDecoder {
    core: Core,
    /// Input fed and not yet consumed (`buf[0]` is at LSN `buf_base`).
    buf: Vec<u8>,
    /// `None` until the stream start is known (then `buf[0]` is the stream's first byte).
    buf_base: Option<u64>,
}

impl Default for WalDecoder {
    fn default() -> Self {
        WalDecoder::new()
    }
}

impl WalDecoder {
    /// A decoder for a stream that starts at the beginning of a segment. Decoding begins
    /// with the first record that starts in that segment (the tail of a record begun in the
    /// previous segment is skipped, as `pg_waldump` does).
    pub fn new() -> WalDecoder {
        WalDecoder {
            core: Core {
                pos: 0,
                finished: false,
                stream: None,
                next: 0,
                prev_rec: None,
                last_tli: 0,
                skip_cont: true,
                need: 0,
                resume: None,
                state: State::Running,
                rec_buf: Vec::new(),
                frags: Vec::new(),
                blocks: Vec::new(),
                records: 0,
            },
            buf: Vec::new(),
            buf_base: None,
        }
    }

    /// Appends WAL bytes that follow those fed before (they are copied). Ignored after
    /// [`finish`](Self::finish) or once decoding has ended or failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.core.finished || self.core.stopped() {
            return;
        }
        if let Some(base) = self.buf_base {
            // Drop what has been consumed.
            let used = usize::try_from(self.core.pos.saturating_sub(base))
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            if used > 0 && (used == self.buf.len() || used >= self.buf.len() / 2) {
                self.buf.drain(..used);
                self.buf_base = Some(base + used as u64);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Declares that no more input will come: the remaining records are decoded and the end
    /// of WAL is then reported by [`end`](Self::end).
    pub fn finish(&mut self) {
        self.core.finished = true;
    }

    /// Where and why decoding ended, once [`next_record`](Self::next_record) has returned
    /// `Ok(None)` because of it (`None` while more input could still produce records).
    pub fn end(&self) -> Option<&EndOfWal> {
        match &self.core.state {
            State::Ended(e) => Some(e),
            _ => None,
        }
    }

    /// The PostgreSQL version of the stream, once its first page has been read.
    pub fn version(&self) -> Option<PgMajor> {
        self.core.stream.map(|s| s.version)
    }

    /// The segment size, once the first page has been read.
    pub fn seg_size(&self) -> Option<crate::WalSegSize> {
        self.core
            .stream
            .and_then(|s| crate::WalSegSize::new(s.seg_size).ok())
    }

    /// The system identifier of the cluster, once the first page has been read.
    pub fn system_id(&self) -> Option<u64> {
        self.core.stream.map(|s| s.sysid)
    }

    /// LSN where the next record is expected.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.core.next)
    }

    /// Number of records returned so far.
    pub fn records_decoded(&self) -> u64 {
        self.core.records
    }

    fn window(&self) -> Window<'_> {
        Window {
            bytes: &self.buf,
            base: self.buf_base.unwrap_or(0),
        }
    }

    /// The next record. `Ok(None)` means either that more input is needed, or that the WAL
    /// ended — then [`end`](Self::end) says where and why. After an error, the same error is
    /// returned again.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, WalError> {
        let w = Window {
            bytes: &self.buf,
            base: self.buf_base.unwrap_or(0),
        };
        let r = self.core.run(w);
        if self.buf_base.is_none() {
            self.buf_base = self.core.stream.map(|s| s.start);
        }
        match r? {
            Some(d) => Ok(Some(self.core.record(self.window(), d))),
            None => Ok(None),
        }
    }

    /// Decodes the records in `input` (WAL following what was fed before) and passes each
    /// to `on_record`, without copying `input`: records are borrowed from it, and only an
    /// incomplete record at its end is kept for the next call. Equivalent to
    /// [`feed`](Self::feed) followed by [`next_record`](Self::next_record) until `Ok(None)`.
    pub fn decode_slice<F>(&mut self, input: &[u8], mut on_record: F) -> Result<(), WalError>
    where
        F: FnMut(Record<'_>),
    {
        if self.core.finished || self.core.stopped() {
            return self.drain(&mut on_record);
        }
        let mut off = 0usize;
        // Bytes fed before this call that have not been consumed yet (all of them while the
        // stream start is unknown).
        let pending = match self.buf_base {
            Some(base) => {
                self.buf.len() as u64
                    - self
                        .core
                        .pos
                        .saturating_sub(base)
                        .min(self.buf.len() as u64)
            }
            None => self.buf.len() as u64,
        };
        let start_known = self.core.stream.is_some();
        if pending > 0 || !start_known {
            // Finish what is buffered by moving input through the buffer, a little at a
            // time, until decoding has moved past the buffered bytes into `input`.
            let entry_end = self.buf_base.map(|b| b + self.buf.len() as u64);
            let entry_len = self.buf.len() as u64;
            loop {
                if off >= input.len() {
                    return Ok(());
                }
                let want = usize::try_from(self.core.need)
                    .unwrap_or(usize::MAX)
                    .max(1 << 16);
                let n = want.min(input.len() - off);
                self.feed(input.get(off..off + n).unwrap_or(&[]));
                off += n;
                self.drain(&mut on_record)?;
                if self.core.stopped() || !matches!(self.core.state, State::Running) {
                    // Rare paths (end of WAL, suspected corruption): stay buffered.
                    self.feed(input.get(off..).unwrap_or(&[]));
                    return self.drain(&mut on_record);
                }
                let input_start = match (entry_end, self.core.stream) {
                    (Some(e), _) => e,
                    (None, Some(s)) => s.start + entry_len,
                    (None, None) => continue,
                };
                if self.core.pos >= input_start {
                    // Everything buffered before this call is consumed; the rest of the
                    // buffer is a copy of `input[..off]`.
                    self.buf.clear();
                    self.buf_base = Some(self.core.pos);
                    let consumed =
                        usize::try_from(self.core.pos - input_start).unwrap_or(usize::MAX);
                    if consumed > off {
                        return Ok(());
                    }
                    off = consumed;
                    break;
                }
            }
        }
        // Zero-copy: decode straight from `input[off..]`.
        let base = self.core.pos;
        let rest = input.get(off..).unwrap_or(&[]);
        let w = Window { bytes: rest, base };
        while let Some(d) = self.core.run(w)? {
            on_record(self.core.record(w, d));
        }
        // Keep what was not consumed.
        let used = usize::try_from(self.core.pos.saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(rest.len());
        self.buf.clear();
        self.buf.extend_from_slice(rest.get(used..).unwrap_or(&[]));
        self.buf_base = Some(base + used as u64);
        Ok(())
    }

    fn drain<F: FnMut(Record<'_>)>(&mut self, on_record: &mut F) -> Result<(), WalError> {
        while let Some(r) = self.next_record()? {
            on_record(r);
        }
        Ok(())
    }
}

impl Core {
    fn stopped(&self) -> bool {
        matches!(self.state, State::Ended(_) | State::Failed(_))
    }

    fn record<'a>(&'a self, w: Window<'a>, d: Decoded) -> Record<'a> {
        let raw: &[u8] = match d.loc {
            RawLoc::Input { len } => w.from(d.lsn).get(..len).unwrap_or(&[]),
            RawLoc::Assembled => &self.rec_buf,
        };
        Record::from_parts(
            Lsn(d.lsn),
            Lsn(d.end),
            d.header,
            d.version,
            TimelineId(d.tli),
            raw,
            &self.blocks,
            d.body,
            d.fmt,
        )
    }

    /// Runs the state machine on `w` until a record, the need for more input, or the end.
    fn run(&mut self, w: Window<'_>) -> Result<Option<Decoded>, WalError> {
        let mut w = w;
        loop {
            match &self.state {
                State::Running => {}
                State::Ended(_) => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
                State::Suspect { .. } => {
                    if self.scan(w) {
                        continue;
                    }
                    return Ok(None);
                }
            }
            if self.stream.is_none() {
                match self.start(w.bytes) {
                    Ok(Some(start)) => w.base = start,
                    Ok(None) => {
                        if self.finished {
                            self.state = State::Ended(EndOfWal {
                                lsn: Lsn::INVALID,
                                reason: EndReason::InputEnded,
                            });
                            continue;
                        }
                        return Ok(None);
                    }
                    Err(e) => {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
            match self.step(w) {
                Step::Continue => {}
                Step::NeedData => {
                    if !self.finished {
                        return Ok(None);
                    }
                    self.end_of_input(w);
                }
                Step::Invalid(err, scan_from) => {
                    let first_page = self.stream.is_some_and(|s| err.lsn().0 == s.start);
                    if err.is_hard() || (first_page && self.records == 0) {
                        self.state = State::Failed(err.clone());
                        return Err(err);
                    }
                    self.suspect(err, scan_from);
                }
                Step::Record(d) => {
                    self.records += 1;
                    return Ok(Some(d));
                }
            }
        }
    }

    /// Reads the first long page header, which fixes the stream's parameters; returns the
    /// LSN of the stream start (`None`: need more bytes).
    fn start(&mut self, bytes: &[u8]) -> Result<Option<u64>, WalError> {
        if bytes.len() < LONG_HEADER_LEN {
            if self.finished && !bytes.is_empty() {
                return Err(WalError::InputTooShort {
                    len: bytes.len(),
                    need: LONG_HEADER_LEN,
                });
            }
            return Ok(None);
        }
        let addr = Lsn(super::bytes::u64_at(bytes, 8).unwrap_or(0));
        let long =
            LongPageHeader::parse(bytes).map_err(|source| WalError::Page { lsn: addr, source })?;
        let seg_size = long.seg_size.bytes();
        if long.short.page_addr.0 % seg_size != 0 {
            return Err(WalError::NotSegmentStart { lsn: addr });
        }
        let start = long.short.page_addr.0;
        self.stream = Some(Stream {
            version: long.short.version,
            fmt: WalFormat::of(long.short.version),
            seg_size,
            blcksz: u64::from(long.block_size),
            sysid: long.system_id,
            start,
        });
        self.pos = start;
        self.next = start;
        Ok(Some(start))
    }

    /// Consumes input up to `lsn` (as far as the window goes).
    fn discard_to(&mut self, lsn: u64, w: Window<'_>) {
        if lsn > self.pos {
            self.pos = lsn.min(w.end()).max(self.pos);
        }
    }

    /// Validates the page header at `page` found at the start of `b`. `Ok(None)`: need more
    /// bytes.
    fn check_page(&self, s: &Stream, page: u64, b: &[u8]) -> Result<Option<PageInfo>, WalError> {
        if b.len() < SHORT_HEADER_LEN {
            return Ok(None);
        }
        let lsn = Lsn(page);
        let h = PageHeader::parse(b).map_err(|source| WalError::Page { lsn, source })?;
        if h.version != s.version {
            return Err(WalError::VersionMismatch {
                lsn,
                expected: s.version,
                found: h.version,
            });
        }
        if h.page_addr.0 != page {
            return Err(WalError::UnexpectedPageAddr {
                lsn,
                found: h.page_addr,
            });
        }
        let at_seg_start = page % s.seg_size == 0;
        if at_seg_start && !h.is_long() {
            return Err(WalError::Page {
                lsn,
                source: crate::page::PageHeaderError::NotLong,
            });
        }
        if h.is_long() {
            if b.len() < LONG_HEADER_LEN {
                return Ok(None);
            }
            let long = LongPageHeader::parse(b).map_err(|source| WalError::Page { lsn, source })?;
            let diff = |what, expected, found| WalError::DifferentSystem {
                lsn,
                what,
                expected,
                found,
            };
            if long.system_id != s.sysid {
                return Err(diff("system identifier", s.sysid, long.system_id));
            }
            if long.seg_size.bytes() != s.seg_size {
                return Err(diff("segment size", s.seg_size, long.seg_size.bytes()));
            }
            if u64::from(long.block_size) != s.blcksz {
                return Err(diff("page size", s.blcksz, u64::from(long.block_size)));
            }
        }
        Ok(Some(PageInfo {
            info: h.info,
            tli: h.timeline.0,
            rem_len: h.rem_len,
            hdr_len: h.len() as u64,
        }))
    }

    fn step(&mut self, w: Window<'_>) -> Step {
        let Some(s) = self.stream else {
            return Step::NeedData;
        };
        self.discard_to(self.next, w);
        if self.pos < self.next {
            return Step::NeedData;
        }
        if self.need > 0 && (w.from(self.next).len() as u64) < self.need {
            return Step::NeedData;
        }
        if self.next % s.blcksz == 0 {
            self.at_page_start(&s, w)
        } else {
            self.at_record(&s, w)
        }
    }

    fn at_page_start(&mut self, s: &Stream, w: Window<'_>) -> Step {
        let page = self.next;
        let ph = match self.check_page(s, page, w.from(page)) {
            Ok(Some(ph)) => ph,
            Ok(None) => return Step::NeedData,
            Err(e) => return Step::Invalid(e, page + s.blcksz),
        };
        if ph.tli < self.last_tli {
            return Step::Invalid(
                WalError::TimelineBackwards {
                    lsn: Lsn(page),
                    found: TimelineId(ph.tli),
                    previous: TimelineId(self.last_tli),
                },
                page + s.blcksz,
            );
        }
        let contrecord = ph.info & XLP_FIRST_IS_CONTRECORD != 0;
        if self.skip_cont && contrecord {
            // The tail of a record that started before our input: skip it.
            let rem = maxalign(u64::from(ph.rem_len));
            if rem >= s.blcksz - ph.hdr_len {
                self.next = page + s.blcksz;
            } else {
                self.next = page + ph.hdr_len + rem;
                self.skip_cont = false;
            }
        } else {
            if contrecord {
                return Step::Invalid(
                    WalError::UnexpectedContrecord { lsn: Lsn(page) },
                    page + s.blcksz,
                );
            }
            self.skip_cont = false;
            self.next = page + ph.hdr_len;
        }
        self.last_tli = ph.tli;
        self.need = 0;
        Step::Continue
    }

    /// Checks a record header against the stream (`ValidXLogRecordHeader`).
    fn check_header(&self, s: &Stream, lsn: u64, h: &RecordHeader) -> Result<(), WalError> {
        if (h.tot_len as usize) < RECORD_HEADER_LEN || h.tot_len > MAX_RECORD_LEN {
            return Err(WalError::InvalidLength {
                lsn: Lsn(lsn),
                len: h.tot_len,
            });
        }
        if !s.fmt.rmgr_is_valid(h.rmid.0) {
            return Err(WalError::InvalidRmgr {
                lsn: Lsn(lsn),
                rmid: h.rmid.0,
            });
        }
        match self.prev_rec {
            Some(p) if h.prev.0 != p => Err(WalError::BadPrevLink {
                lsn: Lsn(lsn),
                found: h.prev,
                expected: Lsn(p),
            }),
            None if h.prev.0 >= lsn => Err(WalError::BadPrevLink {
                lsn: Lsn(lsn),
                found: h.prev,
                expected: Lsn(lsn),
            }),
            _ => Ok(()),
        }
    }

    fn at_record(&mut self, s: &Stream, w: Window<'_>) -> Step {
        let rec = self.next;
        let off = rec % s.blcksz;
        let page_start = rec - off;
        let next_page = page_start + s.blcksz;
        let in_page = s.blcksz - off;
        let avail = w.from(rec);
        // xl_tot_len is always on the record's first page (records are 8-byte aligned).
        let Some(tot_len) = u32_at(avail, 0) else {
            return Step::NeedData;
        };
        let lsn = Lsn(rec);
        if tot_len == 0 {
            return Step::Invalid(WalError::ZeroLength { lsn }, next_page);
        }
        if (tot_len as usize) < RECORD_HEADER_LEN || tot_len > MAX_RECORD_LEN {
            return Step::Invalid(WalError::InvalidLength { lsn, len: tot_len }, next_page);
        }
        let tot = u64::from(tot_len);
        let mut header = None;
        if in_page >= RECORD_HEADER_LEN as u64 {
            let Some(h) = RecordHeader::parse(avail) else {
                return Step::NeedData;
            };
            if let Err(e) = self.check_header(s, rec, &h) {
                return Step::Invalid(e, next_page);
            }
            header = Some(h);
        }

        if tot <= in_page {
            // The whole record is on this page: decode it in place.
            let len = tot_len as usize;
            let Some(raw) = avail.get(..len) else {
                self.need = tot;
                return Step::NeedData;
            };
            let Some(h) = header else {
                return Step::NeedData;
            };
            let computed = record_crc(raw);
            if computed != h.crc {
                return Step::Invalid(
                    WalError::Crc {
                        lsn,
                        stored: h.crc,
                        computed,
                    },
                    next_page,
                );
            }
            let body = match decode_body(raw, lsn, s.fmt, s.blcksz as u32, &mut self.blocks) {
                Ok(b) => b,
                Err(e) => return Step::Invalid(e, next_page),
            };
            let end = self.finish_record(s, rec, rec + maxalign(tot), &h);
            return Step::Record(Decoded {
                loc: RawLoc::Input { len },
                version: s.version,
                fmt: s.fmt,
                lsn: rec,
                end,
                header: h,
                tli: self.last_tli,
                body,
            });
        }

        // The record continues on the following pages: check every continuation page, then
        // reassemble.
        // Continue where the last attempt on this record stopped for lack of input, so that
        // a long record arriving in small pieces is checked once, not once per piece.
        let (mut got, mut page, mut tli) = match self.resume.take() {
            Some(r) if r.rec == rec => {
                header = header.or(r.header);
                (r.got, r.page, r.tli)
            }
            _ => {
                self.frags.clear();
                (in_page, next_page, self.last_tli)
            }
        };
        let mut hdr_bytes = [0u8; RECORD_HEADER_LEN];
        let (last_page, last_hdr, last_frag) = loop {
            let Ok(page_off) = usize::try_from(page - rec) else {
                return Step::NeedData;
            };
            let save = Resume {
                rec,
                page,
                got,
                tli,
                header,
            };
            let ph = match self.check_page(s, page, avail.get(page_off..).unwrap_or(&[])) {
                Ok(Some(ph)) => ph,
                Ok(None) => {
                    self.need = (page_off + LONG_HEADER_LEN) as u64;
                    self.resume = Some(save);
                    return Step::NeedData;
                }
                Err(e) => return Step::Invalid(e, page + s.blcksz),
            };
            if ph.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                // PostgreSQL lost the rest of this record in a crash and wrote new WAL
                // here instead: the broken record is abandoned and reading resumes at this
                // page (`XLogDecodeNextRecord`'s "overwrite contrecord" restart).
                self.next = page;
                self.need = 0;
                return Step::Continue;
            }
            if ph.info & XLP_FIRST_IS_CONTRECORD == 0 {
                return Step::Invalid(
                    WalError::MissingContrecord {
                        lsn,
                        page: Lsn(page),
                    },
                    page,
                );
            }
            if ph.tli < tli {
                return Step::Invalid(
                    WalError::TimelineBackwards {
                        lsn: Lsn(page),
                        found: TimelineId(ph.tli),
                        previous: TimelineId(tli),
                    },
                    page + s.blcksz,
                );
            }
            let remaining = tot - got;
            if ph.rem_len == 0 || u64::from(ph.rem_len) != remaining {
                return Step::Invalid(
                    WalError::BadContrecordLength {
                        lsn,
                        page: Lsn(page),
                        found: ph.rem_len,
                        expected: remaining,
                    },
                    page,
                );
            }
            let frag = remaining.min(s.blcksz - ph.hdr_len);
            let frag_off = page_off + ph.hdr_len as usize;
            let frag_len = frag as usize;
            if avail.len() < frag_off + frag_len {
                self.need = (frag_off + frag_len) as u64;
                self.resume = Some(save);
                return Step::NeedData;
            }
            self.frags.push((frag_off, frag_len));
            if header.is_none() {
                // The header itself was split across the page boundary: put it together
                // and check it now (the first fragment is shorter than a header, and the
                // second is long enough to complete it).
                let first = avail.get(..in_page as usize).unwrap_or(&[]);
                let need2 = RECORD_HEADER_LEN.saturating_sub(first.len());
                let second = avail.get(frag_off..frag_off + need2).unwrap_or(&[]);
                if first.len() + second.len() != RECORD_HEADER_LEN {
                    return Step::Invalid(
                        WalError::InvalidLength { lsn, len: tot_len },
                        page + s.blcksz,
                    );
                }
                for (d, b) in hdr_bytes.iter_mut().zip(first.iter().chain(second)) {
                    *d = *b;
                }
                let Some(h) = RecordHeader::parse(&hdr_bytes) else {
                    return Step::NeedData;
                };
                if let Err(e) = self.check_header(s, rec, &h) {
                    return Step::Invalid(e, page + s.blcksz);
                }
                header = Some(h);
            }
            got += frag;
            tli = ph.tli;
            if got >= tot {
                break (page, ph.hdr_len, frag);
            }
            page += s.blcksz;
        };
        let Some(h) = header else {
            return Step::Invalid(
                WalError::InvalidLength { lsn, len: tot_len },
                last_page + s.blcksz,
            );
        };

        self.rec_buf.clear();
        self.rec_buf.reserve(tot as usize);
        self.rec_buf
            .extend_from_slice(avail.get(..in_page as usize).unwrap_or(&[]));
        for &(o, l) in &self.frags {
            self.rec_buf
                .extend_from_slice(avail.get(o..o + l).unwrap_or(&[]));
        }
        if self.rec_buf.len() as u64 != tot {
            return Step::Invalid(
                WalError::InvalidLength { lsn, len: tot_len },
                last_page + s.blcksz,
            );
        }
        let computed = record_crc(&self.rec_buf);
        if computed != h.crc {
            return Step::Invalid(
                WalError::Crc {
                    lsn,
                    stored: h.crc,
                    computed,
                },
                last_page + s.blcksz,
            );
        }
        let body = match decode_body(&self.rec_buf, lsn, s.fmt, s.blcksz as u32, &mut self.blocks) {
            Ok(b) => b,
            Err(e) => return Step::Invalid(e, last_page + s.blcksz),
        };
        let start_tli = self.last_tli;
        self.last_tli = tli;
        let end = self.finish_record(s, rec, last_page + last_hdr + maxalign(last_frag), &h);
        Step::Record(Decoded {
            loc: RawLoc::Assembled,
            version: s.version,
            fmt: s.fmt,
            lsn: rec,
            end,
            header: h,
            tli: start_tli,
            body,
        })
    }

    /// Moves past a decoded record; returns its end LSN (the next record's start).
    fn finish_record(&mut self, s: &Stream, rec: u64, end: u64, h: &RecordHeader) -> u64 {
        let mut end = end;
        if h.rmid == RmgrId::XLOG && h.rmgr_info() == XLOG_SWITCH {
            // The rest of the segment is unused.
            end = end.saturating_add(s.seg_size - 1);
            end -= end % s.seg_size;
        }
        self.next = end;
        self.prev_rec = Some(rec);
        self.need = 0;
        end
    }

    fn suspect(&mut self, err: WalError, scan_from: u64) {
        let Some(s) = self.stream else {
            self.state = State::Failed(err);
            return;
        };
        let at = self.next;
        let seg_end = (at / s.seg_size)
            .saturating_add(1)
            .saturating_mul(s.seg_size);
        // Round the scan start up to a page boundary.
        let scan = scan_from.div_ceil(s.blcksz).saturating_mul(s.blcksz);
        self.state = State::Suspect {
            err,
            at,
            scan,
            scan_end: seg_end.saturating_add(s.blcksz),
        };
        self.need = 0;
    }

    /// Examines pages after an invalid spot. Returns true once decided (state changed).
    fn scan(&mut self, w: Window<'_>) -> bool {
        let State::Suspect {
            err,
            at,
            scan,
            scan_end,
        } = self.state.clone()
        else {
            return true;
        };
        let Some(s) = self.stream else {
            self.state = State::Failed(err);
            return true;
        };
        let mut page = scan;
        let end_here = |st: &mut State| {
            *st = State::Ended(EndOfWal {
                lsn: Lsn(at),
                reason: EndReason::Invalid(err.clone()),
            });
        };
        loop {
            if page >= scan_end {
                end_here(&mut self.state);
                return true;
            }
            self.discard_to(page, w);
            let found = if self.pos == page {
                self.check_page(&s, page, w.from(page))
            } else {
                Ok(None)
            };
            match found {
                // A valid page after the bad spot: WAL went on, so this is corruption.
                Ok(Some(_)) => {
                    self.state = State::Failed(err);
                    return true;
                }
                Ok(None) if self.finished => {
                    end_here(&mut self.state);
                    return true;
                }
                Ok(None) => {
                    self.state = State::Suspect {
                        err,
                        at,
                        scan: page,
                        scan_end,
                    };
                    return false;
                }
                Err(_) => page += s.blcksz,
            }
        }
    }

    fn end_of_input(&mut self, w: Window<'_>) {
        let Some(s) = self.stream else {
            self.state = State::Ended(EndOfWal {
                lsn: Lsn::INVALID,
                reason: EndReason::InputEnded,
            });
            return;
        };
        let input_end = w.end().max(self.pos);
        let reason = if input_end % s.seg_size == 0 {
            EndReason::InputEnded
        } else {
            EndReason::Truncated {
                input_end: Lsn(input_end),
            }
        };
        self.state = State::Ended(EndOfWal {
            lsn: Lsn(self.next),
            reason,
        });
    }
}
