//! Names for the relations and databases in a WAL report.
//!
//! Three sources, tried in this order for each relation file:
//! 1. the running server (optional): `pg_class` / `pg_relation_filenode()` of each database
//!    involved, and `pg_database`; only used when its system identifier is the repository's;
//! 2. whichever knows the file most recently before the transaction: the `pg_class` rows
//!    written to the scanned WAL by transactions that committed before it ([`WalNames`],
//!    filled by the scan), or the base backups in the repository: the `pg_class`,
//!    `pg_namespace` and `pg_database` heap files (and `pg_filenode.map`) stored in the newest
//!    backup taken before the transaction, then older ones, then newer ones. The backups name a
//!    table that has since been dropped; the WAL names one created after the newest backup, or
//!    renamed since;
//! 3. the transaction's own `pg_class` rows, read from the WAL: a file it created.
//!
//! A lookup that fails leaves the bare file (`base/5/16384`) and adds a warning; naming never
//! fails a report.

mod backups;
mod catalog;

use std::collections::{BTreeSet, HashMap};

use pitr_pg::catalog::{named_rows, RelMap};
use pitr_pg::wal::{CatalogChange, CatalogRow, Oid};
use pitr_pg::Lsn;
use pitr_proto::ConnParams;
use pitr_repo::ClusterRepo;

use super::{Event, RelReport, SegmentPlan, WalLog};

use backups::BackupCatalog;
use catalog::*;
pub use catalog::{DbCatalog, RelName, WalNames};

/// Looks names up, caching what it loaded.
#[derive(Debug)]
pub struct Namer<'a> {
    cluster: &'a ClusterRepo,
    live: Option<Live>,
    backups: Vec<BackupCatalog>,
    /// `pg_class` / `pg_namespace` rows read from the scanned WAL.
    pub wal: WalNames,
    /// What could not be looked up.
    pub warnings: Vec<String>,
}

/// The running server, connected to lazily (once per database involved).
#[derive(Debug)]
struct Live {
    params: ConnParams,
    state: LiveState,
}

#[derive(Debug)]
enum LiveState {
    NotYet,
    Failed,
    Ready {
        db_names: HashMap<u32, String>,
        connectable: BTreeSet<u32>,
        dbs: HashMap<Oid, Option<DbCatalog>>,
    },
}

