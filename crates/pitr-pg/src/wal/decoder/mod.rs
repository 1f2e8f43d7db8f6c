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

//!
//! # Layout
//!
//! - this file: the public [`WalDecoder`] (input buffering, zero-copy slices) and the state
//!   shared by the stages;
//! - `machine`: the state machine that drives the stages;
//! - `pages`: page headers and the segment they belong to (the stream's first long header,
//!   every later page's checks);
//! - `record`: a record that starts on the current page: header checks, in-place decoding
//!   when it fits on its page, moving past it;
//! - `reassembly`: a record continued on later pages and segments;
//! - `end`: end of WAL versus corruption after an invalid record or page.

mod end;
mod machine;
mod pages;
mod reassembly;
mod record;

use crate::{Lsn, PgMajor};

use super::error::{EndOfWal, WalError};
use super::format::WalFormat;
use super::record::{BlockSlot, BodyInfo, Record, RecordHeader};
use reassembly::Resume;

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
            core: Core::new(),
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
