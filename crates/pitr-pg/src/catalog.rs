//! System catalog rows read straight from heap files, without a server: `pg_class`,
//! `pg_namespace` and `pg_database` rows from a base backup's copy of their heap files, and the
//! relation mapper file (`pg_filenode.map`) that gives the file numbers of mapped catalogs.
//!
//! Why: `pitr wal` names the relations a transaction touched. A dropped table no longer exists
//! on the live server, but the newest base backup taken before the drop still has its
//! `pg_class` row. Only the fixed-width leading columns are read (they are `NOT NULL`, so their
//! offsets do not depend on the null bitmap); the offsets per version are in
//! [`CLASS_LAYOUTS`], checked against `pg_attribute` on real servers by the fixture tests.
//!
//! Rows are heap tuples as found on the page: without the commit log there is no exact
//! visibility, so each row carries [`HeapTuple::is_live`], a hint-bit based guess (no deleter,
//! or a deleter that aborted or only locked); rows whose inserter is known to have aborted are
//! left out.

use crate::wal::Oid;
use crate::PgMajor;

/// Size of a data page header (`PageHeaderData`).
pub const PAGE_HEADER_LEN: usize = 24;
/// Size of a heap tuple header up to `t_bits` (`offsetof(HeapTupleHeaderData, t_bits)`).
pub const TUPLE_HEADER_LEN: usize = 23;
/// `NAMEDATALEN`: bytes of a `name` column.
pub const NAMEDATALEN: usize = 64;
/// Page layout version of PostgreSQL 8.3 and later.
pub const PG_PAGE_LAYOUT_VERSION: u16 = 4;

const LP_NORMAL: u16 = 1;
const HEAP_XMIN_COMMITTED: u16 = 0x0100;
const HEAP_XMIN_INVALID: u16 = 0x0200;
const HEAP_XMAX_LOCK_ONLY: u16 = 0x0080;
const HEAP_XMAX_INVALID: u16 = 0x0800;

/// A malformed catalog file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A page header that no heap page can have.
    #[error("block {block}: invalid page header ({what})")]
    BadPage {
        /// Block number in the file.
        block: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// The file is not a whole number of pages.
    #[error("file of {len} bytes is not a whole number of {page_size}-byte pages")]
    PartialPage {
        /// File length.
        len: usize,
        /// Page size found in the first page.
        page_size: usize,
    },
    /// A relation mapper file that is not one.
    #[error("invalid relation mapper file: {0}")]
    BadRelMap(&'static str),
    /// No catalog layout for this version.
    #[error("no pg_class layout for PostgreSQL {0}")]
    UnknownVersion(u32),
}

/// One heap tuple as found on a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapTuple<'a> {
    /// Block number.
    pub block: u32,
    /// Line pointer number (1-based, like `ctid`).
    pub offset: u16,
    /// Inserting transaction.
    pub xmin: u32,
    /// Deleting or locking transaction (0 when none).
    pub xmax: u32,
    /// `t_infomask` hint and flag bits.
    pub infomask: u16,
    /// Column data (from `t_hoff`).
    pub data: &'a [u8],
}

impl HeapTuple<'_> {
    /// True unless hint bits say the row was deleted by a transaction that may have committed.
    pub fn is_live(&self) -> bool {
        self.xmax == 0
            || self.infomask & HEAP_XMAX_INVALID != 0
            || self.infomask & HEAP_XMAX_LOCK_ONLY != 0
    }

    /// True when hint bits say the inserting transaction aborted.
    pub fn insert_aborted(&self) -> bool {
        self.infomask & HEAP_XMIN_INVALID != 0 && self.infomask & HEAP_XMIN_COMMITTED == 0
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The normal tuples of a heap file (all its pages, in order; new all-zero pages are skipped).
/// The page size comes from the first page header.
pub fn heap_tuples(file: &[u8]) -> Result<Vec<HeapTuple<'_>>, CatalogError> {
    let mut out = Vec::new();
    // The first page that is not new (all zero) gives the page size.
    let Some(first) = file
        .chunks(1024)
        .find(|c| c.iter().any(|b| *b != 0))
        .and_then(|c| c.get(..PAGE_HEADER_LEN))
    else {
        return Ok(out);
    };
    let page_size = page_size_of(first)
        .ok_or(CatalogError::BadPage {
            block: 0,
            what: "page size or layout version",
        })?
        .max(PAGE_HEADER_LEN);
    if file.len() % page_size != 0 {
        return Err(CatalogError::PartialPage {
            len: file.len(),
            page_size,
        });
    }
    for (i, page) in file.chunks_exact(page_size).enumerate() {
        let block = u32::try_from(i).map_err(|_| CatalogError::BadPage {
            block: u32::MAX,
            what: "block number",
        })?;
        page_tuples(page, block, &mut out)?;
    }
    Ok(out)
}

