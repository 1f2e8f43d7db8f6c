//! The pitr repository format (v1): where each object lives and how it is framed.
//!
//! ```text
//! pitr.encryption                         only in an encrypted repository, in clear: the
//!                                         wrapped data key (see [`crypt`])
//! pitr.repository                         repository marker (metadata, kind "repository")
//! <cluster>/cluster.json                  identity: system identifier, major version, segment size
//! <cluster>/wal/<TLI>/<WAL file name>     framed WAL segment / .partial / .history / .backup
//! <cluster>/stream/<TLI>/<segment>.partial the segment `pitr stream` is receiving (see [`StreamPartial`])
//! ```
//! See `docs/repository-format.md` for the full description.

#![deny(clippy::indexing_slicing)] // parsers never panic on any input (STYLE rule 3)

pub mod backup;
pub mod block;
pub mod crypt;
pub mod error;
pub mod frame;
pub mod history;
pub mod lease;
pub mod meta;
mod partial;
pub mod pin;
pub mod stored;

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use pitr_pg::WalFileName;
use pitr_storage::{PutMode, PutOutcome, Storage};
use serde::{Deserialize, Serialize};

pub use backup::{
    BackupKind, BackupManifest, BundleRef, ManifestDir, ManifestFile, ManifestTablespace,
    BUNDLE_LIMIT,
};
pub use crypt::{CryptError, KeyFile};
pub use error::{RepoError, RepoResult};
pub use frame::{Checksum, Compression, FrameSummary};
pub use lease::{FoundLease, Lease, LeaseRecord};
pub use partial::StreamPartial;
pub use pin::Pin;

/// Repository format written by this version.
pub const REPO_FORMAT: u32 = 1;
/// Key of the repository marker.
pub const MARKER_KEY: &str = "pitr.repository";

/// What `mkfs` leaves in a new file system's root: an empty file system may become a repository.
const LOST_AND_FOUND: &str = "lost+found";

/// Content of the repository marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoMarker {
    /// Repository format.
    pub repo_format: u32,
    /// When the repository was created.
    pub created_at: Timestamp,
}

/// What a repository records about a cluster, fixed by its first segment or by `pitr init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// `pg_control`'s database system identifier.
    pub system_id: u64,
    /// PostgreSQL major version.
    pub pg_major: u32,
    /// WAL segment size in bytes.
    pub wal_seg_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterFile {
    #[serde(flatten)]
    identity: ClusterIdentity,
    created_at: Timestamp,
}

/// A repository on some storage.
#[derive(Debug, Clone)]
pub struct Repo {
    storage: Arc<dyn Storage>,
    /// The key object's description, when the repository is encrypted.
    encryption: Option<Arc<crypt::EncryptionInfo>>,
}

/// Outcome of storing a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalPut {
    /// Newly stored; `stored_len` bytes after compression.
    Stored {
        /// Checksum of the original bytes.
        summary: FrameSummary,
        /// Size in the repository.
        stored_len: u64,
    },
    /// An identical copy was already archived; nothing changed.
    Duplicate {
        /// Checksum of the original bytes.
        summary: FrameSummary,
    },
}

/// An archived WAL file as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// Its name.
    pub name: WalFileName,
    /// Size in the repository (compressed).
    pub stored_len: u64,
}

impl Repo {
    /// A repository on `storage`, taken as it is (see [`Repo::open`] for a checked one).
    pub fn new(storage: Arc<dyn Storage>) -> Repo {
        Repo {
            storage,
            encryption: None,
        }
    }

    /// A repository on `storage`, refusing a location that holds something else, and an
    /// encrypted repository (which needs [`Repo::open_with_key`]).
    ///
    /// What counts as a repository: a location with the marker ([`MARKER_KEY`]), or an empty
    /// one, which becomes a repository on first use. An empty file system's `lost+found` is
    /// nothing. Anything else (a data directory, a home directory, a mount point's parent…) is
    /// somebody else's: [`RepoError::NotARepository`], rather than scatter pitr's objects in it.
    /// A location that cannot be read is not judged here: the first real access reports it with
    /// the path and the user.
    pub async fn open(storage: Arc<dyn Storage>) -> RepoResult<Repo> {
        Repo::open_with_key(storage, None).await
    }