impl<'a> Namer<'a> {
    /// Names from the backups of the scanned history and, with `conn`, from the running
    /// server (after checking its system identifier).
    pub async fn new(
        cluster: &'a ClusterRepo,
        plan: &SegmentPlan,
        conn: Option<ConnParams>,
    ) -> Namer<'a> {
        let mut warnings = Vec::new();
        let mut backups: Vec<BackupCatalog> = match cluster.backups().await {
            Ok(b) => b
                .into_iter()
                .filter(|m| plan.history.includes_point(m.tli(), m.stop()))
                .map(|manifest| BackupCatalog {
                    manifest,
                    dbs: HashMap::new(),
                    db_names: None,
                })
                .collect(),
            Err(e) => {
                warnings.push(format!("cannot list base backups for names: {e}"));
                Vec::new()
            }
        };
        backups.sort_by_key(|b| b.manifest.stop());
        Namer {
            cluster,
            live: conn.map(|params| Live {
                params,
                state: LiveState::NotYet,
            }),
            backups,
            wal: WalNames::default(),
            warnings,
        }
    }

    /// Fills in relation and database names in every transaction of `log`.
    pub async fn name(&mut self, log: &mut WalLog) {
        for e in &mut log.events {
            self.name_event(e).await;
        }
        log.scan.warnings.append(&mut self.warnings);
    }

    /// Fills in relation and database names of one event.
    pub async fn name_event(&mut self, e: &mut Event) {
        let Event::Transaction(t) = e else { return };
        let lsn = t.lsn;
        if let Some(db) = &mut t.database {
            db.name = self.db_name(db.oid, lsn).await;
        }
        let own = std::mem::take(&mut t.catalog);
        for r in &mut t.relations {
            self.name_rel(r, lsn, &own).await;
        }
        // TRUNCATE by relation OID (wal_level=logical): attach to the relation's report.
        if let Some(db) = t.database.as_ref().map(|d| Oid(d.oid)) {
            let mut unplaced = Vec::new();
            for oid in std::mem::take(&mut t.truncated_oids) {
                match self.by_oid(db, oid, lsn, &own).await {
                    Some((n, from)) => {
                        match t
                            .relations
                            .iter_mut()
                            .find(|r| r.oid == Some(oid) || r.name.as_ref() == Some(&n.name))
                        {
                            Some(r) => r.truncated = true,
                            None => {
                                let mut r = RelReport::new(pitr_pg::wal::RelFileLocator {
                                    spc_oid: Oid(0),
                                    db_oid: db,
                                    rel_number: n.filenode,
                                });
                                r.file = format!("oid {oid}");
                                set_name(&mut r, &n, from);
                                r.truncated = true;
                                t.relations.push(r);
                            }
                        }
                    }
                    None => unplaced.push(oid),
                }
            }
            t.truncated_oids = unplaced;
        }
        t.catalog = own;
    }

    /// The running server's catalog of `db`, loading it on first use.
    async fn live_db(&mut self, db: Oid) -> Option<&DbCatalog> {
        let live = self.live.as_mut()?;
        if matches!(live.state, LiveState::NotYet) {
            live.state = match load_live(self.cluster, &live.params).await {
                Ok((db_names, connectable)) => LiveState::Ready {
                    db_names,
                    connectable,
                    dbs: HashMap::new(),
                },
                Err(e) => {
                    self.warnings
                        .push(format!("names from the running server: {e}"));
                    LiveState::Failed
                }
            };
        }
        let LiveState::Ready {
            db_names,
            connectable,
            dbs,
        } = &mut live.state
        else {
            return None;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = dbs.entry(db) {
            let cat = match (db_names.get(&db.0), connectable.contains(&db.0)) {
                (Some(name), true) => match load_live_db(&live.params, name).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.warnings
                            .push(format!("names from the running server: {e}"));
                        None
                    }
                },
                _ => None,
            };
            slot.insert(cat);
        }
        dbs.get(&db).and_then(|c| c.as_ref())
    }

    async fn live_db_name(&mut self, oid: u32) -> Option<String> {
        self.live_db(Oid(oid)).await;
        match &self.live.as_ref()?.state {
            LiveState::Ready { db_names, .. } => db_names.get(&oid).cloned(),
            _ => None,
        }
    }

    async fn name_rel(&mut self, r: &mut RelReport, lsn: Lsn, own: &[CatalogChange]) {
        if r.db_oid == 0 {
            return; // shared catalogs: not named
        }
        let db = Oid(r.db_oid);
        if let Some(n) = self
            .live_db(db)
            .await
            .and_then(|c| c.by_filenode.get(&r.filenode))
        {
            let n = n.clone();
            set_name(r, &n, "live".into());
            return;
        }
        let filenode = r.filenode;
        if let Some((n, from)) = self
            .catalog_name(
                db,
                lsn,
                own,
                |w| w.filenode == filenode,
                |d| d.by_filenode.get(&filenode),
                |c| c.by_filenode.get(&filenode),
            )
            .await
        {
            set_name(r, &n, from);
        }
    }

    /// The name of a relation of `db` at `lsn` (the commit of the transaction that touched
    /// it): what the WAL (rows committed before) or the backups knew most recently (see the
    /// module docs); else, for a file the transaction created, the transaction's own rows.
    /// The name before the transaction comes first: the old file of a `VACUUM FULL` belongs,
    /// at commit, to the scratch relation that is dropped with it. `own_matches` picks the
    /// transaction's own rows, `entries` the WAL's history of the relation, `by_backup` a
    /// backup's entry.
    async fn catalog_name(
        &mut self,
        db: Oid,
        lsn: Lsn,
        own: &[CatalogChange],
        own_matches: impl Fn(&WalRel) -> bool,
        entries: impl Fn(&WalDb) -> Option<&Vec<(Lsn, Lsn, WalRel)>>,
        by_backup: impl Fn(&DbCatalog) -> Option<&RelName>,
    ) -> Option<(RelName, String)> {
        let wal = known_before(self.wal.dbs.get(&db).and_then(&entries), lsn).cloned();
        for i in self.backup_order(lsn) {
            let stop = self.backups[i].manifest.stop();
            // The WAL knows it from after this backup (or this backup is after the event).
            if wal
                .as_ref()
                .is_some_and(|(known, _, _)| stop > lsn || *known >= stop)
            {
                break;
            }
            if let Some(n) = self.backup_db(i, db).await.and_then(&by_backup).cloned() {
                return Some((n, format!("backup {}", self.backups[i].manifest.label)));
            }
        }
        let (at, w) = match wal {
            Some((_, at, w)) => (at, w),
            None => own
                .iter()
                .rev()
                .filter(|c| c.db == db)
                .find_map(|c| match &c.row {
                    CatalogRow::Class(r) => {
                        Some((c.lsn, wal_rel(r))).filter(|(_, w)| own_matches(w))
                    }
                    CatalogRow::Namespace(_) => None,
                })?,
        };
        let n = self.wal_name(db, &w, lsn, own).await;
        Some((n, format!("wal {at}")))
    }

    /// `schema.name` of a relation seen in the WAL.
    async fn wal_name(&mut self, db: Oid, w: &WalRel, lsn: Lsn, own: &[CatalogChange]) -> RelName {
        let schema = self.schema_name(db, w.namespace, lsn, own).await;
        RelName {
            oid: w.oid,
            filenode: w.filenode,
            name: format!("{schema}.{}", w.relname),
            kind: w.kind,
        }
    }

    /// A schema's name: from the transaction's own rows, the WAL, the backups, the built-in
    /// schemas, else `(schema OID)`.
    async fn schema_name(&mut self, db: Oid, ns: u32, lsn: Lsn, own: &[CatalogChange]) -> String {
        let own_name = own.iter().rev().find_map(|c| match &c.row {
            CatalogRow::Namespace(n) if c.db == db && n.oid.0 == ns => Some(n.name.clone()),
            _ => None,
        });
        if let Some(n) = own_name {
            return n;
        }
        let wal = self
            .wal
            .dbs
            .get(&db)
            .and_then(|d| d.schemas.get(&ns))
            .and_then(|v| v.iter().rev().find(|(known, _)| *known < lsn))
            .map(|(_, n)| n.clone());
        if let Some(n) = wal {
            return n;
        }
        for i in self.backup_order(lsn) {
            if let Some(n) = self
                .backup_db(i, db)
                .await
                .and_then(|c| c.schemas.get(&ns).cloned())
            {
                return n;
            }
        }
        builtin_schema(ns).map_or_else(|| format!("(schema {ns})"), str::to_string)
    }

    async fn by_oid(
        &mut self,
        db: Oid,
        oid: u32,
        lsn: Lsn,
        own: &[CatalogChange],
    ) -> Option<(RelName, String)> {
        if let Some(n) = self.live_db(db).await.and_then(|c| c.by_oid.get(&oid)) {
            return Some((n.clone(), "live".into()));
        }
        self.catalog_name(
            db,
            lsn,
            own,
            |w| w.oid == oid,
            |d| d.by_oid.get(&oid),
            |c| c.by_oid.get(&oid),
        )
        .await
    }

    async fn db_name(&mut self, oid: u32, lsn: Lsn) -> Option<String> {
        if let Some(n) = self.live_db_name(oid).await {
            return Some(n);
        }
        for i in self.backup_order(lsn) {
            if self.backups[i].db_names.is_none() {
                let names = match self
                    .read_backup_file(i, &format!("global/{PG_DATABASE}"))
                    .await
                {
                    Some(bytes) => match named_rows(&bytes) {
                        Ok(rows) => {
                            let mut m = HashMap::new();
                            let mut rows = rows;
                            rows.sort_by_key(|r| !r.live);
                            for r in rows {
                                m.entry(r.oid.0).or_insert(r.name);
                            }
                            m
                        }
                        Err(e) => {
                            self.warn(i, format!("global/{PG_DATABASE}: {e}"));
                            HashMap::new()
                        }
                    },
                    None => HashMap::new(),
                };
                self.backups[i].db_names = Some(names);
            }
            if let Some(n) = self.backups[i].db_names.as_ref().and_then(|m| m.get(&oid)) {
                return Some(n.clone());
            }
        }
        None
    }

    /// The `pg_class` file number of each database whose `pg_filenode.map` does not say 1259
    /// (after a `VACUUM FULL pg_class`), in the newest backup taken before `lsn`, else the
    /// oldest: where the WAL scan finds `pg_class` rows.
    pub async fn class_filenodes(&mut self, lsn: Lsn) -> Vec<(Oid, u32)> {
        let Some(i) = self.backup_order(lsn).into_iter().next() else {
            return Vec::new();
        };
        let maps: Vec<(Oid, String)> = self.backups[i]
            .manifest
            .files
            .iter()
            .filter_map(|f| {
                let dir = f.path.strip_suffix("/pg_filenode.map")?;
                if !(dir.starts_with("base/") || dir.starts_with("pg_tblspc/")) {
                    return None;
                }
                let db = dir.rsplit('/').next()?.parse().ok()?;
                Some((Oid(db), f.path.clone()))
            })
            .collect();
        let mut out = Vec::new();
        for (db, path) in maps {
            let Some(bytes) = self.read_backup_file(i, &path).await else {
                continue;
            };
            match RelMap::parse(&bytes) {
                Ok(m) => out.extend(
                    m.mappings
                        .iter()
                        .find(|(o, n)| o.0 == PG_CLASS && *n != PG_CLASS)
                        .map(|(_, n)| (db, *n)),
                ),
                Err(e) => self.warn(i, format!("{path}: {e}")),
            }
        }
        out
    }
}

