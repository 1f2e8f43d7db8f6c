//! A record continued on later pages, and segments: every continuation page is checked
//! (`XLP_FIRST_IS_CONTRECORD`, `xlp_rem_len`, timeline order), a header split across the
//! first page boundary is put together and checked, then the fragments are copied into one
//! reused buffer. A page flagged `XLP_FIRST_IS_OVERWRITE_CONTRECORD` abandons the record.

use crate::page::{LONG_HEADER_LEN, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD};
use crate::{Lsn, TimelineId};

use super::super::bytes::maxalign;
use super::super::error::WalError;
use super::super::record::{RecordHeader, RECORD_HEADER_LEN};
use super::pages::PageInfo;
use super::record::{check_body, Attempt, Head};
use super::{Core, Decoded, RawLoc, Step, Stream};

/// How far the continuation pages of a record were checked before input ran out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
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

/// Where the last fragment of a continued record is.
#[derive(Debug, Clone, Copy)]
struct Last {
    /// Its page.
    page: u64,
    /// Length of that page's header.
    hdr_len: u64,
    /// Bytes of the record on that page.
    frag: u64,
}

impl Core {
    /// A record that continues on the following pages: checks every continuation page,
    /// then reassembles the record into `rec_buf`.
    pub(super) fn continued(&mut self, s: &Stream, avail: &[u8], head: Head) -> Attempt<Decoded> {
        // Continue where the last attempt on this record stopped for lack of input, so that
        // a long record arriving in small pieces is checked once, not once per piece.
        let mut progress = match self.resume.take() {
            Some(r) if r.rec == head.rec => Resume {
                header: head.header.or(r.header),
                ..r
            },
            _ => {
                self.frags.clear();
                Resume {
                    rec: head.rec,
                    page: head.next_page,
                    got: head.in_page,
                    tli: self.last_tli,
                    header: head.header,
                }
            }
        };
        let last = loop {
            if let Some(last) = self.next_fragment(s, avail, &head, &mut progress)? {
                break last;
            }
        };
        self.assemble(s, avail, &head, progress, last)
    }

