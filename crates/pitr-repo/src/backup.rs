//! Base backups in the repository.
//!
//! ```text
//! <cluster>/backup/<label>/data/<path>     one framed object per non-empty file of PGDATA
//!                                         (tablespace files under pg_tblspc/<oid>/…) of at
//!                                         least [`BUNDLE_LIMIT`] bytes, and block-level files
//! <cluster>/backup/<label>/bundle/<id>     the smaller files: each a complete frame (as its own
//!                                         object would be), one after the other; the manifest
//!                                         gives each file's bundle, offset and length
//! <cluster>/backup/<label>/backup.json    the manifest (metadata, kind "backup"), written last:
//!                                         a backup without it is incomplete and never used
//! ```

use jiff::Timestamp;
use pitr_pg::{Lsn, TimelineId};
use pitr_storage::PutMode;
use serde::{Deserialize, Serialize};

use crate::block::{BlockLayers, ObjectRef};
use crate::{ClusterRepo, RepoResult};

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file copied.
    Full,
    /// Only files changed since `parent`; the rest referenced from it.
    Incr,
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incr => "incr",
        })
    }
}

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to PGDATA (`/`-separated); tablespace files as `pg_tblspc/<oid>/…`.
    pub path: String,
    /// Size in bytes as copied.
    pub size: u64,
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// BLAKE3 of the content (hex); empty for empty files.
    pub blake3: String,
    /// Size of the stored object (0 for empty files, which have no object).
    pub stored_size: u64,
    /// Label of the backup whose `data/` holds the object (this backup's, or an ancestor's for
    /// files unchanged in an incremental backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_in: Option<String>,
    /// Blocks whose data page checksum failed verification (twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_failures: Vec<u32>,
    /// A block-level incremental file: rebuilt from a base object and the changed pages stored
    /// by the incrementals since (then `stored_in` is unset and `stored_size` counts only the
    /// pages this backup stored; `size` and `blake3` describe the rebuilt file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Box<BlockLayers>>,
    /// A bundled file: its frame lies in a bundle of the backup holding it (this one, or
    /// `stored_in`), `stored_size` bytes from `offset`. Absent in manifests written before
    /// bundles (every file then has its own object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleRef>,
}

/// Files smaller than this are bundled by the copy method (block-level files never are). Small
/// enough that the relation files worth storing block-wise in an incremental (catalogs of
/// hundreds of KB whose few changed pages would otherwise be stored whole again) keep objects
/// of their own; large enough that a data directory of many small tables is mostly bundled.
pub const BUNDLE_LIMIT: u64 = 128 << 10;

/// Where a bundled file's frame lies: bundle `id` of the backup holding it, at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// Bundle number (its key is `bundle/<id>` in the backup's prefix).
    pub id: u64,
    /// Byte offset of the file's frame in the bundle (plaintext offset in an encrypted one).
    pub offset: u64,
}

impl ManifestFile {
    /// The entry of a file about to be copied whole: nothing stored yet (size, checksum and
    /// stored size are filled in as it is copied).
    pub fn new(path: String, mode: u32, mtime: i64) -> ManifestFile {
        ManifestFile {
            path,
            size: 0,
            mode,
            mtime,
            blake3: String::new(),
            stored_size: 0,
            stored_in: None,
            checksum_failures: Vec::new(),
            blocks: None,
            bundle: None,
        }
    }

    /// Every object the file needs, for a file of backup `own` (none for an empty file).
    pub fn objects<'a>(&'a self, own: &'a str) -> Vec<ObjectRef<'a>> {
        match &self.blocks {
            Some(b) => b.objects(),
            None if self.size == 0 => Vec::new(),
            None => vec![ObjectRef {
                label: self.stored_in.as_deref().unwrap_or(own),
                size: self.size,
                blake3: &self.blake3,
                stored_size: self.stored_size,
                bundle: self.bundle,
            }],
        }
    }

