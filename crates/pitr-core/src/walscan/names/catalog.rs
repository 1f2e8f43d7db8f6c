//! What the catalogs say: one snapshot of a database's relations ([`DbCatalog`]) and the
//! `pg_class` / `pg_namespace` rows the scanned WAL wrote ([`WalNames`]).

use std::collections::HashMap;

use pitr_pg::catalog::ClassRow;
use pitr_pg::wal::{CatalogChange, CatalogRow, Oid};
use pitr_pg::Lsn;

/// `pg_class` OID (also its file number unless remapped).
pub(super) const PG_CLASS: u32 = 1259;
/// `pg_namespace` OID.
pub(super) const PG_NAMESPACE: u32 = 2615;
/// `pg_database` OID (a shared catalog, in `global/`).
pub(super) const PG_DATABASE: u32 = 1262;

/// A relation as one catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelName {
    /// Relation OID.
    pub oid: u32,
    /// File number.
    pub filenode: u32,
    /// `schema.name`.
    pub name: String,
    /// `relkind`.
    pub kind: char,
}

/// The relations of one database in one catalog snapshot.
#[derive(Debug, Clone, Default)]
pub struct DbCatalog {
    pub(super) by_filenode: HashMap<u32, RelName>,
    pub(super) by_oid: HashMap<u32, RelName>,
    pub(super) schemas: HashMap<u32, String>,
}

impl DbCatalog {
    /// Builds the maps from `pg_class` rows, schema names and the relation map; live row
    /// versions win over dead ones (which still name old files of renamed or truncated
    /// relations).
    pub fn from_rows(
        rows: &[ClassRow],
        schemas: &HashMap<u32, String>,
        map: &[(Oid, u32)],
    ) -> Self {
        let mut cat = DbCatalog {
            schemas: schemas.clone(),
            ..Default::default()
        };
        let mut ordered: Vec<&ClassRow> = rows.iter().collect();
        ordered.sort_by_key(|r| !r.live);
        for r in ordered {
            let node = if r.filenode != 0 {
                Some(r.filenode)
            } else {
                map.iter().find(|(o, _)| *o == r.oid).map(|(_, n)| *n)
            };
            let schema = schemas
                .get(&r.namespace.0)
                .cloned()
                .unwrap_or_else(|| format!("(schema {})", r.namespace.0));
            let name = RelName {
                oid: r.oid.0,
                filenode: node.unwrap_or(0),
                name: format!("{schema}.{}", r.name),
                kind: r.kind,
            };
            if let Some(n) = node {
                cat.by_filenode.entry(n).or_insert_with(|| name.clone());
            }
            cat.by_oid.entry(r.oid.0).or_insert(name);
        }
        cat
    }

    /// Number of relations by file number.
    pub fn len(&self) -> usize {
        self.by_filenode.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_filenode.is_empty()
    }
}

/// A `pg_class` row as the WAL showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WalRel {
    pub(super) oid: u32,
    pub(super) filenode: u32,
    pub(super) relname: String,
    pub(super) namespace: u32,
    pub(super) kind: char,
}

/// Schema names that never change: `pg_catalog`, `pg_toast`, `public` (unless renamed).
pub(super) fn builtin_schema(oid: u32) -> Option<&'static str> {
    match oid {
        11 => Some("pg_catalog"),
        99 => Some("pg_toast"),
        2200 => Some("public"),
        _ => None,
    }
}

/// What the scanned WAL said about one database's catalog, as it changed: each entry is
/// (LSN from which it is known: the commit of its transaction, LSN of the row's record, row).
#[derive(Debug, Default)]
pub(super) struct WalDb {
    pub(super) by_filenode: HashMap<u32, Vec<(Lsn, Lsn, WalRel)>>,
    pub(super) by_oid: HashMap<u32, Vec<(Lsn, Lsn, WalRel)>>,
    pub(super) schemas: HashMap<u32, Vec<(Lsn, String)>>,
}

/// The newest entry known before `at`.
pub(super) fn known_before<T>(
    entries: Option<&Vec<(Lsn, Lsn, T)>>,
    at: Lsn,
) -> Option<&(Lsn, Lsn, T)> {
    entries?.iter().rev().find(|(known, _, _)| *known < at)
}

