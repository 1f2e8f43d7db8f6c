//! The `pg_class` and `pg_namespace` rows a stretch of WAL writes, read back from the heap
//! records on those catalogs: how `pitr wal` names a relation created after the newest base
//! backup (its name exists only in the WAL), and follows renames and new file numbers.
//!
//! [`CatalogTracker`] is fed every decoded record, in order. It keeps a copy of the rows on each
//! catalog page the WAL shows it, because the WAL does not always carry a whole row:
//! - with a full-page image (the first change of a page after a checkpoint) the row is only in
//!   the image, at the line pointer the record gives: images are restored, decompressed when
//!   needed (pglz here, LZ4 and zstd through an [`ImageDecompressor`] from the caller);
//! - an update on the same page logs only the bytes that differ from the old version, which
//!   must then be known (from an earlier image or record).
//!
//! A row that cannot be read is reported as [`CatalogEvent::Unreadable`], never as an error:
//! the caller leaves the relation unnamed. Catalog files: `pg_class` is a mapped catalog
//! (file 1259 unless the relation map says otherwise: set with
//! [`CatalogTracker::set_class_filenode`], and followed through `RelMap` update records);
//! `pg_namespace` is file 2615 unless a `pg_class` row seen says otherwise.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::catalog::{class_row, named_row, ClassLayout, ClassRow, HeapTuple, NamedRow, RelMap};
use crate::Lsn;

use super::bytes::Cursor;
use super::record::{ImageDecompressor, ImageError, Record};
use super::records::{HeapOp, XLOG_HEAP_INIT_PAGE};
use super::tuples::{LoggedTuple, TupleSource};
use super::types::{ForkNumber, Oid, RelFileLocator, RmgrId, Xid};

/// `pg_class` OID, and its file number unless remapped.
pub const PG_CLASS_OID: u32 = 1259;
/// `pg_namespace` OID, and its file number unless rewritten.
pub const PG_NAMESPACE_OID: u32 = 2615;
/// `XLOG_RELMAP_UPDATE`.
const XLOG_RELMAP_UPDATE: u8 = 0x00;

/// A row of a catalog pitr reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogRow {
    /// A `pg_class` row.
    Class(ClassRow),
    /// A `pg_namespace` row.
    Namespace(NamedRow),
}

/// A catalog row version written by a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChange {
    /// LSN of the record.
    pub lsn: Lsn,
    /// Transaction of the record (a subtransaction's own xid).
    pub xid: Xid,
    /// Database of the catalog.
    pub db: Oid,
    /// A new row (`INSERT`: the object was created), rather than a new version of one.
    pub inserted: bool,
    /// The row.
    pub row: CatalogRow,
}

/// Why a catalog row written to the WAL could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableReason {
    /// The record is malformed.
    Malformed(&'static str),
    /// The full-page image holding it cannot be restored.
    Image(ImageError),
    /// Only the changed bytes were logged and the old version was never seen.
    NoOldVersion,
    /// The row is not where the record says, or too short for the catalog's columns.
    BadRow,
}

impl fmt::Display for UnreadableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnreadableReason::Malformed(what) => write!(f, "malformed record ({what})"),
            UnreadableReason::Image(e) => write!(f, "{e}"),
            UnreadableReason::NoOldVersion => f.write_str(
                "the update logged only the changed bytes and the previous version of the row was not in the WAL read",
            ),
            UnreadableReason::BadRow => f.write_str("row missing or too short on the page"),
        }
    }
}

