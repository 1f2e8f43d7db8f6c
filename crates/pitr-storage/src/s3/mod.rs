//! The S3 driver: a repository in a bucket (under a key prefix) of any S3-compatible store,
//! on object_store's `AmazonS3`.
//!
//! How each promise of [`Storage`] is kept:
//! - `put(Create)` is one PUT with `If-None-Match: *`: the store publishes it only if the key
//!   is free, atomically against concurrent writers (`412` → `AlreadyExists`).
//! - Uploads stream in parts of [`S3Config::part_size`]: no larger than a part, an object is
//!   one (conditional) PUT; larger, a multipart upload whose completion is conditional for
//!   `Create` (see [`upload`]). Nothing is visible before `finish`.
//! - Reads: ranged GETs; `None` only for a 404 on the key, never for a missing bucket, which
//!   [`S3Storage::open`] checks (a HEAD on a missing bucket's key has no body to tell).
//! - Listing: ListObjectsV2, 1,000 keys a page, followed to the end; `list_dirs` uses the `/`
//!   delimiter. Deletion: one DeleteObjects request per 1,000 keys.
//! - Failures: 5xx, 429, connection errors and timeouts of idempotent requests are retried
//!   with exponential backoff and jitter for [`S3Config::retry_timeout`]; every remaining
//!   failure is a [`StorageError::Remote`] with its [`RemoteFailure`] class and a hint.

mod config;
mod count;
mod error;
mod upload;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, S3ConditionalPut,
};
use object_store::client::{HttpClient, HttpConnector};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload, RetryConfig, StaticCredentialProvider,
};

pub use config::{
    S3Config, S3Credentials, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PART_SIZE, DEFAULT_REGION,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_TIMEOUT, MIN_PART_SIZE,
};

use crate::{
    validate_key, validate_prefix, ObjectMeta, PutMode, PutOutcome, RemoteFailure, Storage,
    StorageError, StorageResult, Upload,
};
use config::config_error;
use error::{classify, remote, Class};

/// A repository in an S3 bucket; cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Storage {
    inner: Arc<S3Inner>,
}

/// What every request and upload shares.
#[derive(Debug)]
pub(crate) struct S3Inner {
    store: AmazonS3,
    /// The same client settings as `store`'s, for the one request object_store cannot make
    /// (the conditional multipart completion).
    http: HttpClient,
    cfg: S3Config,
    /// The endpoint, for messages.
    endpoint: String,
    /// The repository's key prefix with a trailing `/`, or empty.
    root: String,
    /// HTTP requests sent so far (every attempt).
    sent: Arc<AtomicU64>,
}

impl S3Storage {
    /// A driver for `cfg`; makes no request (see [`S3Storage::open`]).
    pub fn new(cfg: S3Config) -> StorageResult<S3Storage> {
        if cfg.part_size < MIN_PART_SIZE {
            return Err(config_error(
                &cfg.url(),
                &format!("the part size must be at least {MIN_PART_SIZE} bytes"),
            ));
        }
        let endpoint = cfg.effective_endpoint();
        let options = client_options(&cfg, endpoint.as_deref())?;
        let sent = Arc::new(AtomicU64::new(0));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(10),
                base: 2.0,
            },
            // The time budget is the bound, not the count.
            max_retries: 1000,
            retry_timeout: cfg.retry_timeout,
        };
        // The environment supplies credentials (and the provider chain) and extra settings such
        // as server-side encryption; everything pitr decides is set explicitly after it.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(cfg.effective_region())
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .with_client_options(options.clone())
            .with_http_connector(count::CountingConnector { sent: sent.clone() });
        builder = match &endpoint {
            Some(ep) => builder
                .with_endpoint(ep)
                .with_config(AmazonS3ConfigKey::S3Endpoint, ep)
                .with_virtual_hosted_style_request(false),
            None => builder.with_virtual_hosted_style_request(true),
        };
        if let Some(c) = &cfg.credentials {
            builder =
                builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: c.access_key_id.clone(),
                    secret_key: c.secret_access_key.clone(),
                    token: c.session_token.clone(),
                })));
        }
        let url = cfg.url();
        let store = builder
            .build()
            .map_err(|e| config_error(&url, &e.to_string()))?;
        let http = count::CountingConnector { sent: sent.clone() }
            .connect(&options)
            .map_err(|e| config_error(&url, &e.to_string()))?;
        let root = if cfg.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", cfg.prefix)
        };
        let endpoint = endpoint.unwrap_or_else(|| "AWS S3".to_string());
        Ok(S3Storage {
            inner: Arc::new(S3Inner {
                store,
                http,
                cfg,
                endpoint,
                root,
                sent,
            }),
        })
    }

    /// A driver for `cfg`, after checking that the bucket exists and the credentials may list
    /// it: a misconfiguration fails here with its class and hint rather than later as a
    /// puzzling error (or, for a HEAD on a missing bucket, as a false "absent").
    pub async fn open(cfg: S3Config) -> StorageResult<S3Storage> {
        let s = S3Storage::new(cfg)?;
        s.check().await?;
        Ok(s)
    }

    /// One listing of at most one key under the repository's prefix.
    pub async fn check(&self) -> StorageResult<()> {
        let s3 = &self.inner;
        let prefix = (!s3.root.is_empty()).then_some(s3.root.as_str());
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        s3.store
            .list_paginated(prefix, opts)
            .await
            .map_err(|e| s3.fail("list", "", &e))?;
        Ok(())
    }

    /// How many HTTP requests this driver has sent (each attempt of a retried one included).
    pub fn requests_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// The configuration this driver was built from.
    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }
}

