//! The tuples heap records write: the new row of an `INSERT`, the rows of a `MULTI_INSERT`, the
//! new version of an `UPDATE` / `HOT_UPDATE`, and the overwritten row of an `INPLACE` update.
//!
//! Layouts (identical in 14–18): `xl_heap_insert`, `xl_heap_multi_insert`,
//! `xl_multi_insert_tuple`, `xl_heap_update`, `xl_heap_header` and `xl_heap_inplace` in
//! `src/include/access/heapam_xlog.h`; how they are filled in `heap_insert`,
//! `heap_multi_insert`, `log_heap_update` and `heap_inplace_update*` (`heapam.c`) and read back
//! in `heap_xlog_*` (`heapam_xlog.c`).
//!
//! A tuple is logged as `xl_heap_header` (infomask2, infomask, `t_hoff`) followed by the tuple
//! from `t_bits` on (null bitmap, padding, columns). It is *not* in the record when the page
//! has a full-page image and the record did not ask to keep its data (the image already holds
//! the row), and an update on the same page may log only the bytes that changed (a prefix
//! and/or suffix shared with the old version is left out).

use super::bytes::Cursor;
use super::error::WalError;
use super::record::Record;
use super::records::{HeapOp, XLOG_HEAP_INIT_PAGE};
use super::types::RmgrId;
use crate::catalog::TUPLE_HEADER_LEN;

/// `SizeOfHeapHeader`: infomask2, infomask, `t_hoff`.
const HEAP_HEADER_LEN: usize = 5;
/// `SizeOfMultiInsertTuple`: datalen, infomask2, infomask, `t_hoff`.
const MULTI_INSERT_TUPLE_LEN: usize = 7;
/// `XLH_UPDATE_PREFIX_FROM_OLD`.
pub const XLH_UPDATE_PREFIX_FROM_OLD: u8 = 1 << 5;
/// `XLH_UPDATE_SUFFIX_FROM_OLD`.
pub const XLH_UPDATE_SUFFIX_FROM_OLD: u8 = 1 << 6;

/// A tuple written by a heap record, on the page of block reference 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedTuple<'a> {
    /// Its line pointer number on the page (1-based).
    pub offnum: u16,
    /// Where its bytes are.
    pub source: TupleSource<'a>,
}

/// Where the bytes of a [`LoggedTuple`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleSource<'a> {
    /// Whole in the record: the column data (from `t_hoff`).
    Data {
        /// `t_infomask`.
        infomask: u16,
        /// Column data.
        data: &'a [u8],
    },
    /// An update on the same page that logged only what changed: the new column data is the
    /// first `prefix` bytes of the old version's column data, then `middle`, then the last
    /// `suffix` bytes of the old version ([`TupleSource::rebuild`]).
    Delta {
        /// `t_infomask`.
        infomask: u16,
        /// Line pointer of the old version on the same page.
        old_offnum: u16,
        /// Bytes shared with the start of the old version.
        prefix: u16,
        /// Bytes shared with the end of the old version.
        suffix: u16,
        /// The bytes in between.
        middle: &'a [u8],
    },
    /// Not in the record: block 0's full-page image holds it at `offnum`.
    Image,
}

impl TupleSource<'_> {
    /// The new column data of a [`TupleSource::Delta`] given the old version's column data
    /// (what `heap_xlog_update` does); `None` when the old version is too short.
    pub fn rebuild(prefix: u16, suffix: u16, middle: &[u8], old: &[u8]) -> Option<Vec<u8>> {
        let (prefix, suffix) = (usize::from(prefix), usize::from(suffix));
        let tail_start = old.len().checked_sub(suffix)?;
        let head = old.get(..prefix)?;
        let tail = old.get(tail_start..)?;
        let mut out = Vec::with_capacity(prefix + middle.len() + suffix);
        out.extend_from_slice(head);
        out.extend_from_slice(middle);
        out.extend_from_slice(tail);
        Some(out)
    }
}