/// Page size from `pd_pagesize_version`, when the layout version is the one we know.
fn page_size_of(header: &[u8]) -> Option<usize> {
    let v = u16_at(header, 18)?;
    let size = usize::from(v & 0xFF00);
    (v & 0x00FF == PG_PAGE_LAYOUT_VERSION && size.is_power_of_two() && size >= 1024).then_some(size)
}

fn page_tuples<'a>(
    page: &'a [u8],
    block: u32,
    out: &mut Vec<HeapTuple<'a>>,
) -> Result<(), CatalogError> {
    if page.iter().all(|b| *b == 0) {
        return Ok(());
    }
    let bad = |what| CatalogError::BadPage { block, what };
    if page_size_of(page) != Some(page.len()) {
        return Err(bad("page size or layout version"));
    }
    let lower = usize::from(u16_at(page, 12).ok_or(bad("header"))?);
    let upper = usize::from(u16_at(page, 14).ok_or(bad("header"))?);
    let special = usize::from(u16_at(page, 16).ok_or(bad("header"))?);
    if lower < PAGE_HEADER_LEN || lower > upper || upper > special || special > page.len() {
        return Err(bad("pd_lower, pd_upper or pd_special out of order"));
    }
    let items = (lower - PAGE_HEADER_LEN) / 4;
    for n in 0..items {
        let Some(lp) = u32_at(page, PAGE_HEADER_LEN + n * 4) else {
            break;
        };
        let off = (lp & 0x7FFF) as usize;
        let flags = ((lp >> 15) & 0x3) as u16;
        let len = (lp >> 17) as usize;
        if flags != LP_NORMAL {
            continue;
        }
        let Some(tuple) = off.checked_add(len).and_then(|end| page.get(off..end)) else {
            return Err(bad("line pointer outside the page"));
        };
        if off < upper || len < TUPLE_HEADER_LEN {
            return Err(bad("line pointer outside the tuple area"));
        }
        let hoff = usize::from(*tuple.get(22).ok_or(bad("tuple header"))?);
        let (Some(xmin), Some(xmax), Some(infomask), Some(data)) = (
            u32_at(tuple, 0),
            u32_at(tuple, 4),
            u16_at(tuple, 20),
            tuple.get(hoff..),
        ) else {
            return Err(bad("tuple header"));
        };
        if hoff < TUPLE_HEADER_LEN {
            return Err(bad("tuple header"));
        }
        let t = HeapTuple {
            block,
            offset: u16::try_from(n + 1).unwrap_or(u16::MAX),
            xmin,
            xmax,
            infomask,
            data,
        };
        if !t.insert_aborted() {
            out.push(t);
        }
    }
    Ok(())
}

/// Where the columns pitr reads sit in a `pg_class` row of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLayout {
    /// First major version with this layout.
    pub since: u32,
    /// Offset of `relkind` (`relallfrozen`, added in 18, moves it by 4).
    pub relkind: usize,
    /// Offset of `relpersistence`.
    pub relpersistence: usize,
}

/// Offsets of the leading columns (same in 14–18): oid 0, relname 4, relnamespace 68,
/// reltype 72, reloftype 76, relowner 80, relam 84, relfilenode 88, reltablespace 92.
const CLASS_OID: usize = 0;
const CLASS_RELNAME: usize = 4;
const CLASS_RELNAMESPACE: usize = 68;
const CLASS_RELFILENODE: usize = 88;
const CLASS_RELTABLESPACE: usize = 92;

/// `pg_class` layouts by version (from `src/include/catalog/pg_class.h`, checked against
/// `pg_attribute` of real servers in the fixture tests).
pub const CLASS_LAYOUTS: &[ClassLayout] = &[
    // ... relallvisible 104, reltoastrelid 108, relhasindex 112, relisshared 113,
    // relpersistence 114, relkind 115.
    ClassLayout {
        since: 14,
        relkind: 115,
        relpersistence: 114,
    },
    // relallfrozen 108 (new), reltoastrelid 112, relhasindex 116, relisshared 117,
    // relpersistence 118, relkind 119.
    ClassLayout {
        since: 18,
        relkind: 119,
        relpersistence: 118,
    },
];

