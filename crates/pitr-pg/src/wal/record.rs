//! One WAL record: the 24-byte header (`XLogRecord`) and the body's block references, image
//! headers and main data (`DecodeXLogRecord` in `xlogreader.c`).
//!
//! Decoding borrows: block data, page images and main data are slices of the record bytes.
//! Block references are kept as offsets in a caller-provided scratch vector, so decoding a
//! record allocates nothing once the scratch has grown.

use crate::{Lsn, PgMajor, TimelineId};

use super::bytes::Cursor;
use super::error::WalError;
use super::format::{BkpImageBits, WalFormat};
use super::types::{ForkNumber, RelFileLocator, RmgrId, Xid};

/// Size of `XLogRecord` (`SizeOfXLogRecord`).
pub const RECORD_HEADER_LEN: usize = 24;
/// Offset of `xl_crc` in the header: the CRC covers the header bytes before it.
const CRC_OFFSET: usize = 20;
/// `XLR_MAX_BLOCK_ID`.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
/// `XLR_BLOCK_ID_DATA_SHORT`: main data with a 1-byte length.
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// `XLR_BLOCK_ID_DATA_LONG`: main data with a 4-byte length.
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// `XLR_BLOCK_ID_ORIGIN`: replication origin follows.
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// `XLR_BLOCK_ID_TOPLEVEL_XID`: top-level xid of a subtransaction follows.
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// `XLR_INFO_MASK`: the `xl_info` bits owned by the WAL machinery (the rest is the rmgr's).
pub const XLR_INFO_MASK: u8 = 0x0F;
/// `BKPBLOCK_FORK_MASK`.
pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
/// `BKPBLOCK_HAS_IMAGE`.
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
/// `BKPBLOCK_HAS_DATA`.
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
/// `BKPBLOCK_WILL_INIT`.
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
/// `BKPBLOCK_SAME_REL`: the relation is that of the previous block reference.
pub const BKPBLOCK_SAME_REL: u8 = 0x80;
/// Largest record PostgreSQL writes (`XLogRecordMaxSize`, 1020 MB).
pub const MAX_RECORD_LEN: u32 = 1020 * 1024 * 1024;

/// The fixed 24-byte record header (`XLogRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Total length of the record, header included (`xl_tot_len`).
    pub tot_len: u32,
    /// Transaction id, 0 when none (`xl_xid`).
    pub xid: Xid,
    /// LSN of the previous record (`xl_prev`).
    pub prev: Lsn,
    /// Flag bits; the high 4 bits are the resource manager's opcode (`xl_info`).
    pub info: u8,
    /// Resource manager (`xl_rmid`).
    pub rmid: RmgrId,
    /// CRC-32C of the body followed by the first 20 header bytes (`xl_crc`).
    pub crc: u32,
}

impl RecordHeader {
    /// Parses the header at the start of `b` (`None` if shorter than 24 bytes).
    pub fn parse(b: &[u8]) -> Option<RecordHeader> {
        let mut c = Cursor::new(b);
        let tot_len = c.u32()?;
        let xid = Xid(c.u32()?);
        let prev = Lsn(c.u64()?);
        let info = c.u8()?;
        let rmid = RmgrId(c.u8()?);
        c.take(2)?;
        let crc = c.u32()?;
        Some(RecordHeader {
            tot_len,
            xid,
            prev,
            info,
            rmid,
            crc,
        })
    }

    /// The resource manager's opcode bits (`xl_info & ~XLR_INFO_MASK`).
    pub fn rmgr_info(&self) -> u8 {
        self.info & !XLR_INFO_MASK
    }
}

/// CRC-32C of a whole record as `ValidXLogRecord` computes it: the bytes after the header,
/// then the header up to `xl_crc`.
pub fn record_crc(raw: &[u8]) -> u32 {
    let body = raw.get(RECORD_HEADER_LEN..).unwrap_or(&[]);
    let head = raw.get(..CRC_OFFSET).unwrap_or(raw);
    crc32c::crc32c_append(crc32c::crc32c(body), head)
}