    /// Like [`Repo::open`], with the key file given (`--encryption-key-file`), if any.
    ///
    /// An encrypted repository needs its key ([`CryptError::MissingKey`],
    /// [`CryptError::WrongKey`]); an unencrypted one refuses a key
    /// ([`CryptError::UnexpectedKey`]); an empty location given a key becomes an encrypted
    /// repository (what `pitr init --encryption-key-file` does). Every object of an encrypted
    /// repository is then read and written through [`crypt::EncryptedStorage`].
    pub async fn open_with_key(
        storage: Arc<dyn Storage>,
        key: Option<&KeyFile>,
    ) -> RepoResult<Repo> {
        let repo = Repo::open_keyed(storage, key).await?;
        repo.check_location().await?;
        Ok(repo)
    }

    /// [`Repo::open_with_key`] without the check that the location is a repository (one
    /// request less on an object store: the marker's HEAD): the caller runs
    /// [`Repo::check_location`] before it writes anything, unless an object only pitr writes
    /// after that check (a cluster's identity, [`ClusterRepo::identity`]) already proves it.
    /// The encryption checks (key required, right key, no key for a plain repository) are
    /// made here all the same.
    pub async fn open_with_key_unchecked(
        storage: Arc<dyn Storage>,
        key: Option<&KeyFile>,
    ) -> RepoResult<Repo> {
        Repo::open_keyed(storage, key).await
    }

    async fn open_keyed(storage: Arc<dyn Storage>, key: Option<&KeyFile>) -> RepoResult<Repo> {
        let plain = Repo::new(storage.clone());
        let location = plain.location();
        let ring = plain.keyring().await?;
        let (dk, ring) = match (ring, key) {
            (Some(ring), Some(key)) => (ring.unwrap_key(key, &location)?, ring),
            (Some(_), None) => return Err(CryptError::MissingKey { repo: location }.into()),
            (None, None) => return Ok(plain),
            (None, Some(key)) => plain.make_encrypted(key).await?,
        };
        let sealed: Arc<dyn Storage> = Arc::new(crypt::EncryptedStorage::new(storage, dk));
        Ok(Repo {
            storage: sealed,
            encryption: Some(Arc::new(ring.info())),
        })
    }

    /// `Ok` unless the location holds something that is not a repository
    /// ([`RepoError::NotARepository`]).
    pub async fn check_location(&self) -> RepoResult<()> {
        if let Some(example) = self.foreign_entry().await {
            return Err(RepoError::NotARepository {
                location: self.location(),
                example,
            });
        }
        Ok(())
    }

    /// The key object, if the repository is encrypted.
    async fn keyring(&self) -> RepoResult<Option<crypt::Keyring>> {
        self.read_meta::<crypt::Keyring>("encryption", crypt::KEYRING_KEY)
            .await
    }

    /// Makes an empty location an encrypted repository keyed by `key` (a repository that
    /// already exists unencrypted refuses); safe against a concurrent first use.
    async fn make_encrypted(&self, key: &KeyFile) -> RepoResult<(crypt::DataKey, crypt::Keyring)> {
        let location = self.location();
        if self.storage.head(MARKER_KEY).await?.is_some() {
            return Err(CryptError::UnexpectedKey { repo: location }.into());
        }
        if let Some(example) = self.foreign_entry().await {
            return Err(RepoError::NotARepository { location, example });
        }
        let (ring, dk) = crypt::Keyring::create(key)?;
        let written = self
            .write_meta("encryption", crypt::KEYRING_KEY, &ring, PutMode::Create)
            .await?;
        if written == PutOutcome::Written {
            return Ok((dk, ring));
        }
        let ring = self
            .keyring()
            .await?
            .ok_or_else(|| CryptError::MissingKey {
                repo: location.clone(),
            })?;
        Ok((ring.unwrap_key(key, &location)?, ring))
    }

    /// Whether the repository is encrypted.
    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The cipher and key derivation of an encrypted repository (`None`: not encrypted).
    pub fn encryption(&self) -> Option<&crypt::EncryptionInfo> {
        self.encryption.as_deref()
    }