/// What a record told about the catalogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    /// A row version was written.
    Row(CatalogChange),
    /// A row version was written but cannot be read.
    Unreadable {
        /// LSN of the record.
        lsn: Lsn,
        /// Transaction of the record.
        xid: Xid,
        /// The catalog file.
        rel: RelFileLocator,
        /// Why.
        reason: UnreadableReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Catalog {
    Class,
    Namespace,
}

/// Follows the `pg_class` and `pg_namespace` rows written to the WAL (see the module docs).
#[derive(Debug, Default)]
pub struct CatalogTracker {
    /// Column data of the rows on each catalog page seen, by line pointer.
    pages: HashMap<(RelFileLocator, u32), BTreeMap<u16, Vec<u8>>>,
    class_nodes: HashMap<Oid, u32>,
    namespace_nodes: HashMap<Oid, u32>,
    decompress: Option<ImageDecompressor>,
}

impl CatalogTracker {
    /// A tracker that reads pglz-compressed and plain images only.
    pub fn new() -> CatalogTracker {
        CatalogTracker::default()
    }

    /// Also reads LZ4 and zstd images through `f`.
    pub fn with_decompressor(mut self, f: ImageDecompressor) -> CatalogTracker {
        self.decompress = Some(f);
        self
    }

    /// The file number of `pg_class` in database `db` (from its `pg_filenode.map`), when it is
    /// not 1259.
    pub fn set_class_filenode(&mut self, db: Oid, filenode: u32) {
        self.class_nodes.insert(db, filenode);
    }

    fn catalog_of(&self, rel: &RelFileLocator) -> Option<Catalog> {
        if rel.db_oid.0 == 0 {
            return None;
        }
        let class = self
            .class_nodes
            .get(&rel.db_oid)
            .copied()
            .unwrap_or(PG_CLASS_OID);
        let ns = self
            .namespace_nodes
            .get(&rel.db_oid)
            .copied()
            .unwrap_or(PG_NAMESPACE_OID);
        if rel.rel_number == class {
            Some(Catalog::Class)
        } else if rel.rel_number == ns {
            Some(Catalog::Namespace)
        } else {
            None
        }
    }

    /// Feeds one record; what it tells about the catalogs is appended to `out`.
    pub fn record(&mut self, rec: &Record<'_>, out: &mut Vec<CatalogEvent>) {
        if rec.rmgr() == RmgrId::RELMAP && rec.rmgr_info() == XLOG_RELMAP_UPDATE {
            self.relmap_update(rec);
            return;
        }
        let image_errors = self.refresh_pages(rec);
        if rec.rmgr() != RmgrId::HEAP && rec.rmgr() != RmgrId::HEAP2 {
            return;
        }
        let Some(b0) = rec.block(0) else { return };
        let Some(catalog) = (b0.fork == ForkNumber::MAIN)
            .then(|| self.catalog_of(&b0.rel))
            .flatten()
        else {
            return;
        };
        let info = rec.rmgr_info();
        let op = HeapOp::from_info(rec.rmgr() == RmgrId::HEAP2, info, rec.format());
        if !matches!(
            op,
            HeapOp::Insert
                | HeapOp::MultiInsert
                | HeapOp::Update
                | HeapOp::HotUpdate
                | HeapOp::Inplace
        ) {
            return;
        }
        let unreadable = |reason| CatalogEvent::Unreadable {
            lsn: rec.lsn,
            xid: rec.xid(),
            rel: b0.rel,
            reason,
        };
        let tuples = match rec.heap_tuples() {
            Ok(t) => t,
            Err(_) => {
                self.pages.remove(&(b0.rel, b0.block));
                out.push(unreadable(UnreadableReason::Malformed("heap record")));
                return;
            }
        };
        let key = (b0.rel, b0.block);
        if info & XLOG_HEAP_INIT_PAGE != 0 && b0.image.is_none() {
            self.pages.insert(key, BTreeMap::new());
        }
        let image_error = image_errors
            .iter()
            .find(|(id, _)| *id == b0.id)
            .map(|e| e.1);
        for LoggedTuple { offnum, source } in tuples {
            let data = match self.tuple_bytes(key, offnum, source, image_error) {
                Ok(d) => d,
                Err(reason) => {
                    if let Some(p) = self.pages.get_mut(&key) {
                        p.remove(&offnum);
                    }
                    if op != HeapOp::Inplace {
                        out.push(unreadable(reason));
                    }
                    continue;
                }
            };
            if op == HeapOp::Inplace {
                // Overwrites columns pitr does not read (relpages, relhasindex, …) in place;
                // kept so that later updates logged as changed bytes rebuild right.
                if let Some(row) = self.pages.get_mut(&key).and_then(|p| p.get_mut(&offnum)) {
                    if row.len() == data.len() {
                        *row = data;
                    }
                }
                continue;
            }
            let row = self.decode(rec, catalog, b0.block, offnum, &data);
            self.pages.entry(key).or_default().insert(offnum, data);
            match row {
                Some(row) => {
                    if let CatalogRow::Class(c) = &row {
                        if c.oid.0 == PG_NAMESPACE_OID && c.filenode != 0 {
                            self.namespace_nodes.insert(b0.rel.db_oid, c.filenode);
                        }
                    }
                    out.push(CatalogEvent::Row(CatalogChange {
                        lsn: rec.lsn,
                        xid: rec.xid(),
                        db: b0.rel.db_oid,
                        inserted: matches!(op, HeapOp::Insert | HeapOp::MultiInsert),
                        row,
                    }));
                }
                None => out.push(unreadable(UnreadableReason::BadRow)),
            }
        }
    }

    /// Refreshes the copies of the catalog pages that `rec` has full-page images of (a record
    /// of any type); returns the block ids whose image could not be restored, and why.
    fn refresh_pages(&mut self, rec: &Record<'_>) -> Vec<(u8, ImageError)> {
        let mut image_errors = Vec::new();
        for b in rec.blocks() {
            if b.fork != ForkNumber::MAIN || self.catalog_of(&b.rel).is_none() {
                continue;
            }
            let Some(img) = b.image else { continue };
            let key = (b.rel, b.block);
            match img.page(self.decompress) {
                Ok(page) => {
                    let rows = match crate::catalog::heap_tuples(&page) {
                        Ok(tuples) => tuples.iter().map(|t| (t.offset, t.data.to_vec())).collect(),
                        Err(_) => BTreeMap::new(),
                    };
                    self.pages.insert(key, rows);
                }
                Err(e) => {
                    self.pages.remove(&key);
                    image_errors.push((b.id, e));
                }
            }
        }
        image_errors
    }

    /// The bytes of the tuple at `offnum` of page `key`: from the record, rebuilt from the
    /// old version's copy, or from the copy of the page's image (`image_error`: why that image
    /// could not be restored).
    fn tuple_bytes(
        &self,
        key: (RelFileLocator, u32),
        offnum: u16,
        source: TupleSource<'_>,
        image_error: Option<ImageError>,
    ) -> Result<Vec<u8>, UnreadableReason> {
        match source {
            TupleSource::Data { data, .. } => Ok(data.to_vec()),
            TupleSource::Delta {
                old_offnum,
                prefix,
                suffix,
                middle,
                ..
            } => self
                .pages
                .get(&key)
                .and_then(|p| p.get(&old_offnum))
                .and_then(|old| TupleSource::rebuild(prefix, suffix, middle, old))
                .ok_or(UnreadableReason::NoOldVersion),
            TupleSource::Image => match image_error {
                Some(e) => Err(UnreadableReason::Image(e)),
                None => self
                    .pages
                    .get(&key)
                    .and_then(|p| p.get(&offnum))
                    .cloned()
                    .ok_or(UnreadableReason::BadRow),
            },
        }
    }

    fn decode(
        &self,
        rec: &Record<'_>,
        catalog: Catalog,
        block: u32,
        offnum: u16,
        data: &[u8],
    ) -> Option<CatalogRow> {
        let t = HeapTuple {
            block,
            offset: offnum,
            xmin: rec.xid().0,
            xmax: 0,
            infomask: 0,
            data,
        };
        match catalog {
            Catalog::Class => {
                let layout = ClassLayout::of(rec.version).ok()?;
                class_row(&t, &layout).map(CatalogRow::Class)
            }
            Catalog::Namespace => named_row(&t).map(CatalogRow::Namespace),
        }
    }

    /// `xl_relmap_update` (dbid, tsid, nbytes, the new `pg_filenode.map`): follows `pg_class`
    /// to its new file after `VACUUM FULL pg_class`.
    fn relmap_update(&mut self, rec: &Record<'_>) {
        let mut c = Cursor::new(rec.main_data());
        let parsed = (|| {
            let db = Oid(c.u32()?);
            let _tsid = c.u32()?;
            let n = usize::try_from(c.i32()?).ok()?;
            Some((db, c.take(n)?))
        })();
        let Some((db, file)) = parsed else { return };
        if db.0 == 0 {
            return;
        }
        if let Ok(map) = RelMap::parse(file) {
            if let Some((_, node)) = map.mappings.iter().find(|(o, _)| o.0 == PG_CLASS_OID) {
                self.class_nodes.insert(db, *node);
            }
        }
    }
}