    /// The other backups whose objects the file needs (for a file of backup `own`).
    pub fn holders<'a>(&'a self, own: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.objects(own)
            .into_iter()
            .map(|o| o.label)
            .filter(move |l| *l != own)
    }
}

/// A directory to recreate (including ones whose contents are skipped, like `pg_wal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDir {
    /// Path relative to PGDATA.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
}

/// A tablespace at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTablespace {
    /// Tablespace OID (the link name under `pg_tblspc`).
    pub oid: u32,
    /// Tablespace name.
    pub name: String,
    /// Absolute location on the database host.
    pub location: String,
}

/// Everything known about one completed base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Unique label, sortable by time (e.g. `20261121T193000F`).
    pub label: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// Parent backup of an incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// System identifier.
    pub system_id: u64,
    /// WAL segment size.
    pub wal_seg_size: u64,
    /// Timeline the backup started on.
    pub timeline: u32,
    /// Backup start LSN (`START WAL LOCATION`); a manifest whose LSN does not parse is refused
    /// when decoded, never read as 0/0.
    #[serde(deserialize_with = "lsn_text")]
    pub start_lsn: String,
    /// LSN the backup is consistent at (returned by the stop function); validated as `start_lsn`.
    #[serde(deserialize_with = "lsn_text")]
    pub stop_lsn: String,
    /// Wall-clock start.
    pub start_time: Timestamp,
    /// Wall-clock stop.
    pub stop_time: Timestamp,
    /// Content of `backup_label` to write into the restored PGDATA.
    pub backup_label: String,
    /// Content of `tablespace_map`, when there are tablespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_map: Option<String>,
    /// Tablespaces.
    #[serde(default)]
    pub tablespaces: Vec<ManifestTablespace>,
    /// Whether the cluster has data page checksums.
    pub data_checksums: bool,
    /// Directories.
    pub dirs: Vec<ManifestDir>,
    /// Files.
    pub files: Vec<ManifestFile>,
    /// Version of pitr that took the backup.
    pub pitr_version: String,
}

/// An LSN kept as its text, refused when it does not parse as one.
fn lsn_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match s.parse::<Lsn>() {
        Ok(_) => Ok(s),
        Err(_) => Err(serde::de::Error::custom(format!(
            "{s:?} is not an LSN (expected X/X in hexadecimal)"
        ))),
    }
}

impl BackupManifest {
    /// Start LSN, parsed (valid in every decoded manifest, see [`BackupManifest::start_lsn`]).
    pub fn start(&self) -> Lsn {
        self.start_lsn.parse().unwrap_or(Lsn::INVALID)
    }
    /// Stop (consistency) LSN, parsed.
    pub fn stop(&self) -> Lsn {
        self.stop_lsn.parse().unwrap_or(Lsn::INVALID)
    }
    /// Timeline.
    pub fn tli(&self) -> TimelineId {
        TimelineId(self.timeline)
    }
    /// Total original bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    /// Total stored bytes.
    pub fn stored_size(&self) -> u64 {
        self.files.iter().map(|f| f.stored_size).sum()
    }
}

impl ClusterRepo {
    /// Prefix of a backup's objects.
    pub fn backup_prefix(&self, label: &str) -> String {
        format!("{}/backup/{label}/", self.name())
    }

    /// Key of a backed-up file's object in backup `label`.
    pub fn backup_file_key(&self, label: &str, path: &str) -> String {
        format!("{}data/{path}", self.backup_prefix(label))
    }

    /// Key of bundle `id` of backup `label`.
    pub fn bundle_key(&self, label: &str, id: u64) -> String {
        format!("{}bundle/{id}", self.backup_prefix(label))
    }

    /// Key of the object holding `o` of file `path` (its own object, or its bundle).
    pub fn object_key(&self, o: &ObjectRef<'_>, path: &str) -> String {
        match o.bundle {
            Some(b) => self.bundle_key(o.label, b.id),
            None => self.backup_file_key(o.label, path),
        }
    }