/// Compression of a full-page image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCompression {
    /// Stored as is (minus the hole).
    None,
    /// PGLZ (`wal_compression = pglz`, or `on` in PG14).
    Pglz,
    /// LZ4 (PG15+).
    Lz4,
    /// Zstandard (PG15+).
    Zstd,
}

impl std::fmt::Display for ImageCompression {
    /// The `wal_compression` value: `none`, `pglz`, `lz4`, `zstd`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageCompression::None => "none",
            ImageCompression::Pglz => "pglz",
            ImageCompression::Lz4 => "lz4",
            ImageCompression::Zstd => "zstd",
        })
    }
}

/// A full-page image attached to a block reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockImage<'a> {
    /// The stored bytes (`bimg_len` of them; compressed or with the hole removed).
    pub data: &'a [u8],
    /// Offset of the zero-filled hole in the page.
    pub hole_offset: u16,
    /// Length of the hole.
    pub hole_length: u16,
    /// Raw `bimg_info` flags (meaning depends on the version).
    pub info: u8,
    /// Compression method.
    pub compression: ImageCompression,
    /// Whether redo restores the image (`BKPIMAGE_APPLY`).
    pub apply: bool,
    /// Size of the data page it restores (`BLCKSZ`, from the WAL page header).
    pub page_size: u32,
}

/// Decompresses a full-page image compressed with LZ4 or zstd into exactly `len` bytes
/// (`None` when it cannot). pitr-pg decompresses pglz itself; LZ4 and zstd come from the
/// caller so that this crate needs no compression library.
pub type ImageDecompressor = fn(ImageCompression, &[u8], usize) -> Option<Vec<u8>>;

/// Why a full-page image cannot be turned back into its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Compressed with a method no decompressor was given for.
    #[error("full-page image compressed with {0} and no decompressor for it")]
    NoDecompressor(ImageCompression),
    /// The compressed bytes do not decompress to the page minus its hole.
    #[error("full-page image compressed with {0} does not decompress")]
    Corrupt(ImageCompression),
    /// The hole or the length does not fit the page size.
    #[error("full-page image hole or length does not fit a {0}-byte page")]
    BadLayout(u32),
}

impl BlockImage<'_> {
    /// The page as redo restores it (`RestoreBlockImage`): decompressed when needed, with the
    /// hole (the unused middle of the page, left out of the WAL) filled with zeros.
    pub fn page(&self, decompress: Option<ImageDecompressor>) -> Result<Vec<u8>, ImageError> {
        let page_size = self.page_size as usize;
        let hole_offset = usize::from(self.hole_offset);
        let hole_length = usize::from(self.hole_length);
        let bad = ImageError::BadLayout(self.page_size);
        let stored_len = page_size.checked_sub(hole_length).ok_or(bad)?;
        let owned;
        let stored: &[u8] = match self.compression {
            ImageCompression::None => self.data,
            ImageCompression::Pglz => {
                owned = super::pglz::decompress(self.data, stored_len)
                    .ok_or(ImageError::Corrupt(ImageCompression::Pglz))?;
                &owned
            }
            other => {
                let f = decompress.ok_or(ImageError::NoDecompressor(other))?;
                owned = f(other, self.data, stored_len).ok_or(ImageError::Corrupt(other))?;
                &owned
            }
        };
        if stored.len() != stored_len || hole_offset > stored_len {
            return Err(bad);
        }
        let (head, tail) = stored.split_at(hole_offset);
        let mut page = Vec::with_capacity(page_size);
        page.extend_from_slice(head);
        page.resize(hole_offset + hole_length, 0);
        page.extend_from_slice(tail);
        Ok(page)
    }
}

/// A block reference: a page of a relation the record modifies, with its data and image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef<'a> {
    /// Block reference id (0–32).
    pub id: u8,
    /// The relation file.
    pub rel: RelFileLocator,
    /// The fork.
    pub fork: ForkNumber,
    /// Block number in the fork.
    pub block: u32,
    /// Raw `fork_flags` (fork in the low bits, `BKPBLOCK_*` in the high bits).
    pub fork_flags: u8,
    /// Redo re-initializes the page (`BKPBLOCK_WILL_INIT`).
    pub will_init: bool,
    /// The full-page image, if any.
    pub image: Option<BlockImage<'a>>,
    /// The rmgr-specific block data (empty when none).
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ImageSlot {
    off: u32,
    len: u16,
    page_size: u32,
    hole_offset: u16,
    hole_length: u16,
    info: u8,
}

