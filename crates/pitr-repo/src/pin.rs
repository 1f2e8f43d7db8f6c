//! Pinned backups: one metadata object per pinned backup, `<cluster>/pins/<label>.json`, that
//! `expire` reads and never removes a pinned backup (nor its parents, nor the WAL from its start
//! on). A separate object rather than a field of the manifest: manifests are written once and
//! never rewritten, and a pin is a plain atomic put or delete on every storage (local, S3,
//! encrypted like every other object).

use pitr_storage::PutMode;
use serde::{Deserialize, Serialize};

use crate::{ClusterRepo, RepoResult};

/// The metadata kind of pins.
const KIND: &str = "pin";

/// One pinned backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The backup's label.
    pub label: String,
    /// When it was pinned (RFC 3339, UTC).
    pub pinned_at: String,
    /// Who pinned it (`user@host`).
    pub by: String,
    /// Why: `pin` (the command) or `backup --keep`.
    pub how: String,
}

impl ClusterRepo {
    fn pins_prefix(&self) -> String {
        format!("{}/pins/", self.name())
    }

    /// The key of `label`'s pin.
    pub fn pin_key(&self, label: &str) -> String {
        format!("{}{label}.json", self.pins_prefix())
    }

    /// Pins a backup (atomically; pinning again replaces the record).
    pub async fn put_pin(&self, pin: &Pin) -> RepoResult<()> {
        self.repo()
            .write_meta(KIND, &self.pin_key(&pin.label), pin, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// `label`'s pin, if pinned.
    pub async fn pin(&self, label: &str) -> RepoResult<Option<Pin>> {
        self.repo().read_meta(KIND, &self.pin_key(label)).await
    }

    /// Removes `label`'s pin; `false` when it was not pinned.
    pub async fn remove_pin(&self, label: &str) -> RepoResult<bool> {
        let key = self.pin_key(label);
        if self.repo().storage().head(&key).await?.is_none() {
            return Ok(false);
        }
        self.repo().storage().delete(&key).await?;
        Ok(true)
    }

    /// Every pin, by label.
    pub async fn pins(&self) -> RepoResult<Vec<Pin>> {
        self.repo().read_metas(KIND, &self.pins_prefix()).await
    }
}
