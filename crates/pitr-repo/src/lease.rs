//! Leases: what a running backup, restore or verify uses, so that `expire` leaves it alone.
//!
//! A lease is one metadata object `<cluster>/lease/<id>.json` naming the backups its holder
//! reads or writes and the WAL it needs (from an LSN on, every timeline), with an expiry time.
//! The holder renews it (rewrites its own object) while it runs and deletes it when done; a
//! holder that crashed stops renewing and its lease simply expires. Nothing here needs `flock`
//! or any lock service: a lease is an ordinary object, so it works the same on a local disk and
//! on object storage. `expire` reads the leases, keeps what an unexpired one covers (with a
//! notice) and ignores expired ones. See `docs/repository-format.md`.
//!
//! Backup labels are reserved the same way, create-only: [`ClusterRepo::reserve_label`] puts
//! `<cluster>/backup/<label>/reserved.json` with `PutMode::Create`, so two backups started in
//! the same second never share a label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use pitr_storage::{PutMode, PutOutcome};
use serde::{Deserialize, Serialize};

use crate::{ClusterRepo, RepoResult};

const KIND: &str = "lease";
const RESERVATION: &str = "reservation";

/// How long a lease lasts unless renewed: long enough that a busy holder renews in time, short
/// enough that a crashed holder's lease is soon ignored.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// One lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// `backup`, `restore`, `verify`, …
    pub holder: String,
    /// OS user, host and process id of the holder, for people.
    pub by: String,
    /// When it was taken.
    pub taken: Timestamp,
    /// When it lapses unless renewed.
    pub expires: Timestamp,
    /// Backup labels the holder uses (an incremental's parents included).
    pub backups: Vec<String>,
    /// The holder needs archived WAL from this LSN on (every timeline), when it needs any.
    pub wal_from: Option<String>,
}

impl LeaseRecord {
    /// True while the lease holds at `now`.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        self.expires > now
    }
}

/// A lease found in the repository, with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundLease {
    /// Its object.
    pub key: String,
    /// What it says.
    pub record: LeaseRecord,
}

/// A lease this process holds: renewed in the background until [`Lease::release`] (or until
/// dropped, after which it lapses at its expiry).
pub struct Lease {
    key: String,
    repo: crate::Repo,
    record: Arc<Mutex<LeaseRecord>>,
    ttl: Duration,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

impl Lease {
    /// Its object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Widens what the lease covers: WAL from `lsn` on (when earlier than what it covered).
    pub async fn need_wal_from(&self, lsn: &str) -> RepoResult<()> {
        let record = {
            let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
            r.wal_from = Some(lsn.to_string());
            r.expires = expiry(Timestamp::now(), self.ttl);
            r.clone()
        };
        self.repo
            .write_meta(KIND, &self.key, &record, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Stops renewing and removes the lease.
    pub async fn release(mut self) -> RepoResult<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        self.repo.storage().delete(&self.key).await?;
        Ok(())
    }
}

impl Drop for Lease {
    /// Not released: stop renewing and remove it in the background when a runtime is there to
    /// do so (otherwise it lapses at its expiry).
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (storage, key) = (self.repo.storage().clone(), self.key.clone());
                rt.spawn(async move {
                    let _ = storage.delete(&key).await;
                });
            }
        }
    }
}

fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    format!("{user}@{host} pid {}", std::process::id())
}

fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(ttl)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl ClusterRepo {
    fn lease_prefix(&self) -> String {
        format!("{}/lease/", self.name())
    }

    /// Takes a lease for `holder` on `backups` and the WAL from `wal_from` on, lasting `ttl`,
    /// renewed every third of `ttl` while the returned [`Lease`] lives (needs a Tokio runtime).
    pub async fn take_lease(
        &self,
        holder: &str,
        backups: Vec<String>,
        wal_from: Option<String>,
        ttl: Duration,
    ) -> RepoResult<Lease> {
        let now = Timestamp::now();
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let token = blake3::hash(format!("{now} {} {n} {holder}", holder_id()).as_bytes());
        let key = format!(
            "{}{}-{holder}-{}.json",
            self.lease_prefix(),
            now.as_second(),
            token.to_hex().get(..16).unwrap_or("0")
        );
        let record = LeaseRecord {
            holder: holder.to_string(),
            by: holder_id(),
            taken: now,
            expires: expiry(now, ttl),
            backups,
            wal_from,
        };
        self.repo()
            .write_meta(KIND, &key, &record, PutMode::Create)
            .await?;
        let record = Arc::new(Mutex::new(record));
        let renewer = (!ttl.is_zero()).then(|| {
            let repo = self.repo().clone();
            let key = key.clone();
            let shared = record.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let record = {
                        let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
                        r.expires = expiry(Timestamp::now(), ttl);
                        r.clone()
                    };
                    if let Err(e) = repo
                        .write_meta(KIND, &key, &record, PutMode::Overwrite)
                        .await
                    {
                        tracing::warn!("cannot renew the lease {key}: {e}");
                    }
                }
            })
        });
        Ok(Lease {
            key,
            repo: self.repo().clone(),
            record,
            ttl,
            renewer,
        })
    }

    /// Every lease in the repository, expired or not (an unreadable one is skipped with a
    /// warning: a damaged lease must not stop `expire` from seeing the others).
    pub async fn leases(&self) -> RepoResult<Vec<FoundLease>> {
        let mut out = Vec::new();
        for o in self.repo().storage().list(&self.lease_prefix()).await? {
            if !o.key.ends_with(".json") {
                continue;
            }
            match self.repo().read_meta::<LeaseRecord>(KIND, &o.key).await {
                Ok(Some(record)) => out.push(FoundLease { key: o.key, record }),
                Ok(None) => {}
                Err(e) => tracing::warn!("ignoring the unreadable lease {}: {e}", o.key),
            }
        }
        Ok(out)
    }

    /// Removes a lease object (an expired one, left by a crashed holder).
    pub async fn remove_lease(&self, key: &str) -> RepoResult<()> {
        Ok(self.repo().storage().delete(key).await?)
    }

    /// Reserves `label` for a new backup with a create-only marker: `Ok(true)` when this call
    /// got it, `Ok(false)` when another backup holds it.
    pub async fn reserve_label(&self, label: &str) -> RepoResult<bool> {
        let key = format!("{}reserved.json", self.backup_prefix(label));
        let body = serde_json::json!({ "by": holder_id(), "at": Timestamp::now() });
        let outcome = self
            .repo()
            .write_meta(RESERVATION, &key, &body, PutMode::Create)
            .await?;
        Ok(outcome == PutOutcome::Written)
    }
}