    /// The stored frame of `o` (object of file `path`), read whole, or with one ranged read
    /// from its bundle; `None` when the object is absent or the bundle too short to hold it.
    pub async fn read_object(
        &self,
        o: &ObjectRef<'_>,
        path: &str,
    ) -> RepoResult<Option<bytes::Bytes>> {
        let key = self.object_key(o, path);
        let storage = self.repo().storage();
        Ok(match o.bundle {
            None => storage.get(&key).await?,
            Some(b) => {
                let end = b.offset.saturating_add(o.stored_size);
                storage
                    .get_range(&key, b.offset..end)
                    .await?
                    .filter(|got| got.len() as u64 == o.stored_size)
            }
        })
    }

    /// Key of a backup's manifest.
    pub fn manifest_key(&self, label: &str) -> String {
        format!("{}backup.json", self.backup_prefix(label))
    }

    /// Publishes a manifest, which marks the backup complete.
    pub async fn put_manifest(&self, m: &BackupManifest) -> RepoResult<()> {
        self.repo()
            .write_meta("backup", &self.manifest_key(&m.label), m, PutMode::Create)
            .await?;
        Ok(())
    }

    /// Reads one backup's manifest, verified; `None` if it does not exist (or is incomplete).
    pub async fn manifest(&self, label: &str) -> RepoResult<Option<BackupManifest>> {
        self.repo()
            .read_meta("backup", &self.manifest_key(label))
            .await
    }

    /// Labels of complete backups, oldest first: one delimiter listing of the backups (never
    /// their files), then each one's manifest looked for.
    pub async fn backup_labels(&self) -> RepoResult<Vec<String>> {
        let mut labels = Vec::new();
        for label in self.backup_dirs().await? {
            let key = self.manifest_key(&label);
            if self.repo().storage().head(&key).await?.is_some() {
                labels.push(label);
            }
        }
        Ok(labels)
    }

    /// Every label with a directory under `backup/`, complete or not (a backup in progress, one
    /// left by an interrupted expire, or one emptied moments ago on an object store that lists
    /// emptied folders for a while), sorted.
    pub async fn backup_dirs(&self) -> RepoResult<Vec<String>> {
        let prefix = format!("{}/backup/", self.name());
        Ok(self.repo().storage().list_dirs(&prefix).await?)
    }

    /// Every complete backup's manifest, oldest first.
    pub async fn backups(&self) -> RepoResult<Vec<BackupManifest>> {
        let mut out = Vec::new();
        for label in self.backup_dirs().await? {
            if let Some(m) = self.manifest(&label).await? {
                out.push(m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn manifest(start: &str, stop: &str) -> serde_json::Value {
        serde_json::json!({
            "label": "20261202T000000F", "kind": "full", "pg_major": 17, "system_id": 7,
            "wal_seg_size": 16777216, "timeline": 1, "start_lsn": start, "stop_lsn": stop,
            "start_time": "2026-12-02T00:00:00Z", "stop_time": "2026-12-02T00:00:01Z",
            "backup_label": "", "data_checksums": true, "dirs": [], "files": [],
            "pitr_version": "test"
        })
    }

    #[test]
    fn a_manifest_with_an_unparsable_lsn_is_refused_not_read_as_0_0() {
        let good: BackupManifest =
            serde_json::from_value(manifest("0/2000028", "0/2000100")).unwrap();
        assert_eq!(good.start().to_string(), "0/2000028");
        assert_eq!(good.stop().to_string(), "0/2000100");
        for (start, stop) in [
            ("garbage", "0/2000100"),
            ("0/2000028", ""),
            ("0/2000028", "1/2/3"),
        ] {
            let e = serde_json::from_value::<BackupManifest>(manifest(start, stop)).unwrap_err();
            assert!(e.to_string().contains("is not an LSN"), "{e}");
        }
    }
}
