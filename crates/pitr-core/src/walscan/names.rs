//! Names for the relations and databases in a WAL report.
//!
//! Two sources, tried in this order for each relation file:
//! 1. the running server (optional): `pg_class` / `pg_relation_filenode()` of each database
//!    involved, and `pg_database`; only used when its system identifier is the repository's;
//! 2. the base backups in the repository: the `pg_class`, `pg_namespace` and `pg_database` heap
//!    files (and `pg_filenode.map`) stored in the newest backup taken before the transaction,
//!    then older ones, then newer ones. This is what names a table that has since been dropped.
//!
//! A lookup that fails leaves the bare file (`base/5/16384`) and adds a warning; naming never
//! fails a report.

use std::collections::{BTreeSet, HashMap};

use pitr_pg::catalog::{named_rows, pg_class_rows, ClassRow, RelMap};
use pitr_pg::wal::Oid;
use pitr_pg::{Lsn, PgMajor};
use pitr_proto::ConnParams;
use pitr_repo::{frame, BackupManifest, ClusterRepo};

use super::{Event, RelReport, SegmentPlan, WalLog};

/// `pg_class` OID (also its file number unless remapped).
const PG_CLASS: u32 = 1259;
/// `pg_namespace` OID.
const PG_NAMESPACE: u32 = 2615;
/// `pg_database` OID (a shared catalog, in `global/`).
const PG_DATABASE: u32 = 1262;

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
    by_filenode: HashMap<u32, RelName>,
    by_oid: HashMap<u32, RelName>,
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
        let mut cat = DbCatalog::default();
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

#[derive(Debug)]
struct BackupCatalog {
    manifest: BackupManifest,
    dbs: HashMap<Oid, Option<DbCatalog>>,
    db_names: Option<HashMap<u32, String>>,
}

