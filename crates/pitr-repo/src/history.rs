//! The cluster's history: one metadata object per restore or drill, under
//! `<cluster>/history/<time>-<kind>-<token>.json`, written create-only (never overwritten) and
//! listed oldest first. The record's shape belongs to the engine that writes it (pitr-core).

use pitr_storage::PutMode;
use serde::{de::DeserializeOwned, Serialize};

use crate::{ClusterRepo, RepoResult};

/// The metadata kind of history records.
const KIND: &str = "history";

impl ClusterRepo {
    fn history_prefix(&self) -> String {
        format!("{}/history/", self.name())
    }

    /// Records one event. `at` sorts the records (an RFC 3339 UTC time); `kind` is a word such
    /// as `restore` or `drill`. Returns the record's key.
    pub async fn record_history<T: Serialize>(
        &self,
        at: &str,
        kind: &str,
        record: &T,
    ) -> RepoResult<String> {
        let stamp: String = at
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let token = blake3::hash(format!("{at}{kind}{}", std::process::id()).as_bytes())
            .to_hex()
            .to_string();
        let key = format!(
            "{}{stamp}-{kind}-{}.json",
            self.history_prefix(),
            token.get(..8).unwrap_or("0")
        );
        self.repo()
            .write_meta(KIND, &key, record, PutMode::Create)
            .await?;
        Ok(key)
    }

    /// Every record, oldest first.
    pub async fn history<T: DeserializeOwned>(&self) -> RepoResult<Vec<T>> {
        self.repo().read_metas(KIND, &self.history_prefix()).await
    }
}
