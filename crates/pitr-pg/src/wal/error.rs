//! Errors of the WAL decoder, and how the end of valid WAL is reported.

use std::fmt;

use crate::page::PageHeaderError;
use crate::{Lsn, PgMajor, TimelineId};

use super::types::RmgrId;

/// Why WAL could not be decoded. Every variant carries the LSN of the page or record at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The input is too short to hold the long page header that starts a segment.
    #[error("WAL input too short: {len} bytes, a segment starts with a {need}-byte header")]
    InputTooShort {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The input does not start at the beginning of a segment.
    #[error("WAL input starts at {lsn}, which is not the start of a segment (hint: feed whole segment files, in order)")]
    NotSegmentStart {
        /// Page address found in the first page header.
        lsn: Lsn,
    },
    /// A page header is malformed (magic, flags, sizes, timeline 0).
    #[error("invalid WAL page header at {lsn}: {source}")]
    Page {
        /// LSN of the page.
        lsn: Lsn,
        /// What is wrong with it.
        source: PageHeaderError,
    },
    /// A page claims to be at another address: a recycled segment, or a gap in the input.
    #[error("unexpected page address {found} in the WAL page at {lsn}")]
    UnexpectedPageAddr {
        /// Where the page is in the stream.
        lsn: Lsn,
        /// The address its header claims.
        found: Lsn,
    },
    /// A page's magic belongs to another PostgreSQL version than the stream's.
    #[error(
        "WAL page at {lsn} is from PostgreSQL {found}, the stream is from PostgreSQL {expected}"
    )]
    VersionMismatch {
        /// LSN of the page.
        lsn: Lsn,
        /// Version of the first page.
        expected: PgMajor,
        /// Version of this page.
        found: PgMajor,
    },
    /// A segment's long header names another cluster or another segment/page size.
    #[error("WAL segment at {lsn} is from a different database system: {what} is {found}, expected {expected}")]
    DifferentSystem {
        /// LSN of the segment start.
        lsn: Lsn,
        /// Which field differs (`system identifier`, `segment size`, `page size`).
        what: &'static str,
        /// Value of the first segment.
        expected: u64,
        /// Value of this segment.
        found: u64,
    },
    /// The timeline of a page is lower than that of an earlier page.
    #[error("out-of-sequence timeline {found} (after {previous}) in the WAL page at {lsn}")]
    TimelineBackwards {
        /// LSN of the page.
        lsn: Lsn,
        /// Timeline of this page.
        found: TimelineId,
        /// Timeline of the previous page.
        previous: TimelineId,
    },
    /// A page that should start with a new record says it continues one.
    #[error("WAL page at {lsn} is flagged as continuing a record, but a new record starts there")]
    UnexpectedContrecord {
        /// LSN of the page.
        lsn: Lsn,
    },
    /// Zeros where a record should start: typically the unwritten tail of a segment.
    #[error("no WAL record at {lsn}: zero length (unwritten WAL)")]
    ZeroLength {
        /// Where the record should start.
        lsn: Lsn,
    },
    /// `xl_tot_len` is impossible.
    #[error("invalid WAL record length {len} at {lsn}")]
    InvalidLength {
        /// Record LSN.
        lsn: Lsn,
        /// The length found.
        len: u32,
    },
    /// The resource manager id is not one this version has.
    #[error("invalid resource manager id {rmid} in WAL record at {lsn}")]
    InvalidRmgr {
        /// Record LSN.
        lsn: Lsn,
        /// The id found.
        rmid: u8,
    },
    /// `xl_prev` does not point at the previous record: a stale record from a recycled
    /// segment, or a torn page.
    #[error("WAL record at {lsn} has prev-link {found}, expected {expected}")]
    BadPrevLink {
        /// Record LSN.
        lsn: Lsn,
        /// `xl_prev` found.
        found: Lsn,
        /// The previous record's LSN (or, for the first record, any lower LSN).
        expected: Lsn,
    },
    /// A record continues onto a page that lacks `XLP_FIRST_IS_CONTRECORD`.
    #[error("WAL record at {lsn} continues onto the page at {page}, which is not flagged as a continuation")]
    MissingContrecord {
        /// Record LSN.
        lsn: Lsn,
        /// The page that should continue it.
        page: Lsn,
    },
    /// `xlp_rem_len` disagrees with what is left of the record.
    #[error(
        "WAL record at {lsn}: the page at {page} says {found} bytes remain, expected {expected}"
    )]
    BadContrecordLength {
        /// Record LSN.
        lsn: Lsn,
        /// The continuation page.
        page: Lsn,
        /// `xlp_rem_len` found.
        found: u32,
        /// Bytes of the record not yet read.
        expected: u64,
    },
    /// The record's CRC-32C does not match its contents.
    #[error("incorrect checksum in WAL record at {lsn}: stored 0x{stored:08X}, computed 0x{computed:08X}")]
    Crc {
        /// Record LSN.
        lsn: Lsn,
        /// `xl_crc`.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The record passed its checksum but its block references or data headers are malformed.
    #[error("malformed WAL record at {lsn}: {what}")]
    Malformed {
        /// Record LSN.
        lsn: Lsn,
        /// What is wrong.
        what: &'static str,
    },
    /// A record's main data does not have the layout its resource manager and version imply.
    #[error("cannot interpret {rmgr} record at {lsn} (info 0x{info:02X}): {what}")]
    Interpret {
        /// Record LSN.
        lsn: Lsn,
        /// Resource manager.
        rmgr: RmgrId,
        /// `xl_info`.
        info: u8,
        /// What is missing or wrong.
        what: &'static str,
    },
}