fn set_name(r: &mut RelReport, n: &RelName, from: String) {
    r.oid = Some(n.oid);
    r.name = Some(n.name.clone());
    r.kind = Some(n.kind.to_string());
    r.name_from = Some(from);
}

/// Checks that the running server is the repository's cluster and reads `pg_database`:
/// names, and which databases accept connections.
async fn load_live(
    cluster: &ClusterRepo,
    p: &ConnParams,
) -> Result<(HashMap<u32, String>, BTreeSet<u32>), String> {
    let client = pitr_proto::connect(p).await.map_err(|e| e.to_string())?;
    let info = client.server_info().await.map_err(|e| e.to_string())?;
    if let Ok(Some(id)) = cluster.identity().await {
        if id.system_id != info.system_id {
            return Err(format!(
                "server {} is another cluster (system identifier {}, the repository's is {}); not used",
                client.endpoint(),
                info.system_id,
                id.system_id
            ));
        }
    }
    let rows = client
        .inner()
        .query(
            "SELECT oid::int8, datname::text, datallowconn FROM pg_database",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut db_names = HashMap::new();
    let mut connectable = BTreeSet::new();
    for r in rows {
        let oid: i64 = r.get(0);
        let name: String = r.get(1);
        let allow: bool = r.get(2);
        let oid = u32::try_from(oid).unwrap_or(0);
        if allow {
            connectable.insert(oid);
        }
        db_names.insert(oid, name);
    }
    Ok((db_names, connectable))
}

/// The running server's `pg_class` of database `name` (file numbers through
/// `pg_relation_filenode`, which knows mapped catalogs).
async fn load_live_db(p: &ConnParams, name: &str) -> Result<DbCatalog, String> {
    let mut params = p.clone();
    params.dbname = Some(name.to_string());
    let client = pitr_proto::connect(&params)
        .await
        .map_err(|e| format!("database {name:?}: {e}"))?;
    let rows = client
        .inner()
        .query(
            "SELECT c.oid::int8, pg_relation_filenode(c.oid)::int8, n.nspname::text, \
             c.relname::text, c.relkind::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[],
        )
        .await
        .map_err(|e| format!("database {name:?}: {e}"))?;
    let mut cat = DbCatalog::default();
    for r in rows {
        let oid: i64 = r.get(0);
        let node: Option<i64> = r.get(1);
        let schema: String = r.get(2);
        let rel: String = r.get(3);
        let kind: String = r.get(4);
        let n = RelName {
            oid: u32::try_from(oid).unwrap_or(0),
            filenode: node.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            name: format!("{schema}.{rel}"),
            kind: kind.chars().next().unwrap_or('?'),
        };
        if n.filenode != 0 {
            cat.by_filenode.insert(n.filenode, n.clone());
        }
        cat.by_oid.insert(n.oid, n);
    }
    Ok(cat)
}
