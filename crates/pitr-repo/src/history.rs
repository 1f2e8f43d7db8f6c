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
        let mut keys: Vec<String> = self
            .repo()
            .storage()
            .list(&self.history_prefix())
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(r) = self.repo().read_meta(KIND, &key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }
}