/// The column data of a tuple logged from `t_bits` on, given its `t_hoff`.
fn columns(logged: &[u8], hoff: u8) -> Option<&[u8]> {
    let skip = usize::from(hoff).checked_sub(TUPLE_HEADER_LEN)?;
    logged.get(skip..)
}

impl<'a> Record<'a> {
    /// The tuples a heap `INSERT`, `MULTI_INSERT`, `UPDATE`, `HOT_UPDATE` or `INPLACE` record
    /// writes on the page of its block reference 0 (empty for other records). Fails when the
    /// record is too short or inconsistent for its type.
    pub fn heap_tuples(&self) -> Result<Vec<LoggedTuple<'a>>, WalError> {
        let rmgr = self.rmgr();
        if rmgr != RmgrId::HEAP && rmgr != RmgrId::HEAP2 {
            return Ok(Vec::new());
        }
        let info = self.rmgr_info();
        let op = HeapOp::from_info(rmgr == RmgrId::HEAP2, info, self.format());
        let Some(b0) = self.block(0) else {
            return Ok(Vec::new());
        };
        let main = self.main_data();
        let data = b0.data;
        // With a full-page image the data is left out unless the record kept it.
        let in_image = b0.image.is_some() && data.is_empty();
        let tuples = match op {
            HeapOp::Insert | HeapOp::Inplace => inserted(op, main, data, in_image),
            HeapOp::Update | HeapOp::HotUpdate => updated(main, data, in_image),
            HeapOp::MultiInsert => multi_inserted(info, main, data, in_image),
            _ => Ok(Vec::new()),
        };
        tuples.map_err(|what| WalError::Interpret {
            lsn: self.lsn,
            rmgr,
            info: self.header.info,
            what,
        })
    }
}

/// The row of an `INSERT` or `INPLACE` record (`Err`: what is wrong with the record).
fn inserted<'a>(
    op: HeapOp,
    main: &'a [u8],
    data: &'a [u8],
    in_image: bool,
) -> Result<Vec<LoggedTuple<'a>>, &'static str> {
    let offnum = Cursor::new(main).u16().ok_or("heap record too short")?;
    let source = if in_image {
        TupleSource::Image
    } else if op == HeapOp::Inplace {
        // heap_inplace_update logs the column data only (same length as before).
        TupleSource::Data { infomask: 0, data }
    } else {
        let mut c = Cursor::new(data);
        let (_infomask2, infomask, hoff) =
            heap_header(&mut c).ok_or("heap insert tuple header too short")?;
        TupleSource::Data {
            infomask,
            data: columns(c.rest(), hoff).ok_or("heap insert t_hoff out of range")?,
        }
    };
    Ok(vec![LoggedTuple { offnum, source }])
}

/// The new version of an `UPDATE` or `HOT_UPDATE` record, whole or as the bytes that changed
/// (`Err`: what is wrong with the record).
fn updated<'a>(
    main: &'a [u8],
    data: &'a [u8],
    in_image: bool,
) -> Result<Vec<LoggedTuple<'a>>, &'static str> {
    // old_xmax, old_offnum, old_infobits_set, flags, new_xmax, new_offnum.
    let mut m = Cursor::new(main);
    let (old_offnum, flags, offnum) = (|| {
        let _old_xmax = m.u32()?;
        let old_offnum = m.u16()?;
        let _old_infobits = m.u8()?;
        let flags = m.u8()?;
        let _new_xmax = m.u32()?;
        Some((old_offnum, flags, m.u16()?))
    })()
    .ok_or("heap update record too short")?;
    if in_image {
        return Ok(vec![LoggedTuple {
            offnum,
            source: TupleSource::Image,
        }]);
    }
    let mut c = Cursor::new(data);
    let prefix = if flags & XLH_UPDATE_PREFIX_FROM_OLD != 0 {
        c.u16().ok_or("heap update prefix missing")?
    } else {
        0
    };
    let suffix = if flags & XLH_UPDATE_SUFFIX_FROM_OLD != 0 {
        c.u16().ok_or("heap update suffix missing")?
    } else {
        0
    };
    let (_infomask2, infomask, hoff) =
        heap_header(&mut c).ok_or("heap update tuple header too short")?;
    let rest = columns(c.rest(), hoff).ok_or("heap update t_hoff out of range")?;
    let source = if prefix == 0 && suffix == 0 {
        TupleSource::Data {
            infomask,
            data: rest,
        }
    } else {
        TupleSource::Delta {
            infomask,
            old_offnum,
            prefix,
            suffix,
            middle: rest,
        }
    };
    Ok(vec![LoggedTuple { offnum, source }])
}

