//! Names from the base backups: the catalog heap files of the newest backup taken before a
//! transaction, then older ones, then newer ones, loaded once and cached.

use std::collections::HashMap;

use pitr_pg::catalog::{named_rows, pg_class_rows, RelMap};
use pitr_pg::wal::Oid;
use pitr_pg::{Lsn, PgMajor};
use pitr_repo::{frame, BackupManifest};

use super::catalog::*;
use super::Namer;

#[derive(Debug)]
pub(super) struct BackupCatalog {
    pub(super) manifest: BackupManifest,
    pub(super) dbs: HashMap<Oid, Option<DbCatalog>>,
    pub(super) db_names: Option<HashMap<u32, String>>,
}

impl Namer<'_> {
    /// Backups to ask for a transaction at `lsn`: the newest taken before it first, then older
    /// ones, then those taken after it.
    pub(super) fn backup_order(&self, lsn: Lsn) -> Vec<usize> {
        let before: Vec<usize> = (0..self.backups.len())
            .filter(|i| self.backups[*i].manifest.stop() <= lsn)
            .collect();
        let after = (0..self.backups.len()).filter(|i| self.backups[*i].manifest.stop() > lsn);
        before.into_iter().rev().chain(after).collect()
    }

    pub(super) fn warn(&mut self, i: usize, msg: String) {
        let w = format!("backup {}: {msg}", self.backups[i].manifest.label);
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    pub(super) async fn backup_db(&mut self, i: usize, db: Oid) -> Option<&DbCatalog> {
        if !self.backups[i].dbs.contains_key(&db) {
            let cat = self.load_backup_db(i, db).await;
            self.backups[i].dbs.insert(db, cat);
        }
        self.backups[i].dbs.get(&db).and_then(|c| c.as_ref())
    }

    pub(super) async fn load_backup_db(&mut self, i: usize, db: Oid) -> Option<DbCatalog> {
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
    pub(super) fn db_dir(&self, i: usize, db: Oid) -> Option<String> {
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

    /// A block file of backup `i`, rebuilt from its layers, verified; `None` (with a warning)
    /// when an object is absent or unreadable.
    pub(super) async fn read_block_file(
        &mut self,
        i: usize,
        path: &str,
        layers: &pitr_repo::block::BlockLayers,
        size: u64,
        blake3: &str,
    ) -> Option<Vec<u8>> {
        let mut objs = Vec::new();
        for o in layers.objects() {
            let key = self.cluster.backup_file_key(o.label, path);
            match self.cluster.repo().storage().get(&key).await {
                Ok(Some(obj)) => objs.push(obj),
                Ok(None) => {
                    self.warn(i, format!("{path}: object {key} is missing"));
                    return None;
                }
                Err(e) => {
                    self.warn(i, format!("{path}: {e}"));
                    return None;
                }
            }
        }
        let (base, deltas) = objs.split_first()?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut sink = |_: u32, page: &[u8]| {
            out.extend_from_slice(page);
            Ok(())
        };
        match pitr_repo::block::rebuild(layers, base, deltas, size, blake3, &mut sink) {
            Ok(_) => Some(out),
            Err(e) => {
                self.warn(i, format!("{path}: {e}"));
                None
            }
        }
    }

    /// A file of backup `i`, verified; `None` (with a warning) when absent or unreadable.
    pub(super) async fn read_backup_file(&mut self, i: usize, path: &str) -> Option<Vec<u8>> {
        let m = &self.backups[i].manifest;
        let f = m.files.iter().find(|f| f.path == path)?;
        if f.size == 0 {
            return Some(Vec::new());
        }
        if let Some(layers) = f.blocks.clone() {
            let (size, blake3) = (f.size, f.blake3.clone());
            return self.read_block_file(i, path, &layers, size, &blake3).await;
        }
        // Its own object, or its frame read from its bundle.
        let Some(o) = f.objects(&m.label).into_iter().next() else {
            return Some(Vec::new());
        };
        let key = self.cluster.object_key(&o, path);
        let got = self.cluster.read_object(&o, path).await;
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
