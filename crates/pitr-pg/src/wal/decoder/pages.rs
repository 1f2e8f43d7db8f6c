//! Page and segment handling: the first long page header fixes the stream (version, segment
//! size, page size, system); every later page header is checked against it, against its
//! expected address and against the timeline order.

use crate::page::{PageHeader, LONG_HEADER_LEN, SHORT_HEADER_LEN, XLP_FIRST_IS_CONTRECORD};
use crate::{LongPageHeader, Lsn, TimelineId};

use super::super::bytes::{maxalign, u64_at};
use super::super::error::WalError;
use super::super::format::WalFormat;
use super::{Core, Step, Stream, Window};

/// A validated page header.
#[derive(Debug, Clone, Copy)]
pub(super) struct PageInfo {
    /// `xlp_info` flag bits.
    pub(super) info: u16,
    /// Timeline of the page.
    pub(super) tli: u32,
    /// `xlp_rem_len`: bytes of a continued record at the start of the page.
    pub(super) rem_len: u32,
    /// Length of the header (short or long).
    pub(super) hdr_len: u64,
}

impl Core {
    /// Reads the first long page header, which fixes the stream's parameters; returns the
    /// LSN of the stream start (`None`: need more bytes).
    pub(super) fn start(&mut self, bytes: &[u8]) -> Result<Option<u64>, WalError> {
        if bytes.len() < LONG_HEADER_LEN {
            if self.finished && !bytes.is_empty() {
                return Err(WalError::InputTooShort {
                    len: bytes.len(),
                    need: LONG_HEADER_LEN,
                });
            }
            return Ok(None);
        }
        let addr = Lsn(u64_at(bytes, 8).unwrap_or(0));
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
    pub(super) fn discard_to(&mut self, lsn: u64, w: Window<'_>) {
        if lsn > self.pos {
            self.pos = lsn.min(w.end()).max(self.pos);
        }
    }

    /// Validates the page header at `page` found at the start of `b`. `Ok(None)`: need more
    /// bytes.
    pub(super) fn check_page(
        &self,
        s: &Stream,
        page: u64,
        b: &[u8],
    ) -> Result<Option<PageInfo>, WalError> {
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

    /// The page header at `self.next`: checked, then the decoder moves to the page's first
    /// record, skipping the tail of a record begun before the input.
    pub(super) fn at_page_start(&mut self, s: &Stream, w: Window<'_>) -> Step {
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
}