/// Looks names up, caching what it loaded.
#[derive(Debug)]
pub struct Namer<'a> {
    cluster: &'a ClusterRepo,
    live: Option<Live>,
    backups: Vec<BackupCatalog>,
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
        for r in &mut t.relations {
            self.name_rel(r, lsn).await;
        }
        // TRUNCATE by relation OID (wal_level=logical): attach to the relation's report.
        if let Some(db) = t.database.as_ref().map(|d| Oid(d.oid)) {
            let mut unplaced = Vec::new();
            for oid in std::mem::take(&mut t.truncated_oids) {
                match self.by_oid(db, oid, lsn).await {
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

    async fn name_rel(&mut self, r: &mut RelReport, lsn: Lsn) {
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
        for i in self.backup_order(lsn) {
            if let Some(cat) = self.backup_db(i, db).await {
                if let Some(n) = cat.by_filenode.get(&r.filenode).cloned() {
                    let from = format!("backup {}", self.backups[i].manifest.label);
                    set_name(r, &n, from);
                    return;
                }
            }
        }
    }

    async fn by_oid(&mut self, db: Oid, oid: u32, lsn: Lsn) -> Option<(RelName, String)> {
        if let Some(n) = self.live_db(db).await.and_then(|c| c.by_oid.get(&oid)) {
            return Some((n.clone(), "live".into()));
        }
        for i in self.backup_order(lsn) {
            if let Some(n) = self
                .backup_db(i, db)
                .await
                .and_then(|c| c.by_oid.get(&oid).cloned())
            {
                return Some((n, format!("backup {}", self.backups[i].manifest.label)));
            }
        }
        None
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

    /// Backups to ask for a transaction at `lsn`: the newest taken before it first, then older
    /// ones, then those taken after it.
    fn backup_order(&self, lsn: Lsn) -> Vec<usize> {
        let before: Vec<usize> = (0..self.backups.len())
            .filter(|i| self.backups[*i].manifest.stop() <= lsn)
            .collect();
        let after = (0..self.backups.len()).filter(|i| self.backups[*i].manifest.stop() > lsn);
        before.into_iter().rev().chain(after).collect()
    }

    fn warn(&mut self, i: usize, msg: String) {
        let w = format!("backup {}: {msg}", self.backups[i].manifest.label);
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    async fn backup_db(&mut self, i: usize, db: Oid) -> Option<&DbCatalog> {
        if !self.backups[i].dbs.contains_key(&db) {
            let cat = self.load_backup_db(i, db).await;
            self.backups[i].dbs.insert(db, cat);
        }
        self.backups[i].dbs.get(&db).and_then(|c| c.as_ref())
    }

    async fn load_backup_db(&mut self, i: usize, db: Oid) -> Option<DbCatalog> {
        let major = match PgMajor::new(self.backups[i].manifest.pg_major) {
            Ok(m) => m,
            Err(e) => {
                self.warn(i, e.to_string());
                return None;
            }
        };
        let dir = self.db_dir(i, db)?;
        let map = match self
            .read_backup_file(i, &format!("{dir}/pg_filenode.map"))
            .await
        {
            Some(b) => match RelMap::parse(&b) {
                Ok(m) => m.mappings,
                Err(e) => {
                    self.warn(i, format!("{dir}/pg_filenode.map: {e}"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let class_node = map
            .iter()
            .find(|(o, _)| o.0 == PG_CLASS)
            .map_or(PG_CLASS, |(_, n)| *n);
        let path = format!("{dir}/{class_node}");
        let rows = match pg_class_rows(&self.read_backup_file(i, &path).await?, major) {
            Ok(r) => r,
            Err(e) => {
                self.warn(i, format!("{path}: {e}"));
                return None;
            }
        };
        let ns_node = rows
            .iter()
            .find(|r| r.oid.0 == PG_NAMESPACE && r.live && r.filenode != 0)
            .map_or(PG_NAMESPACE, |r| r.filenode);
        let mut schemas = HashMap::new();
        if let Some(b) = self.read_backup_file(i, &format!("{dir}/{ns_node}")).await {
            match named_rows(&b) {
                Ok(mut ns) => {
                    ns.sort_by_key(|r| !r.live);
                    for r in ns {
                        schemas.entry(r.oid.0).or_insert(r.name);
                    }
                }
                Err(e) => self.warn(i, format!("{dir}/{ns_node}: {e}")),
            }
        }
        Some(DbCatalog::from_rows(&rows, &schemas, &map))
    }

    /// The directory of database `db` in backup `i`: `base/<db>`, or the one in a tablespace.
    fn db_dir(&self, i: usize, db: Oid) -> Option<String> {
        let m = &self.backups[i].manifest;
        let base = format!("base/{}", db.0);
        let suffix = format!("/{}/{PG_CLASS}", db.0);
        m.files.iter().find_map(|f| {
            if f.path.starts_with(&format!("{base}/")) {
                Some(base.clone())
            } else if f.path.starts_with("pg_tblspc/") && f.path.ends_with(&suffix) {
                f.path
                    .strip_suffix(&format!("/{PG_CLASS}"))
                    .map(str::to_string)
            } else {
                None
            }
        })
    }

    /// A file of backup `i`, verified; `None` (with a warning) when absent or unreadable.
    async fn read_backup_file(&mut self, i: usize, path: &str) -> Option<Vec<u8>> {
        let m = &self.backups[i].manifest;
        let f = m.files.iter().find(|f| f.path == path)?;
        if f.size == 0 {
            return Some(Vec::new());
        }
        let key = self
            .cluster
            .backup_file_key(f.stored_in.as_deref().unwrap_or(&m.label), path);
        let got = self.cluster.repo().storage().get(&key).await;
        match got {
            Ok(Some(obj)) => match frame::decode(&obj) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.warn(i, format!("{path}: {e}"));
                    None
                }
            },
            Ok(None) => {
                self.warn(i, format!("{path}: object {key} is missing"));
                None
            }
            Err(e) => {
                self.warn(i, format!("{path}: {e}"));
                None
            }
        }
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