    /// An entry showing the location is not (and cannot become) a repository, if there is one.
    async fn foreign_entry(&self) -> Option<String> {
        if !matches!(self.storage.head(MARKER_KEY).await, Ok(None)) {
            return None; // the marker, or unreadable
        }
        // A location holds at most one lost+found and one key object: three entries are
        // enough to find another.
        let entries = self.storage.root_entries(3).await.ok()?;
        entries
            .into_iter()
            .find(|n| n != LOST_AND_FOUND && n != crypt::KEYRING_KEY)
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Where the repository is, for messages.
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// Reads the marker, writing it first if the repository is new. Refuses newer formats.
    pub async fn ensure_marker(&self) -> RepoResult<RepoMarker> {
        if let Some(m) = self.marker().await? {
            return Ok(m);
        }
        let m = RepoMarker {
            repo_format: REPO_FORMAT,
            created_at: Timestamp::now(),
        };
        let bytes = self.encode_meta("repository", &m)?;
        self.storage.put(MARKER_KEY, bytes, PutMode::Create).await?;
        Ok(self.marker().await?.unwrap_or(m))
    }

    /// Reads the marker, if any. Refuses newer formats.
    pub async fn marker(&self) -> RepoResult<Option<RepoMarker>> {
        let Some(m) = self
            .read_meta::<RepoMarker>("repository", MARKER_KEY)
            .await?
        else {
            return Ok(None);
        };
        if m.repo_format > REPO_FORMAT {
            return Err(RepoError::UnsupportedFormat {
                repo: self.location(),
                found: m.repo_format,
                supported: REPO_FORMAT,
            });
        }
        Ok(Some(m))
    }

    /// The part of the repository that belongs to cluster `name`.
    pub fn cluster(&self, name: &str) -> RepoResult<ClusterRepo> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid || name == MARKER_KEY {
            return Err(RepoError::BadClusterName(name.to_string()));
        }
        Ok(ClusterRepo {
            repo: self.clone(),
            name: name.to_string(),
        })
    }

