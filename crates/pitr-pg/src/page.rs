//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData` in `xlog_internal.h`).

use crate::{Lsn, PgMajor, TimelineId, WalSegSize};

/// Size of the short page header (MAXALIGN'd).
pub const SHORT_HEADER_LEN: usize = 24;
/// Size of the long page header that starts every segment (MAXALIGN'd).
pub const LONG_HEADER_LEN: usize = 40;

/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the continuation of a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: this page has the long header.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: a missing continuation was overwritten.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All flag bits PostgreSQL defines.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// A short page header, present on every WAL page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// The version the page magic belongs to.
    pub version: PgMajor,
    /// `xlp_info` flag bits.
    pub info: u16,
    /// Timeline of the first record on the page.
    pub timeline: TimelineId,
    /// LSN of the start of this page.
    pub page_addr: Lsn,
    /// Bytes of a continued record at the start of this page (`xlp_rem_len`).
    pub rem_len: u32,
}

/// The long header on the first page of each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// The short part.
    pub short: PageHeader,
    /// The cluster's system identifier (`pg_control`'s).
    pub system_id: u64,
    /// WAL segment size.
    pub seg_size: WalSegSize,
    /// WAL block (page) size.
    pub block_size: u32,
}

/// Why bytes are not a valid WAL page header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageHeaderError {
    /// Fewer bytes than a header needs.
    #[error("WAL page too short: {len} bytes, a header needs {need}")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The magic number is not that of PostgreSQL 14–18.
    #[error("unknown WAL page magic 0x{0:04X}: not WAL from PostgreSQL 14 to 18 (14=0xD10D, 15=0xD110, 16=0xD113, 17=0xD116, 18=0xD118)")]
    UnknownMagic(u16),
    /// Unknown bits in `xlp_info`.
    #[error("invalid WAL page flags 0x{0:04X}")]
    InvalidFlags(u16),
    /// The first page of a segment lacks the long-header flag.
    #[error("first WAL page of the segment has no long header")]
    NotLong,
    /// Timeline zero.
    #[error("WAL page header has timeline 0")]
    ZeroTimeline,
    /// Segment size field is not one PostgreSQL allows.
    #[error("WAL page header has an invalid segment size {0}")]
    BadSegSize(u32),
    /// Block size is not a power of two between 1 kB and 32 kB.
    #[error("WAL page header has an invalid block size {0}")]
    BadBlockSize(u32),
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0)
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl PageHeader {
    /// Parses the short header at the start of `page`.
    pub fn parse(page: &[u8]) -> Result<PageHeader, PageHeaderError> {
        if page.len() < SHORT_HEADER_LEN {
            return Err(PageHeaderError::TooShort {
                len: page.len(),
                need: SHORT_HEADER_LEN,
            });
        }
        let magic = u16_at(page, 0);
        let version = PgMajor::from_wal_magic(magic).ok_or(PageHeaderError::UnknownMagic(magic))?;
        let info = u16_at(page, 2);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(PageHeaderError::InvalidFlags(info));
        }
        let tli = u32_at(page, 4);
        if tli == 0 {
            return Err(PageHeaderError::ZeroTimeline);
        }
        Ok(PageHeader {
            version,
            info,
            timeline: TimelineId(tli),
            page_addr: Lsn(u64_at(page, 8)),
            rem_len: u32_at(page, 16),
        })
    }

    /// True when the page carries the long header.
    pub fn is_long(&self) -> bool {
        self.info & XLP_LONG_HEADER != 0
    }

    /// Length of this header in bytes.
    pub fn len(&self) -> usize {
        if self.is_long() {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// Always false: a header is never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl LongPageHeader {
    /// Parses the long header that starts a WAL segment.
    pub fn parse(segment: &[u8]) -> Result<LongPageHeader, PageHeaderError> {
        let short = PageHeader::parse(segment)?;
        if !short.is_long() {
            return Err(PageHeaderError::NotLong);
        }
        if segment.len() < LONG_HEADER_LEN {
            return Err(PageHeaderError::TooShort {
                len: segment.len(),
                need: LONG_HEADER_LEN,
            });
        }
        let seg_size_raw = u32_at(segment, 32);
        let seg_size = WalSegSize::new(u64::from(seg_size_raw))
            .map_err(|_| PageHeaderError::BadSegSize(seg_size_raw))?;
        let block_size = u32_at(segment, 36);
        if !block_size.is_power_of_two() || !(1024..=32768).contains(&block_size) {
            return Err(PageHeaderError::BadBlockSize(block_size));
        }
        Ok(LongPageHeader {
            short,
            system_id: u64_at(segment, 24),
            seg_size,
            block_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_header(magic: u16, tli: u32, addr: u64, sysid: u64, seg: u32, blk: u32) -> Vec<u8> {
        let mut b = vec![0u8; LONG_HEADER_LEN];
        b[0..2].copy_from_slice(&magic.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg.to_le_bytes());
        b[36..40].copy_from_slice(&blk.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_long_header() {
        let b = long_header(
            0xD116,
            2,
            0x0300_0000,
            7_412_345_678_901_234_567,
            16 << 20,
            8192,
        );
        let h = LongPageHeader::parse(&b).unwrap();
        assert_eq!(h.short.version.number(), 17);
        assert_eq!(h.short.timeline, TimelineId(2));
        assert_eq!(h.short.page_addr, Lsn(0x0300_0000));
        assert_eq!(h.system_id, 7_412_345_678_901_234_567);
        assert_eq!(h.seg_size.bytes(), 16 << 20);
        assert_eq!(h.block_size, 8192);
    }

    #[test]
    fn rejects_bad_headers_without_panicking() {
        assert!(matches!(
            LongPageHeader::parse(&[]),
            Err(PageHeaderError::TooShort { .. })
        ));
        let b = long_header(0xD106, 1, 0, 1, 16 << 20, 8192);
        assert_eq!(
            LongPageHeader::parse(&b),
            Err(PageHeaderError::UnknownMagic(0xD106))
        );
        let b = long_header(0xD110, 1, 0, 1, 3 << 20, 8192);
        assert_eq!(
            LongPageHeader::parse(&b),
            Err(PageHeaderError::BadSegSize(3 << 20))
        );
        let b = long_header(0xD110, 1, 0, 1, 16 << 20, 1000);
        assert_eq!(
            LongPageHeader::parse(&b),
            Err(PageHeaderError::BadBlockSize(1000))
        );
        let b = long_header(0xD110, 0, 0, 1, 16 << 20, 8192);
        assert_eq!(
            LongPageHeader::parse(&b),
            Err(PageHeaderError::ZeroTimeline)
        );
        let mut b = long_header(0xD110, 1, 0, 1, 16 << 20, 8192);
        b[2] = 0;
        assert_eq!(LongPageHeader::parse(&b), Err(PageHeaderError::NotLong));
        assert!(LongPageHeader::parse(&b[..30]).is_err());
    }
}