/// Files a backup or restore has in flight at least: a request to an object store mostly waits
/// (a round trip per small file), so a few per core keep the cores busy. Bounded memory: an
/// upload holds at most one part.
const REQUESTS_IN_FLIGHT: usize = 8;

/// Makes ring the process's TLS crypto (as for the PostgreSQL connections), once. Left alone,
/// reqwest picks aws-lc-rs, whose first random number seeds a CPU-jitter entropy source: about
/// 30 ms of CPU in every process that opens an https S3 repository, each archive-push included.
fn use_ring_for_tls() {
    // Already installed (by an earlier call or the embedding program): keep that one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// HTTP client settings: timeouts, extra CA certificates, plain HTTP for http:// endpoints.
fn client_options(cfg: &S3Config, endpoint: Option<&str>) -> StorageResult<ClientOptions> {
    use_ring_for_tls();
    let mut options = ClientOptions::new()
        .with_connect_timeout(cfg.connect_timeout)
        .with_timeout(cfg.request_timeout)
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        .with_user_agent(http::HeaderValue::from_static(concat!(
            "pitr/",
            env!("CARGO_PKG_VERSION")
        )));
    if let Some(file) = &cfg.ca_file {
        let what = file.display().to_string();
        let pem = std::fs::read(file)
            .map_err(|e| config_error(&what, &format!("cannot read the CA file: {e}")))?;
        let certs = Certificate::from_pem_bundle(&pem)
            .map_err(|e| config_error(&what, &format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(config_error(&what, "no certificate in the CA file"));
        }
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
        // The private CA replaces the system's roots (as curl's --cacert and pgBackRest's
        // repo-storage-ca-file do): loading those reads and parses every file of
        // /etc/ssl/certs (about 290 here) in every process, archive-push included.
        options = options.with_no_system_certificates(true);
    }
    Ok(options)
}

impl S3Inner {
    /// The object_store path of `key`.
    fn path(&self, key: &str) -> StorageResult<Path> {
        validate_key(key)?;
        Path::parse(format!("{}{key}", self.root))
            .map_err(|_| StorageError::InvalidKey(key.to_string()))
    }

    /// `s3://bucket/prefix/key`, for messages.
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.cfg.bucket, self.root)
    }

    /// The error for a failed `op` on `key`.
    fn fail(&self, op: &'static str, key: &str, e: &object_store::Error) -> StorageError {
        let (failure, detail) = match classify(e) {
            Class::Failure(f, d) => (f, d),
            // Absence, a conflict or a range error where the operation does not expect one.
            _ => (RemoteFailure::Other, e.to_string()),
        };
        remote(op, self.url(key), &self.endpoint, failure, detail)
    }

    /// An error that is the driver's own (a misuse, an impossible state).
    fn internal(&self, op: &'static str, key: &str, why: &str) -> StorageError {
        remote(
            op,
            self.url(key),
            &self.endpoint,
            RemoteFailure::Other,
            why.to_string(),
        )
    }

    /// One PUT, conditional for `Create`.
    async fn put(
        &self,
        key: &str,
        path: &Path,
        data: Bytes,
        mode: PutMode,
    ) -> StorageResult<PutOutcome> {
        let opts = PutOptions {
            mode: match mode {
                PutMode::Create => object_store::PutMode::Create,
                PutMode::Overwrite => object_store::PutMode::Overwrite,
            },
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => match classify(&e) {
                Class::Exists if mode == PutMode::Create => Ok(PutOutcome::AlreadyExists),
                _ => Err(self.fail("put", key, &e)),
            },
        }
    }

    /// Whether an object exists under `key`.
    async fn exists(&self, key: &str, path: &Path) -> StorageResult<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(false),
                _ => Err(self.fail("stat", key, &e)),
            },
        }
    }

    /// Every page of a listing of the raw key prefix `prefix` (bucket-relative).
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: bool,
    ) -> StorageResult<Vec<object_store::ListResult>> {
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let opts = PaginatedListOptions {
                delimiter: delimiter.then_some(std::borrow::Cow::Borrowed("/")),
                page_token: token.take(),
                ..Default::default()
            };
            let page = self
                .store
                .list_paginated((!prefix.is_empty()).then_some(prefix), opts)
                .await
                .map_err(|e| {
                    self.fail(
                        "list",
                        prefix.strip_prefix(&self.root).unwrap_or(prefix),
                        &e,
                    )
                })?;
            pages.push(page.result);
            match page.page_token {
                Some(t) => token = Some(t),
                None => return Ok(pages),
            }
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        self.inner.cfg.url()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<PutOutcome> {
        let path = self.inner.path(key)?;
        self.inner.put(key, &path, data, mode).await
    }

    async fn upload(&self, key: &str) -> StorageResult<Box<dyn Upload>> {
        let path = self.inner.path(key)?;
        Ok(Box::new(upload::S3Upload::new(
            Arc::clone(&self.inner),
            key,
            path,
        )))
    }

    fn requests_in_flight(&self) -> usize {
        REQUESTS_IN_FLIGHT
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Bytes>> {
        let s3 = &self.inner;
        let path = s3.path(key)?;
        match s3.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| s3.fail("get", key, &e)),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(None),
                _ => Err(s3.fail("get", key, &e)),
            },
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        let s3 = &self.inner;
        let path = s3.path(key)?;
        if range.start >= range.end {
            // HTTP cannot ask for nothing: answer from the metadata.
            return Ok(s3.exists(key, &path).await?.then(Bytes::new));
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        match s3.store.get_opts(&path, opts).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| s3.fail("get", key, &e)),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(None),
                // The range starts at or past the end: clamped, that is nothing.
                Class::RangeBeyondEnd => Ok(Some(Bytes::new())),
                _ => Err(s3.fail("get", key, &e)),
            },
        }
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let s3 = &self.inner;
        let path = s3.path(key)?;
        match s3.store.head(&path).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.size,
            })),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(None),
                _ => Err(s3.fail("stat", key, &e)),
            },
        }
    }

    async fn modified(&self, key: &str) -> StorageResult<Option<std::time::SystemTime>> {
        let s3 = &self.inner;
        let path = s3.path(key)?;
        match s3.store.head(&path).await {
            Ok(m) => Ok(Some(std::time::SystemTime::from(m.last_modified))),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(None),
                _ => Err(s3.fail("stat", key, &e)),
            },
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let s3 = &self.inner;
        let full = format!("{}{prefix}", s3.root);
        let mut out: Vec<ObjectMeta> = s3
            .list_pages(&full, false)
            .await?
            .into_iter()
            .flat_map(|page| page.objects)
            .filter_map(|o| {
                let key = o.location.as_ref().strip_prefix(&s3.root)?.to_string();
                Some(ObjectMeta { key, size: o.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn root_entries(&self, limit: usize) -> StorageResult<Vec<String>> {
        let s3 = &self.inner;
        let mut names = Vec::new();
        for page in s3.list_pages(&s3.root, true).await? {
            let objects = page.objects.into_iter().map(|o| o.location.to_string());
            let dirs = page.common_prefixes.into_iter().map(|p| p.to_string());
            names.extend(objects.chain(dirs).filter_map(|full| {
                let rest = full.strip_prefix(&s3.root)?.trim_end_matches('/');
                (!rest.is_empty()).then(|| rest.to_string())
            }));
            if names.len() >= limit {
                break;
            }
        }
        names.truncate(limit);
        Ok(names)
    }

    async fn list_dirs(&self, prefix: &str) -> StorageResult<Vec<String>> {
        validate_prefix(prefix)?;
        let s3 = &self.inner;
        let full = format!("{}{prefix}", s3.root);
        let mut dirs: Vec<String> = s3
            .list_pages(&full, true)
            .await?
            .into_iter()
            .flat_map(|page| page.common_prefixes)
            .filter_map(|p| {
                let rest = p.as_ref().strip_prefix(&full)?.trim_end_matches('/');
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let s3 = &self.inner;
        let path = s3.path(key)?;
        match s3.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => match classify(&e) {
                Class::Absent => Ok(()),
                _ => Err(s3.fail("delete", key, &e)),
            },
        }
    }

    async fn delete_many(&self, keys: &[String]) -> StorageResult<()> {
        let s3 = &self.inner;
        let paths = keys
            .iter()
            .map(|k| s3.path(k))
            .collect::<StorageResult<Vec<Path>>>()?;
        // object_store sends one DeleteObjects request per 1,000 keys.
        let results: Vec<object_store::Result<Path>> = s3
            .store
            .delete_stream(futures_util::stream::iter(paths.into_iter().map(Ok)).boxed())
            .into_stream()
            .collect()
            .await;
        for r in results {
            if let Err(e) = r {
                if classify(&e) != Class::Absent {
                    return Err(s3.fail("delete", "", &e));
                }
            }
        }
        Ok(())
    }
}
