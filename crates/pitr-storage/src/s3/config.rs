//! Where an S3 repository is and how to reach it: the settings the CLI fills from `--repo
//! s3://bucket/prefix`, flags, the environment and the TOML configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::{RemoteFailure, StorageError, StorageResult};

/// The region used when neither the configuration nor the environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Size of each multipart part, and the largest object an upload sends as one PUT.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;

/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// How long the driver keeps retrying a failing request (5xx, 429, connection errors, timeouts
/// of idempotent requests) before giving up: long enough to ride out a server restart or a
/// throttling burst, short enough that `archive_command` / `restore_command` report trouble to
/// PostgreSQL within about a minute.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time for one HTTP request, body included: a 16 MiB part at 150 kB/s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Static credentials given in the configuration (otherwise the environment's are used).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Everything the S3 driver needs. Fields left `None` fall back to the environment, then to
/// the defaults above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Key prefix of the repository inside the bucket, `/`-separated, without leading or
    /// trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// The endpoint URL (`https://minio.example:9000`); `None`: `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, then AWS
    /// itself. With an endpoint, requests use path-style addressing (`endpoint/bucket/key`);
    /// an `http://` endpoint allows plain HTTP.
    pub endpoint: Option<String>,
    /// The region; `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, then [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Static credentials; `None`: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`, then the provider chain (web identity, container, instance
    /// metadata).
    pub credentials: Option<S3Credentials>,
    /// A PEM file of CA certificates trusted instead of the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Retry budget per request: see [`DEFAULT_RETRY_TIMEOUT`].
    pub retry_timeout: Duration,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Multipart part size (at least [`MIN_PART_SIZE`]); an upload holds at most one part in
    /// memory, and an upload no larger than this is sent as a single PUT.
    pub part_size: usize,
}

impl S3Config {
    /// Settings for `s3://bucket[/prefix][/]`, everything else left to the environment and
    /// the defaults.
    pub fn from_url(url: &str) -> StorageResult<S3Config> {
        let bad = |why: &str| config_error(url, why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("the repository URL must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket_name(bucket) {
            return Err(bad(
                "the bucket name must be 3-63 characters of a-z, 0-9, '.' and '-'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && crate::validate_key(prefix).is_err() {
            return Err(bad(
                "the prefix must not contain empty, '.' or '..' segments",
            ));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            credentials: None,
            ca_file: None,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The endpoint requests go to: the configured one, `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, or `None` (AWS).
    pub fn effective_endpoint(&self) -> Option<String> {
        self.endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
            .or_else(|| env_nonempty("AWS_ENDPOINT"))
            .map(|e| e.trim_end_matches('/').to_string())
    }

    /// The region requests are signed for.
    pub fn effective_region(&self) -> String {
        self.region
            .clone()
            .or_else(|| env_nonempty("AWS_REGION"))
            .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_string())
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// S3's bucket naming rules, loosely: what a URL can carry unambiguously.
fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && !b.starts_with(['.', '-'])
        && !b.ends_with(['.', '-'])
}

/// A configuration error about `what` (a URL, a file).
pub(crate) fn config_error(what: &str, why: &str) -> StorageError {
    StorageError::Remote {
        op: "configure",
        object: what.to_string(),
        endpoint: "-".to_string(),
        failure: RemoteFailure::Config,
        detail: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let c = S3Config::from_url("s3://my-bucket/a/b/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(c.url(), "s3://my-bucket/a/b");
        let c = S3Config::from_url("s3://bkt").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bkt", ""));
        assert_eq!(c.part_size, DEFAULT_PART_SIZE);
    }

    #[test]
    fn refuses_malformed_urls_with_a_hint() {
        for bad in [
            "/var/repo",
            "s3://",
            "s3://ab",
            "s3://Upper/x",
            "s3://b_k/x",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
        ] {
            let e = S3Config::from_url(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(bad) && msg.contains("hint:"), "{msg}");
            assert_eq!(e.remote_failure(), Some(RemoteFailure::Config));
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let creds = S3Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("very-secret") && !shown.contains("token-secret"));
    }
}