impl WalError {
    /// The LSN the error is about (0/0 when the input was too short to know one).
    pub fn lsn(&self) -> Lsn {
        match *self {
            WalError::InputTooShort { .. } => Lsn::INVALID,
            WalError::NotSegmentStart { lsn }
            | WalError::Page { lsn, .. }
            | WalError::UnexpectedPageAddr { lsn, .. }
            | WalError::VersionMismatch { lsn, .. }
            | WalError::DifferentSystem { lsn, .. }
            | WalError::TimelineBackwards { lsn, .. }
            | WalError::UnexpectedContrecord { lsn }
            | WalError::ZeroLength { lsn }
            | WalError::InvalidLength { lsn, .. }
            | WalError::InvalidRmgr { lsn, .. }
            | WalError::BadPrevLink { lsn, .. }
            | WalError::MissingContrecord { lsn, .. }
            | WalError::BadContrecordLength { lsn, .. }
            | WalError::Crc { lsn, .. }
            | WalError::Malformed { lsn, .. }
            | WalError::Interpret { lsn, .. } => lsn,
        }
    }

    /// Errors that can never mean "WAL simply ends here": the input is from another system
    /// or version, or a checksummed record is malformed.
    pub(crate) fn is_hard(&self) -> bool {
        matches!(
            self,
            WalError::InputTooShort { .. }
                | WalError::NotSegmentStart { .. }
                | WalError::VersionMismatch { .. }
                | WalError::DifferentSystem { .. }
                | WalError::Malformed { .. }
                | WalError::Interpret { .. }
        )
    }
}

/// Where and why decoding stopped without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfWal {
    /// Where valid WAL ends: the LSN of the first record that was not decoded.
    pub lsn: Lsn,
    /// Why.
    pub reason: EndReason,
}

/// Why the WAL ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// [`WalDecoder::finish`](super::WalDecoder::finish) was called with the input ending at a
    /// segment boundary: everything given was decoded (a record continuing into a segment that
    /// was not given is left undecoded).
    InputEnded,
    /// The input ended in the middle of a segment (a truncated file, or part of a segment).
    Truncated {
        /// LSN just after the last byte given.
        input_end: Lsn,
    },
    /// The WAL at [`EndOfWal::lsn`] is invalid (zeros, a recycled page, a bad checksum or
    /// prev-link, …) and no valid page follows it in that segment or at the start of the
    /// next one: the normal end of a segment that was being written, or a torn write.
    Invalid(WalError),
}

impl fmt::Display for EndOfWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            EndReason::InputEnded => write!(f, "end of input at {}", self.lsn),
            EndReason::Truncated { input_end } => write!(
                f,
                "input ends mid-segment at {input_end}; last complete record ends at {}",
                self.lsn
            ),
            EndReason::Invalid(e) => write!(f, "end of valid WAL at {}: {e}", self.lsn),
        }
    }
}