/// A decoded block reference, as offsets into the record (see [`BlockScratch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSlot {
    id: u8,
    fork_flags: u8,
    rel: RelFileLocator,
    block: u32,
    data_off: u32,
    data_len: u16,
    image: Option<ImageSlot>,
}

/// Reusable storage for the block references of decoded records, so that decoding does not
/// allocate per record. [`WalDecoder`](super::WalDecoder) owns one; pass your own to
/// [`Record::decode`].
#[derive(Debug, Default, Clone)]
pub struct BlockScratch(pub(crate) Vec<BlockSlot>);

/// What the body decoder found besides block references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BodyInfo {
    pub(crate) main_off: u32,
    pub(crate) main_len: u32,
    pub(crate) origin: Option<u16>,
    pub(crate) toplevel_xid: Option<Xid>,
}

/// Decodes the block headers and data layout of a record whose bytes (header included) are
/// `raw` (`DecodeXLogRecord`). `blcksz` is the data page size used for image cross-checks.
pub(crate) fn decode_body(
    raw: &[u8],
    lsn: Lsn,
    fmt: &WalFormat,
    blcksz: u32,
    blocks: &mut Vec<BlockSlot>,
) -> Result<BodyInfo, WalError> {
    let bad = |what: &'static str| WalError::Malformed { lsn, what };
    let short = || bad("record is shorter than its headers say");
    blocks.clear();
    let mut info = BodyInfo::default();
    let body = raw.get(RECORD_HEADER_LEN..).ok_or_else(short)?;
    let mut c = Cursor::new(body);
    let mut datatotal: u64 = 0;
    let mut last_rel: Option<RelFileLocator> = None;
    let mut max_id: Option<u8> = None;
    let bits = fmt.bkpimage;

    while (c.remaining() as u64) > datatotal {
        let id = c.u8().ok_or_else(short)?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                let len = c.u8().ok_or_else(short)?;
                info.main_len = u32::from(len);
                datatotal += u64::from(len);
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                let len = c.u32().ok_or_else(short)?;
                info.main_len = len;
                datatotal += u64::from(len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => info.origin = Some(c.u16().ok_or_else(short)?),
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                info.toplevel_xid = Some(Xid(c.u32().ok_or_else(short)?))
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if max_id.is_some_and(|m| id <= m) {
                    return Err(bad("out-of-order block id"));
                }
                max_id = Some(id);
                let fork_flags = c.u8().ok_or_else(short)?;
                let data_len = c.u16().ok_or_else(short)?;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data && data_len == 0 {
                    return Err(bad("BKPBLOCK_HAS_DATA set, but no data included"));
                }
                if !has_data && data_len != 0 {
                    return Err(bad("BKPBLOCK_HAS_DATA not set, but data length is not 0"));
                }
                datatotal += u64::from(data_len);
                let mut image = None;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let img = image_header(&mut c, bits, blcksz).map_err(bad)?;
                    datatotal += u64::from(img.len);
                    image = Some(img);
                }
                let rel = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let r = c
                        .take(RelFileLocator::LEN)
                        .and_then(RelFileLocator::parse)
                        .ok_or_else(short)?;
                    last_rel = Some(r);
                    r
                } else {
                    last_rel.ok_or_else(|| bad("BKPBLOCK_SAME_REL set but no previous relation"))?
                };
                let block = c.u32().ok_or_else(short)?;
                blocks.push(BlockSlot {
                    id,
                    fork_flags,
                    rel,
                    block,
                    data_off: 0,
                    data_len,
                    image,
                });
            }
            _ => return Err(bad("invalid block id")),
        }
    }
    if c.remaining() as u64 != datatotal {
        return Err(short());
    }
    // Payloads follow in block order: image, then data, for each block; then main data.
    // Offsets are relative to `raw`; datatotal == remaining, so they all fit.
    let mut ptr = (RECORD_HEADER_LEN + c.pos()) as u64;
    for b in blocks.iter_mut() {
        if let Some(img) = b.image.as_mut() {
            img.off = u32::try_from(ptr).map_err(|_| short())?;
            ptr += u64::from(img.len);
        }
        b.data_off = u32::try_from(ptr).map_err(|_| short())?;
        ptr += u64::from(b.data_len);
    }
    info.main_off = u32::try_from(ptr).map_err(|_| short())?;
    Ok(info)
}