/// `pg_class` and `pg_namespace` rows written to the scanned WAL by committed transactions.
#[derive(Debug, Default)]
pub struct WalNames {
    pub(super) dbs: HashMap<Oid, WalDb>,
}

impl WalNames {
    /// Records the rows written by a transaction that committed at `commit`. Temporary
    /// relations are left out: their files never appear in the WAL, and sessions that create
    /// them over and over would make this grow with the range.
    pub fn learn(&mut self, commit: Lsn, changes: &[CatalogChange]) {
        for c in changes {
            let db = self.dbs.entry(c.db).or_default();
            match &c.row {
                CatalogRow::Class(r) if r.persistence == 't' => {}
                CatalogRow::Class(r) => {
                    let rel = wal_rel(r);
                    if r.filenode != 0 {
                        push_changed(
                            db.by_filenode.entry(r.filenode).or_default(),
                            commit,
                            c.lsn,
                            &rel,
                        );
                    }
                    push_changed(db.by_oid.entry(r.oid.0).or_default(), commit, c.lsn, &rel);
                }
                CatalogRow::Namespace(n) => {
                    let v = db.schemas.entry(n.oid.0).or_default();
                    if v.last().is_none_or(|(_, name)| *name != n.name) {
                        v.push((commit, n.name.clone()));
                    }
                }
            }
        }
    }
}

pub(super) fn wal_rel(r: &ClassRow) -> WalRel {
    WalRel {
        oid: r.oid.0,
        filenode: r.filenode,
        relname: r.name.clone(),
        namespace: r.namespace.0,
        kind: r.kind,
    }
}

/// Appends `rel` unless it repeats the last entry (updates that change other columns).
pub(super) fn push_changed(v: &mut Vec<(Lsn, Lsn, WalRel)>, known: Lsn, lsn: Lsn, rel: &WalRel) {
    if v.last().is_none_or(|(_, _, last)| last != rel) {
        v.push((known, lsn, rel.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitr_pg::wal::Xid;

    fn class(oid: u32, name: &str, filenode: u32, inserted: bool, lsn: u64) -> CatalogChange {
        CatalogChange {
            lsn: Lsn(lsn),
            xid: Xid(700),
            db: Oid(5),
            inserted,
            row: CatalogRow::Class(ClassRow {
                oid: Oid(oid),
                name: name.into(),
                namespace: Oid(2200),
                filenode,
                tablespace: Oid(0),
                kind: 'r',
                persistence: 'p',
                live: true,
            }),
        }
    }

    #[test]
    fn wal_names_are_known_from_their_commit_on_and_follow_renames_and_new_files() {
        let mut w = WalNames::default();
        // Created at 0/100 (committed at 0/180), updated without a visible change, renamed at
        // 0/200 (committed 0/280), truncated at 0/300 (a new file, committed 0/380).
        w.learn(
            Lsn(0x180),
            &[
                class(16388, "nueva", 16388, true, 0x100),
                class(16388, "nueva", 16388, false, 0x120),
            ],
        );
        w.learn(
            Lsn(0x280),
            &[class(16388, "renombrada", 16388, false, 0x200)],
        );
        w.learn(
            Lsn(0x380),
            &[class(16388, "renombrada", 16399, false, 0x300)],
        );
        let db = &w.dbs[&Oid(5)];
        let at = |node: u32, lsn: u64| {
            known_before(db.by_filenode.get(&node), Lsn(lsn))
                .map(|(_, at, r)| (at.0, r.relname.as_str()))
        };
        assert_eq!(db.by_filenode[&16388].len(), 2, "repeats are not stored");
        assert_eq!(at(16388, 0x180), None, "not before its own commit");
        assert_eq!(at(16388, 0x181), Some((0x100, "nueva")));
        assert_eq!(at(16388, 0x300), Some((0x200, "renombrada")));
        assert_eq!(at(16399, 0x380), None);
        assert_eq!(at(16399, 0x400), Some((0x300, "renombrada")));
        let by_oid = known_before(db.by_oid.get(&16388), Lsn(0x400)).unwrap();
        assert_eq!(by_oid.2.filenode, 16399);
        assert_eq!(builtin_schema(2200), Some("public"));
    }
}