    /// Clusters present in the repository: one delimiter listing of the top level (never every
    /// object), then each candidate's identity object.
    pub async fn clusters(&self) -> RepoResult<Vec<String>> {
        let mut out = Vec::new();
        for name in self.storage.list_dirs("").await? {
            // A directory emptied moments ago may still be listed: the identity decides.
            if self
                .storage
                .head(&format!("{name}/cluster.json"))
                .await?
                .is_some()
            {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn encode_meta<T: Serialize>(&self, kind: &str, body: &T) -> RepoResult<Bytes> {
        meta::encode(kind, body)
            .map(Bytes::from)
            .map_err(|source| RepoError::BadMeta {
                repo: self.location(),
                key: kind.to_string(),
                source,
            })
    }

    /// Reads and verifies a metadata object.
    pub async fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> RepoResult<Option<T>> {
        let Some(bytes) = self.storage.get(key).await? else {
            return Ok(None);
        };
        meta::decode(kind, &bytes)
            .map(Some)
            .map_err(|source| RepoError::BadMeta {
                repo: self.location(),
                key: key.to_string(),
                source,
            })
    }

    /// Every metadata object (`*.json`) under `prefix`, read and verified, in key order (one
    /// deleted between the listing and its read is skipped).
    pub async fn read_metas<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        prefix: &str,
    ) -> RepoResult<Vec<T>> {
        let mut keys: Vec<String> = self
            .storage
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(m) = self.read_meta(kind, &key).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Writes a metadata object atomically.
    pub async fn write_meta<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        body: &T,
        mode: PutMode,
    ) -> RepoResult<PutOutcome> {
        let bytes = self.encode_meta(kind, body)?;
        Ok(self.storage.put(key, bytes, mode).await?)
    }
}

/// One cluster's part of a repository.
#[derive(Debug, Clone)]
pub struct ClusterRepo {
    repo: Repo,
    name: String,
}

impl ClusterRepo {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    fn identity_key(&self) -> String {
        format!("{}/cluster.json", self.name)
    }

    /// Key of an archived WAL file.
    pub fn wal_key(&self, name: &WalFileName) -> String {
        format!("{}/wal/{}/{}", self.name, name.timeline().hex8(), name)
    }

    /// The recorded identity, if any.
    pub async fn identity(&self) -> RepoResult<Option<ClusterIdentity>> {
        Ok(self
            .repo
            .read_meta::<ClusterFile>("cluster", &self.identity_key())
            .await?
            .map(|f| f.identity))
    }

    /// Records `id` unless an identity is already recorded; returns the recorded identity (which
    /// the caller compares with its own). Safe against concurrent first pushes.
    pub async fn register(&self, id: &ClusterIdentity) -> RepoResult<ClusterIdentity> {
        if let Some(existing) = self.identity().await? {
            return Ok(existing);
        }
        self.repo.ensure_marker().await?;
        let file = ClusterFile {
            identity: id.clone(),
            created_at: Timestamp::now(),
        };
        self.repo
            .write_meta("cluster", &self.identity_key(), &file, PutMode::Create)
            .await?;
        Ok(self.identity().await?.unwrap_or_else(|| id.clone()))
    }

    /// Stores a WAL file durably. An identical copy already stored is a [`WalPut::Duplicate`]; a
    /// different one is [`RepoError::WalConflict`] and the stored copy is left untouched.
    pub async fn put_wal(
        &self,
        name: &WalFileName,
        data: &[u8],
        c: Compression,
    ) -> RepoResult<WalPut> {
        let (obj, summary) = frame::encode(data, c).map_err(|source| RepoError::Encode {
            what: name.to_string(),
            source,
        })?;
        self.put_wal_frame(name, obj, summary).await
    }

    /// Stores a WAL file already encoded as a frame (see [`frame::encode_file`]); otherwise
    /// exactly [`ClusterRepo::put_wal`].
    pub async fn put_wal_frame(
        &self,
        name: &WalFileName,
        obj: Vec<u8>,
        summary: FrameSummary,
    ) -> RepoResult<WalPut> {
        let key = self.wal_key(name);
        let stored_len = obj.len() as u64;
        match self
            .repo
            .storage
            .put(&key, Bytes::from(obj), PutMode::Create)
            .await?
        {
            PutOutcome::Written => Ok(WalPut::Stored {
                summary,
                stored_len,
            }),
            PutOutcome::AlreadyExists => {
                let stored = self.stored_summary(&key).await?;
                if stored == summary {
                    Ok(WalPut::Duplicate { summary })
                } else {
                    Err(RepoError::WalConflict {
                        name: *name,
                        stored: stored.checksum,
                        stored_len: stored.len,
                        new: summary.checksum,
                        new_len: summary.len,
                    })
                }
            }
        }
    }

    /// The summary in a stored frame's trailer: its header and trailer read by two ranged
    /// reads, whatever its size.
    async fn stored_summary(&self, key: &str) -> RepoResult<FrameSummary> {
        let corrupt = |source| RepoError::Corrupt {
            repo: self.repo.location(),
            key: key.to_string(),
            source,
        };
        let storage = &self.repo.storage;
        let size = storage.head(key).await?.map_or(0, |m| m.size);
        let trailer_at = size.saturating_sub(frame::TRAILER_LEN as u64);
        let header = storage.get_range(key, 0..frame::HEADER_LEN as u64).await?;
        let trailer = storage.get_range(key, trailer_at..size).await?;
        let (Some(h), Some(t)) = (header, trailer) else {
            return Err(corrupt(frame::FrameError::Truncated(0)));
        };
        let truncated = || {
            corrupt(frame::FrameError::Truncated(
                usize::try_from(size).unwrap_or(0),
            ))
        };
        if size < (frame::HEADER_LEN + frame::TRAILER_LEN) as u64 {
            return Err(truncated());
        }
        let h = h
            .first_chunk::<{ frame::HEADER_LEN }>()
            .ok_or_else(truncated)?;
        let t = t
            .first_chunk::<{ frame::TRAILER_LEN }>()
            .ok_or_else(truncated)?;
        frame::ends(h, t).map(|(_, s)| s).map_err(corrupt)
    }

    /// Reads an archived WAL file, verified; `None` when it is not archived.
    pub async fn get_wal(&self, name: &WalFileName) -> RepoResult<Option<Vec<u8>>> {
        let key = self.wal_key(name);
        let Some(obj) = self.repo.storage.get(&key).await? else {
            return Ok(None);
        };
        frame::decode(&obj)
            .map(Some)
            .map_err(|source| RepoError::Corrupt {
                repo: self.repo.location(),
                key,
                source,
            })
    }

    /// Decodes an archived WAL file into `out`, streaming and verified (length and checksum),
    /// with memory bounded by a few pieces whatever its size ([`stored`]); `None` when it is
    /// not archived. Returns `out` back (`None` only if the runtime shut down meanwhile). On
    /// error `out` may have received bytes: write to a temporary file and publish it only on
    /// success.
    pub async fn get_wal_into<W: std::io::Write + Send + 'static>(
        &self,
        name: &WalFileName,
        out: W,
    ) -> (Option<W>, RepoResult<Option<FrameSummary>>) {
        self.decode_object(&self.wal_key(name), out).await
    }

    /// Decodes the framed object `key` (written once, never replaced) into `out`, verified,
    /// with memory bounded by a few pieces whatever its size (see [`stored`]); `None` when it
    /// does not exist. Returns `out` back (`None` only if the runtime shut down meanwhile).
    pub async fn decode_object<W: std::io::Write + Send + 'static>(
        &self,
        key: &str,
        out: W,
    ) -> (Option<W>, RepoResult<Option<FrameSummary>>) {
        let (out, r) = stored::decode_stored(&self.repo.storage, key, out).await;
        let r = r.map_err(|e| match e {
            stored::StoredError::Storage(e) => RepoError::Storage(e),
            stored::StoredError::Frame(source) => RepoError::Corrupt {
                repo: self.repo.location(),
                key: key.to_string(),
                source,
            },
        });
        (out, r)
    }

