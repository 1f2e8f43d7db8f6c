//! A record that starts at the decoding position: its length and header checks
//! (`ValidXLogRecordHeader`), its checksum and body, decoded in place when the record fits
//! on its page; and moving past it (`XLOG_SWITCH` skips the rest of its segment).

use crate::Lsn;

use super::super::bytes::{maxalign, u32_at};
use super::super::error::WalError;
use super::super::record::{
    decode_body, record_crc, BlockSlot, BodyInfo, RecordHeader, MAX_RECORD_LEN, RECORD_HEADER_LEN,
};
use super::super::records::XLOG_SWITCH;
use super::super::types::RmgrId;
use super::{Core, Decoded, RawLoc, Step, Stream, Window};

/// A decoding attempt that may stop before a record: `Err` carries the [`Step`] to report
/// instead (more input needed, invalid WAL, or a restart elsewhere).
pub(super) type Attempt<T> = Result<T, Step>;

/// What the first page of a record says about it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    /// LSN of the record.
    pub(super) rec: u64,
    /// `xl_tot_len`, within the limits.
    pub(super) tot_len: u32,
    /// Bytes from the record's start to the end of its first page.
    pub(super) in_page: u64,
    /// Start of the page after the record's first page.
    pub(super) next_page: u64,
    /// The header, checked, when it is whole on the first page.
    pub(super) header: Option<RecordHeader>,
}

impl Head {
    /// LSN of the record.
    pub(super) fn lsn(&self) -> Lsn {
        Lsn(self.rec)
    }

    /// Total length of the record.
    pub(super) fn tot(&self) -> u64 {
        u64::from(self.tot_len)
    }
}

impl Core {
    /// The record at `self.next`: decoded in place when it fits on its page, else
    /// reassembled from the pages it continues on.
    pub(super) fn at_record(&mut self, s: &Stream, w: Window<'_>) -> Step {
        match self.decode_record(s, w.from(self.next)) {
            Ok(d) => Step::Record(d),
            Err(step) => step,
        }
    }

    /// [`at_record`](Self::at_record) on the bytes from the record's start on.
    fn decode_record(&mut self, s: &Stream, avail: &[u8]) -> Attempt<Decoded> {
        let head = self.record_head(s, avail)?;
        if head.tot() <= head.in_page {
            self.on_one_page(s, avail, head)
        } else {
            self.continued(s, avail, head)
        }
    }

    /// Reads and checks `xl_tot_len` (always on the record's first page: records are 8-byte
    /// aligned) and the header when it is whole on that page.
    fn record_head(&self, s: &Stream, avail: &[u8]) -> Attempt<Head> {
        let rec = self.next;
        let off = rec % s.blcksz;
        let next_page = rec - off + s.blcksz;
        let in_page = s.blcksz - off;
        let tot_len = u32_at(avail, 0).ok_or(Step::NeedData)?;
        let lsn = Lsn(rec);
        if tot_len == 0 {
            return Err(Step::Invalid(WalError::ZeroLength { lsn }, next_page));
        }
        if (tot_len as usize) < RECORD_HEADER_LEN || tot_len > MAX_RECORD_LEN {
            return Err(Step::Invalid(
                WalError::InvalidLength { lsn, len: tot_len },
                next_page,
            ));
        }
        let mut header = None;
        if in_page >= RECORD_HEADER_LEN as u64 {
            let h = RecordHeader::parse(avail).ok_or(Step::NeedData)?;
            self.check_header(s, rec, &h)
                .map_err(|e| Step::Invalid(e, next_page))?;
            header = Some(h);
        }
        Ok(Head {
            rec,
            tot_len,
            in_page,
            next_page,
            header,
        })
    }

    /// A record whole on its first page: checked and decoded in place.
    fn on_one_page(&mut self, s: &Stream, avail: &[u8], head: Head) -> Attempt<Decoded> {
        let len = head.tot_len as usize;
        let Some(raw) = avail.get(..len) else {
            self.need = head.tot();
            return Err(Step::NeedData);
        };
        let h = head.header.ok_or(Step::NeedData)?;
        let body = check_body(raw, &h, head.lsn(), s, &mut self.blocks)
            .map_err(|e| Step::Invalid(e, head.next_page))?;
        let end = self.finish_record(s, head.rec, head.rec + maxalign(head.tot()), &h);
        Ok(Decoded {
            loc: RawLoc::Input { len },
            version: s.version,
            fmt: s.fmt,
            lsn: head.rec,
            end,
            header: h,
            tli: self.last_tli,
            body,
        })
    }

    /// Checks a record header against the stream (`ValidXLogRecordHeader`).
    pub(super) fn check_header(
        &self,
        s: &Stream,
        lsn: u64,
        h: &RecordHeader,
    ) -> Result<(), WalError> {
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

    /// Moves past a decoded record; returns its end LSN (the next record's start).
    pub(super) fn finish_record(
        &mut self,
        s: &Stream,
        rec: u64,
        end: u64,
        h: &RecordHeader,
    ) -> u64 {
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
}

/// Verifies a whole record's checksum, then decodes its block references and main data.
/// Inlined: on the per-record path, a call of its own cost 3% more instructions.
#[inline]
pub(super) fn check_body(
    raw: &[u8],
    h: &RecordHeader,
    lsn: Lsn,
    s: &Stream,
    blocks: &mut Vec<BlockSlot>,
) -> Result<BodyInfo, WalError> {
    let computed = record_crc(raw);
    if computed != h.crc {
        return Err(WalError::Crc {
            lsn,
            stored: h.crc,
            computed,
        });
    }
    decode_body(raw, lsn, s.fmt, s.blcksz as u32, blocks)
}