/// Reads a block image header (`XLogRecordBlockImageHeader`, then the hole length of a
/// compressed image that has a hole) and checks it against the page size `blcksz`
/// (`Err`: what is wrong).
fn image_header(
    c: &mut Cursor<'_>,
    bits: BkpImageBits,
    blcksz: u32,
) -> Result<ImageSlot, &'static str> {
    let short = "record is shorter than its headers say";
    let len = c.u16().ok_or(short)?;
    let hole_offset = c.u16().ok_or(short)?;
    let bimg_info = c.u8().ok_or(short)?;
    let is_compressed = bimg_info & bits.compressed_mask() != 0;
    let has_hole = bimg_info & bits.has_hole != 0;
    let hole_length = if is_compressed {
        if has_hole {
            c.u16().ok_or(short)?
        } else {
            0
        }
    } else {
        // Cannot underflow meaningfully: checked against blcksz below.
        u16::try_from(blcksz.saturating_sub(u32::from(len))).unwrap_or(u16::MAX)
    };
    if has_hole && (hole_offset == 0 || hole_length == 0 || u32::from(len) == blcksz) {
        return Err("BKPIMAGE_HAS_HOLE set, but hole offset/length invalid");
    }
    if !has_hole && (hole_offset != 0 || hole_length != 0) {
        return Err("BKPIMAGE_HAS_HOLE not set, but hole offset/length set");
    }
    if is_compressed && u32::from(len) == blcksz {
        return Err("image compressed, but its length is a full page");
    }
    if !has_hole && !is_compressed && u32::from(len) != blcksz {
        return Err("image has neither hole nor compression, but is not a full page");
    }
    Ok(ImageSlot {
        off: 0,
        len,
        page_size: blcksz,
        hole_offset,
        hole_length,
        info: bimg_info,
    })
}

fn slice(raw: &[u8], off: u32, len: usize) -> &[u8] {
    let off = off as usize;
    off.checked_add(len)
        .and_then(|end| raw.get(off..end))
        .unwrap_or(&[])
}

/// A decoded WAL record. Everything borrows from the decoder (or the bytes given to
/// [`Record::decode`]); copy out what you need before decoding the next record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the next record starts (`EndRecPtr`): after the record, 8-byte aligned; for an
    /// `XLOG_SWITCH` record, the start of the next segment.
    pub end_lsn: Lsn,
    /// The fixed header.
    pub header: RecordHeader,
    /// PostgreSQL version that wrote it (from the page magic).
    pub version: PgMajor,
    /// Timeline of the page the record starts on.
    pub timeline: TimelineId,
    raw: &'a [u8],
    blocks: &'a [BlockSlot],
    body: BodyInfo,
    fmt: &'static WalFormat,
}

impl<'a> Record<'a> {
    /// Decodes a whole record (header included, exactly `xl_tot_len` bytes) outside a stream,
    /// checking its CRC. `blcksz` is the data page size (8192 unless PostgreSQL was built
    /// otherwise). The next-record LSN is set to the aligned end of the record.
    pub fn decode(
        raw: &'a [u8],
        lsn: Lsn,
        version: PgMajor,
        timeline: TimelineId,
        blcksz: u32,
        scratch: &'a mut BlockScratch,
    ) -> Result<Record<'a>, WalError> {
        let header = RecordHeader::parse(raw).ok_or(WalError::InvalidLength {
            lsn,
            len: raw.len() as u32,
        })?;
        if header.tot_len as usize != raw.len() || raw.len() < RECORD_HEADER_LEN {
            return Err(WalError::InvalidLength {
                lsn,
                len: header.tot_len,
            });
        }
        let computed = record_crc(raw);
        if computed != header.crc {
            return Err(WalError::Crc {
                lsn,
                stored: header.crc,
                computed,
            });
        }
        let fmt = WalFormat::of(version);
        let body = decode_body(raw, lsn, fmt, blcksz, &mut scratch.0)?;
        let end_lsn = Lsn(lsn
            .0
            .saturating_add(super::bytes::maxalign(u64::from(header.tot_len))));
        Ok(Record::from_parts(
            lsn, end_lsn, header, version, timeline, raw, &scratch.0, body, fmt,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        lsn: Lsn,
        end_lsn: Lsn,
        header: RecordHeader,
        version: PgMajor,
        timeline: TimelineId,
        raw: &'a [u8],
        blocks: &'a [BlockSlot],
        body: BodyInfo,
        fmt: &'static WalFormat,
    ) -> Record<'a> {
        Record {
            lsn,
            end_lsn,
            header,
            version,
            timeline,
            raw,
            blocks,
            body,
            fmt,
        }
    }