    /// Decodes the framed object `key` into `out`, verified, from one whole-object read (for
    /// objects replaced while they may be read: the streamed `.partial`); `None` when it does
    /// not exist.
    pub(crate) async fn get_frame_into<W: std::io::Write>(
        &self,
        key: String,
        out: &mut W,
    ) -> RepoResult<Option<FrameSummary>> {
        let Some(obj) = self.repo.storage.get(&key).await? else {
            return Ok(None);
        };
        frame::decode_into(&obj, out)
            .map(Some)
            .map_err(|source| RepoError::Corrupt {
                repo: self.repo.location(),
                key,
                source,
            })
    }

    /// Every archived WAL file, sorted by timeline then name.
    pub async fn list_wal(&self) -> RepoResult<Vec<WalEntry>> {
        let prefix = format!("{}/wal/", self.name);
        let mut out: Vec<WalEntry> = self
            .repo
            .storage
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                let file = o.key.rsplit('/').next()?;
                let name = WalFileName::parse(file).ok()?;
                Some(WalEntry {
                    name,
                    stored_len: o.size,
                })
            })
            .collect();
        out.sort_by_key(|e| (e.name.timeline(), e.name.to_string()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pitr_storage::LocalFs;

    async fn open(dir: &std::path::Path) -> RepoResult<Repo> {
        Repo::open(Arc::new(LocalFs::open(dir).unwrap())).await
    }

    #[tokio::test]
    async fn empty_locations_and_marked_ones_are_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open(dir.path()).await.unwrap();
        repo.ensure_marker().await.unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        open(dir.path()).await.unwrap();

        // A fresh file system: only lost+found.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::create_dir(fresh.path().join("lost+found")).unwrap();
        open(fresh.path()).await.unwrap();
    }

    #[tokio::test]
    async fn a_location_holding_something_else_is_refused_naming_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), b"17\n").unwrap();
        let err = open(dir.path()).await.unwrap_err();
        match &err {
            RepoError::NotARepository { location, example } => {
                assert_eq!(location, &dir.path().display().to_string());
                assert_eq!(example, "PG_VERSION");
            }
            other => panic!("{other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("is not a pitr repository") && msg.contains("hint:"),
            "{msg}"
        );
    }
}