impl ClassLayout {
    /// The layout of a version; versions newer than the last known one are refused.
    pub fn of(major: PgMajor) -> Result<ClassLayout, CatalogError> {
        let n = major.number();
        if n > 18 {
            return Err(CatalogError::UnknownVersion(n));
        }
        CLASS_LAYOUTS
            .iter()
            .rev()
            .find(|l| l.since <= n)
            .copied()
            .ok_or(CatalogError::UnknownVersion(n))
    }
}

/// A `pg_class` row (the columns pitr needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRow {
    /// Relation OID.
    pub oid: Oid,
    /// Name.
    pub name: String,
    /// Schema (`pg_namespace` OID).
    pub namespace: Oid,
    /// File number; 0 for mapped catalogs (see [`RelMap`]) and relations without storage.
    pub filenode: u32,
    /// Tablespace; 0 means the database's default.
    pub tablespace: Oid,
    /// `relkind`: `r` table, `i` index, `t` TOAST, `S` sequence, `m` matview, `v` view, …
    pub kind: char,
    /// `relpersistence`: `p` permanent, `u` unlogged, `t` temporary.
    pub persistence: char,
    /// Hint-bit guess that this row version is current ([`HeapTuple::is_live`]).
    pub live: bool,
}

fn name_at(data: &[u8], off: usize) -> Option<String> {
    let raw = data.get(off..off.checked_add(NAMEDATALEN)?)?;
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(raw.get(..end)?).into_owned())
}

/// The rows of a `pg_class` heap file (`base/<db>/1259` when not remapped), dead versions
/// included (see [`ClassRow::live`]). Rows too short for the layout are skipped.
pub fn pg_class_rows(file: &[u8], major: PgMajor) -> Result<Vec<ClassRow>, CatalogError> {
    let layout = ClassLayout::of(major)?;
    Ok(heap_tuples(file)?
        .iter()
        .filter_map(|t| class_row(t, &layout))
        .collect())
}

/// The `pg_class` columns of one tuple (from a heap page, or logged in the WAL); `None` when
/// its data is too short for `layout`.
pub fn class_row(t: &HeapTuple<'_>, layout: &ClassLayout) -> Option<ClassRow> {
    let d = t.data;
    Some(ClassRow {
        oid: Oid(u32_at(d, CLASS_OID)?),
        name: name_at(d, CLASS_RELNAME)?,
        namespace: Oid(u32_at(d, CLASS_RELNAMESPACE)?),
        filenode: u32_at(d, CLASS_RELFILENODE)?,
        tablespace: Oid(u32_at(d, CLASS_RELTABLESPACE)?),
        kind: char::from(*d.get(layout.relkind)?),
        persistence: char::from(*d.get(layout.relpersistence)?),
        live: t.is_live(),
    })
}

/// An (oid, name) row of a catalog whose first two columns are `oid` and a `name`:
/// `pg_namespace` (nspname) and `pg_database` (datname) in 14–18.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRow {
    /// OID.
    pub oid: Oid,
    /// Name.
    pub name: String,
    /// Hint-bit guess that this row version is current.
    pub live: bool,
}

/// The rows of `pg_namespace` (`base/<db>/2615`) or `pg_database` (`global/1262`).
pub fn named_rows(file: &[u8]) -> Result<Vec<NamedRow>, CatalogError> {
    Ok(heap_tuples(file)?.iter().filter_map(named_row).collect())
}

/// The (oid, name) columns of one `pg_namespace` or `pg_database` tuple; `None` when too short.
pub fn named_row(t: &HeapTuple<'_>) -> Option<NamedRow> {
    Some(NamedRow {
        oid: Oid(u32_at(t.data, 0)?),
        name: name_at(t.data, 4)?,
        live: t.is_live(),
    })
}

/// `RELMAPPER_FILEMAGIC`.
pub const RELMAP_MAGIC: u32 = 0x0059_2717;
/// `pg_filenode.map` sizes and their `MAX_MAPPINGS`: 512 bytes with 62 slots (and 4 bytes of
/// padding after the CRC) up to 15, 524 bytes with 64 slots from 16.
pub const RELMAP_LAYOUTS: [(usize, usize); 2] = [(512, 62), (524, 64)];