/// The rows of a `MULTI_INSERT` record (`Err`: what is wrong with the record).
fn multi_inserted<'a>(
    info: u8,
    main: &'a [u8],
    data: &'a [u8],
    in_image: bool,
) -> Result<Vec<LoggedTuple<'a>>, &'static str> {
    // flags, (pad), ntuples, then offsets[ntuples] unless the page is new.
    let mut m = Cursor::new(main);
    let ntuples = (|| {
        m.take(2)?;
        m.u16()
    })()
    .ok_or("multi-insert record too short")?;
    let init = info & XLOG_HEAP_INIT_PAGE != 0;
    let mut out = Vec::with_capacity(usize::from(ntuples));
    let mut c = Cursor::new(data);
    for i in 0..ntuples {
        let offnum = if init {
            i.checked_add(1).ok_or("multi-insert offsets")?
        } else {
            m.u16().ok_or("multi-insert offsets missing")?
        };
        if in_image {
            out.push(LoggedTuple {
                offnum,
                source: TupleSource::Image,
            });
            continue;
        }
        // Each xl_multi_insert_tuple is SHORTALIGNed from the start of the data.
        if c.pos() % 2 == 1 {
            c.take(1).ok_or("multi-insert tuple missing")?;
        }
        let (datalen, infomask, hoff) = c
            .take(MULTI_INSERT_TUPLE_LEN)
            .and_then(|h| {
                let mut h = Cursor::new(h);
                let datalen = usize::from(h.u16()?);
                let _infomask2 = h.u16()?;
                Some((datalen, h.u16()?, h.u8()?))
            })
            .ok_or("multi-insert tuple header too short")?;
        let logged = c.take(datalen).ok_or("multi-insert tuple data too short")?;
        out.push(LoggedTuple {
            offnum,
            source: TupleSource::Data {
                infomask,
                data: columns(logged, hoff).ok_or("multi-insert t_hoff out of range")?,
            },
        });
    }
    Ok(out)
}

/// `xl_heap_header`: (infomask2, infomask, t_hoff).
fn heap_header(c: &mut Cursor<'_>) -> Option<(u16, u16, u8)> {
    let h = c.take(HEAP_HEADER_LEN)?;
    let mut h = Cursor::new(h);
    Some((h.u16()?, h.u16()?, h.u8()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_rebuild_from_the_old_version_or_refuse() {
        let old = b"0123456789";
        assert_eq!(
            TupleSource::rebuild(3, 2, b"abc", old).unwrap(),
            b"012abc89".to_vec()
        );
        assert_eq!(
            TupleSource::rebuild(0, 0, b"x", old).unwrap(),
            b"x".to_vec()
        );
        assert_eq!(TupleSource::rebuild(11, 0, b"", old), None);
        assert_eq!(TupleSource::rebuild(0, 11, b"", old), None);
    }

    #[test]
    fn column_data_starts_at_t_hoff() {
        let logged = [1u8, 2, 3, 4, 5, 6];
        assert_eq!(columns(&logged, 24), Some(&logged[1..]));
        assert_eq!(columns(&logged, 23), Some(&logged[..]));
        assert_eq!(columns(&logged, 22), None);
        assert_eq!(columns(&logged, 40), None);
    }
}