    /// The record's bytes, header included (`xl_tot_len` of them).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Resource manager.
    pub fn rmgr(&self) -> RmgrId {
        self.header.rmid
    }

    /// Transaction id from the header (0 when none; for subtransactions, the subxid).
    pub fn xid(&self) -> Xid {
        self.header.xid
    }

    /// The resource manager's opcode bits of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.header.rmgr_info()
    }

    /// Total length (`xl_tot_len`).
    pub fn total_len(&self) -> u32 {
        self.header.tot_len
    }

    /// The main data (empty when none).
    pub fn main_data(&self) -> &'a [u8] {
        slice(self.raw, self.body.main_off, self.body.main_len as usize)
    }

    /// Replication origin (`XLR_BLOCK_ID_ORIGIN`), if recorded.
    pub fn origin(&self) -> Option<u16> {
        self.body.origin
    }

    /// Top-level xid of a subtransaction (`XLR_BLOCK_ID_TOPLEVEL_XID`, wal_level=logical).
    pub fn toplevel_xid(&self) -> Option<Xid> {
        self.body.toplevel_xid
    }

    /// Number of block references.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The block references, in id order.
    pub fn blocks(&self) -> impl ExactSizeIterator<Item = BlockRef<'a>> + 'a {
        let raw = self.raw;
        let fmt = self.fmt;
        self.blocks.iter().map(move |s| block_ref(raw, fmt, s))
    }

    /// The block reference with id `id`.
    pub fn block(&self, id: u8) -> Option<BlockRef<'a>> {
        self.blocks
            .iter()
            .find(|s| s.id == id)
            .map(|s| block_ref(self.raw, self.fmt, s))
    }

    /// Bytes of full-page images (`pg_waldump` prints `xl_tot_len` minus this as "rec").
    pub fn fpi_len(&self) -> u32 {
        self.blocks
            .iter()
            .filter_map(|b| b.image.map(|i| u32::from(i.len)))
            .sum()
    }

    /// The version's format row.
    pub fn format(&self) -> &'static WalFormat {
        self.fmt
    }
}

fn block_ref<'a>(raw: &'a [u8], fmt: &WalFormat, s: &BlockSlot) -> BlockRef<'a> {
    let bits = fmt.bkpimage;
    BlockRef {
        id: s.id,
        rel: s.rel,
        fork: ForkNumber(s.fork_flags & BKPBLOCK_FORK_MASK),
        block: s.block,
        fork_flags: s.fork_flags,
        will_init: s.fork_flags & BKPBLOCK_WILL_INIT != 0,
        image: s.image.map(|i| BlockImage {
            data: slice(raw, i.off, usize::from(i.len)),
            hole_offset: i.hole_offset,
            hole_length: i.hole_length,
            info: i.info,
            compression: if i.info & bits.pglz != 0 {
                ImageCompression::Pglz
            } else if bits.lz4 != 0 && i.info & bits.lz4 != 0 {
                ImageCompression::Lz4
            } else if bits.zstd != 0 && i.info & bits.zstd != 0 {
                ImageCompression::Zstd
            } else {
                ImageCompression::None
            },
            apply: i.info & bits.apply != 0,
            page_size: i.page_size,
        }),
        data: slice(raw, s.data_off, usize::from(s.data_len)),
    }
}