/// A relation mapper file (`pg_filenode.map`): the file numbers of mapped catalogs, whose
/// `pg_class.relfilenode` is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelMap {
    /// (relation OID, file number).
    pub mappings: Vec<(Oid, u32)>,
}

impl RelMap {
    /// Parses and CRC-checks a `pg_filenode.map` (`RelMapFile` in `relmapper.c`).
    pub fn parse(b: &[u8]) -> Result<RelMap, CatalogError> {
        let Some(&(_, slots)) = RELMAP_LAYOUTS.iter().find(|(len, _)| *len == b.len()) else {
            return Err(CatalogError::BadRelMap("not 512 or 524 bytes"));
        };
        if u32_at(b, 0) != Some(RELMAP_MAGIC) {
            return Err(CatalogError::BadRelMap("bad magic"));
        }
        let n = u32_at(b, 4).ok_or(CatalogError::BadRelMap("short"))? as usize;
        if n > slots {
            return Err(CatalogError::BadRelMap("too many mappings"));
        }
        let crc_off = 8 + slots * 8;
        let stored = u32_at(b, crc_off).ok_or(CatalogError::BadRelMap("short"))?;
        let body = b.get(..crc_off).ok_or(CatalogError::BadRelMap("short"))?;
        if crc32c::crc32c(body) != stored {
            return Err(CatalogError::BadRelMap("CRC mismatch"));
        }
        let mappings = (0..n)
            .filter_map(|i| {
                let off = 8 + i * 8;
                Some((Oid(u32_at(b, off)?), u32_at(b, off + 4)?))
            })
            .collect();
        Ok(RelMap { mappings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tuples: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
        let mut upper = 8192;
        for (i, t) in tuples.iter().enumerate() {
            upper -= t.len();
            p[upper..upper + t.len()].copy_from_slice(t);
            let lp = (upper as u32) | (1 << 15) | ((t.len() as u32) << 17);
            p[24 + i * 4..28 + i * 4].copy_from_slice(&lp.to_le_bytes());
        }
        p[12..14].copy_from_slice(&((24 + tuples.len() * 4) as u16).to_le_bytes());
        p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p
    }

    fn tuple(xmax: u32, infomask: u16, data: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 24];
        t[0..4].copy_from_slice(&100u32.to_le_bytes());
        t[4..8].copy_from_slice(&xmax.to_le_bytes());
        t[20..22].copy_from_slice(&infomask.to_le_bytes());
        t[22] = 24;
        t.extend_from_slice(data);
        t
    }

    #[test]
    fn named_rows_read_oid_and_name_and_guess_liveness() {
        let mut row = 42u32.to_le_bytes().to_vec();
        row.extend_from_slice(b"shop");
        row.resize(4 + 64 + 4, 0);
        let live = tuple(0, 0, &row);
        let dead = tuple(7, 0, &row);
        let aborted = tuple(0, HEAP_XMIN_INVALID, &row);
        let rows = named_rows(&page(&[&live, &dead, &aborted])).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "shop");
        assert_eq!(rows[0].oid, Oid(42));
        assert!(rows[0].live && !rows[1].live);
    }

    #[test]
    fn malformed_pages_are_errors_not_panics() {
        let mut p = page(&[&tuple(0, 0, &[1, 2, 3, 4])]);
        assert!(heap_tuples(&p[..100]).is_err());
        p[24..28].copy_from_slice(&(8190u32 | (1 << 15) | (40 << 17)).to_le_bytes());
        assert!(heap_tuples(&p).is_err());
        let mut bad = page(&[]);
        bad[12..14].copy_from_slice(&9000u16.to_le_bytes());
        assert!(heap_tuples(&bad).is_err());
        assert_eq!(heap_tuples(&vec![0u8; 16384]).unwrap(), vec![]);
        assert!(RelMap::parse(&[0u8; 512]).is_err());
        for len in 0..64 {
            let _ = heap_tuples(&p[..len]);
        }
    }

    #[test]
    fn layouts_cover_supported_versions() {
        for v in 14..=18 {
            let l = ClassLayout::of(PgMajor::new(v).unwrap()).unwrap();
            assert_eq!(l.relkind, if v >= 18 { 119 } else { 115 });
        }
    }
}