    /// Checks the continuation page `p.page` and notes the record's fragment on it; `Some`
    /// once the record is complete. When input runs out, `p` is kept to resume from.
    fn next_fragment(
        &mut self,
        s: &Stream,
        avail: &[u8],
        head: &Head,
        p: &mut Resume,
    ) -> Attempt<Option<Last>> {
        let page = p.page;
        let Ok(page_off) = usize::try_from(page - head.rec) else {
            return Err(Step::NeedData);
        };
        let ph = match self.check_page(s, page, avail.get(page_off..).unwrap_or(&[])) {
            Ok(Some(ph)) => ph,
            Ok(None) => {
                self.need = (page_off + LONG_HEADER_LEN) as u64;
                self.resume = Some(*p);
                return Err(Step::NeedData);
            }
            Err(e) => return Err(Step::Invalid(e, page + s.blcksz)),
        };
        if ph.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
            // PostgreSQL lost the rest of this record in a crash and wrote new WAL here
            // instead: the broken record is abandoned and reading resumes at this page
            // (`XLogDecodeNextRecord`'s "overwrite contrecord" restart).
            self.next = page;
            self.need = 0;
            return Err(Step::Continue);
        }
        let remaining = check_continuation(s, head, p, &ph)?;
        let frag = remaining.min(s.blcksz - ph.hdr_len);
        let frag_off = page_off + ph.hdr_len as usize;
        let frag_len = frag as usize;
        if avail.len() < frag_off + frag_len {
            self.need = (frag_off + frag_len) as u64;
            self.resume = Some(*p);
            return Err(Step::NeedData);
        }
        self.frags.push((frag_off, frag_len));
        if p.header.is_none() {
            p.header = Some(self.split_header(s, avail, head, frag_off, page)?);
        }
        p.got += frag;
        p.tli = ph.tli;
        if p.got >= head.tot() {
            return Ok(Some(Last {
                page,
                hdr_len: ph.hdr_len,
                frag,
            }));
        }
        p.page += s.blcksz;
        Ok(None)
    }

    /// Puts together and checks the header of a record split across its first page
    /// boundary: the first fragment is shorter than a header, and the second one (at
    /// `frag_off`, on `page`) is long enough to complete it.
    fn split_header(
        &self,
        s: &Stream,
        avail: &[u8],
        head: &Head,
        frag_off: usize,
        page: u64,
    ) -> Attempt<RecordHeader> {
        let invalid = |e| Step::Invalid(e, page + s.blcksz);
        let first = avail.get(..head.in_page as usize).unwrap_or(&[]);
        let need2 = RECORD_HEADER_LEN.saturating_sub(first.len());
        let second = avail.get(frag_off..frag_off + need2).unwrap_or(&[]);
        if first.len() + second.len() != RECORD_HEADER_LEN {
            return Err(invalid(WalError::InvalidLength {
                lsn: head.lsn(),
                len: head.tot_len,
            }));
        }
        let mut hdr_bytes = [0u8; RECORD_HEADER_LEN];
        for (d, b) in hdr_bytes.iter_mut().zip(first.iter().chain(second)) {
            *d = *b;
        }
        let h = RecordHeader::parse(&hdr_bytes).ok_or(Step::NeedData)?;
        self.check_header(s, head.rec, &h).map_err(invalid)?;
        Ok(h)
    }

    /// Copies the record's first part and its fragments into `rec_buf`, then verifies and
    /// decodes it.
    fn assemble(
        &mut self,
        s: &Stream,
        avail: &[u8],
        head: &Head,
        p: Resume,
        last: Last,
    ) -> Attempt<Decoded> {
        let scan_from = last.page + s.blcksz;
        let invalid = move |e| Step::Invalid(e, scan_from);
        let too_short = WalError::InvalidLength {
            lsn: head.lsn(),
            len: head.tot_len,
        };
        let Some(h) = p.header else {
            return Err(invalid(too_short));
        };
        self.rec_buf.clear();
        self.rec_buf.reserve(head.tot() as usize);
        self.rec_buf
            .extend_from_slice(avail.get(..head.in_page as usize).unwrap_or(&[]));
        for &(o, l) in &self.frags {
            self.rec_buf
                .extend_from_slice(avail.get(o..o + l).unwrap_or(&[]));
        }
        if self.rec_buf.len() as u64 != head.tot() {
            return Err(invalid(too_short));
        }
        let body =
            check_body(&self.rec_buf, &h, head.lsn(), s, &mut self.blocks).map_err(invalid)?;
        let start_tli = self.last_tli;
        self.last_tli = p.tli;
        let end = self.finish_record(
            s,
            head.rec,
            last.page + last.hdr_len + maxalign(last.frag),
            &h,
        );
        Ok(Decoded {
            loc: RawLoc::Assembled,
            version: s.version,
            fmt: s.fmt,
            lsn: head.rec,
            end,
            header: h,
            tli: start_tli,
            body,
        })
    }
}

/// Checks a continuation page's header against the record it continues; returns the bytes
/// of the record still to come.
fn check_continuation(s: &Stream, head: &Head, p: &Resume, ph: &PageInfo) -> Attempt<u64> {
    let page = p.page;
    if ph.info & XLP_FIRST_IS_CONTRECORD == 0 {
        return Err(Step::Invalid(
            WalError::MissingContrecord {
                lsn: head.lsn(),
                page: Lsn(page),
            },
            page,
        ));
    }
    if ph.tli < p.tli {
        return Err(Step::Invalid(
            WalError::TimelineBackwards {
                lsn: Lsn(page),
                found: TimelineId(ph.tli),
                previous: TimelineId(p.tli),
            },
            page + s.blcksz,
        ));
    }
    let remaining = head.tot() - p.got;
    if ph.rem_len == 0 || u64::from(ph.rem_len) != remaining {
        return Err(Step::Invalid(
            WalError::BadContrecordLength {
                lsn: head.lsn(),
                page: Lsn(page),
                found: ph.rem_len,
                expected: remaining,
            },
            page,
        ));
    }
    Ok(remaining)
}
