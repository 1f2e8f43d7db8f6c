//! The TOML config file: the same names as the long options.
//!
//! ```toml
//! repo = "/var/lib/pitr/repo"
//! cluster = "main"
//! compress = "zstd"
//! encryption_key_file = "/etc/pitr/repo.key"   # an encrypted repository's key
//! pgdata = "/var/lib/postgresql/17/main"
//! host = "/var/run/postgresql"
//! port = 5432
//! retain_full = 2            # pitr expire: keep the newest 2 full backups
//! archive_async = true       # archive-push: a background worker pushes ahead (default)
//! archive_async_jobs = 4     # ... that many files at a time
//! archive_async_queue = 64   # ... at most that many ahead of PostgreSQL's requests
//! ```
//!
//! An S3 repository (credentials may also come from the environment, which wins):
//!
//! ```toml
//! repo = "s3://backups/pitr"
//! s3_endpoint = "https://minio.example:9000"
//! s3_region = "eu-west-1"
//! s3_ca_file = "/etc/pitr/ca.pem"
//! s3_retry_timeout = 60
//! s3_access_key_id = "AKIA…"
//! s3_secret_access_key = "…"
//! ```

use std::path::{Path, PathBuf};

use pitr_storage::S3Credentials;
use serde::Deserialize;

use crate::cli::GlobalArgs;

/// Default config file, read when it exists.
pub const DEFAULT_CONFIG: &str = "/etc/pitr/pitr.toml";

/// Keys of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    repo: Option<String>,
    cluster: Option<String>,
    compress: Option<String>,
    encryption_key_file: Option<PathBuf>,
    pgdata: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    dbname: Option<String>,
    retain_full: Option<u32>,
    retain_days: Option<u32>,
    archive_async: Option<bool>,
    archive_async_jobs: Option<usize>,
    archive_async_queue: Option<usize>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_ca_file: Option<PathBuf>,
    s3_retry_timeout: Option<u64>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_session_token: Option<String>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot be read.
    #[error("cannot read config file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML for pitr.
    #[error("config file {path:?} is invalid at line {line}, column {column}: {message}\n  {line} | {text}\nhint: see the example config in docs/user-guide.md")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column (1-based, in characters).
        column: usize,
        /// The line itself.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// Valid TOML, but settings that do not go together.
    #[error("config file {path:?} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Fills options not given on the command line or in the environment from the config file.
pub fn apply(mut g: GlobalArgs) -> Result<GlobalArgs, ConfigError> {
    let path = match &g.config {
        Some(p) => Some(p.clone()),
        None => Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG)),
    };
    let Some(path) = path else { return Ok(g) };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| parse_error(&path, &text, &e))?;
    g.repo = g.repo.or(file.repo);
    g.cluster = g.cluster.or(file.cluster);
    g.compress = g.compress.or(file.compress);
    g.encryption_key_file = g.encryption_key_file.or(file.encryption_key_file);
    g.pgdata = g.pgdata.or(file.pgdata);
    g.host = g.host.or(file.host);
    g.port = g.port.or(file.port);
    g.user = g.user.or(file.user);
    g.dbname = g.dbname.or(file.dbname);
    g.retain_full = g.retain_full.or(file.retain_full);
    g.retain_days = g.retain_days.or(file.retain_days);
    g.archive_async = g.archive_async.or(file.archive_async);
    g.archive_async_jobs = g.archive_async_jobs.or(file.archive_async_jobs);
    g.archive_async_queue = g.archive_async_queue.or(file.archive_async_queue);
    g.s3_endpoint = g.s3_endpoint.or(file.s3_endpoint);
    g.s3_region = g.s3_region.or(file.s3_region);
    g.s3_ca_file = g.s3_ca_file.or(file.s3_ca_file);
    g.s3_retry_timeout = g.s3_retry_timeout.or(file.s3_retry_timeout);
    g.s3_credentials = match (file.s3_access_key_id, file.s3_secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: file.s3_session_token,
        }),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid {
                path,
                message:
                    "s3_access_key_id and s3_secret_access_key go together: set both or neither"
                        .into(),
            })
        }
    };
    Ok(g)
}

/// A TOML error with the line and column it points at.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(0, |r| r.start).min(text.len());
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        text: text.lines().nth(line - 1).unwrap_or("").to_string(),
        message: e.message().trim().to_string(),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn a_toml_error_names_line_and_column() {
        let text = "repo = \"/r\"\ncluster = \"main\"\ncompress = zstd\n";
        let e = toml::from_str::<ConfigFile>(text)
            .err()
            .map(|e| parse_error(Path::new("/etc/pitr/pitr.toml"), text, &e));
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("at line 3, column 12"), "{msg}");
        assert!(msg.contains("3 | compress = zstd"), "{msg}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with_file(text: &str, g: GlobalArgs) -> Result<GlobalArgs, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pitr.toml");
        std::fs::write(&path, text).unwrap();
        apply(GlobalArgs {
            config: Some(path),
            ..g
        })
    }

    #[test]
    fn s3_keys_fill_what_flags_and_environment_left_unset() {
        let text = "repo = \"s3://bkt/p\"\ns3_endpoint = \"http://127.0.0.1:9000\"\n\
                    s3_region = \"eu-west-3\"\ns3_ca_file = \"/etc/pitr/ca.pem\"\n\
                    s3_retry_timeout = 7\ns3_access_key_id = \"AKID\"\n\
                    s3_secret_access_key = \"secret\"\n";
        let flag = GlobalArgs {
            s3_region: Some("us-west-2".into()),
            ..Default::default()
        };
        let g = with_file(text, flag).unwrap();
        assert_eq!(g.repo.as_deref(), Some("s3://bkt/p"));
        assert_eq!(g.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(g.s3_region.as_deref(), Some("us-west-2"), "the flag wins");
        assert_eq!(g.s3_ca_file, Some(PathBuf::from("/etc/pitr/ca.pem")));
        assert_eq!(g.s3_retry_timeout, Some(7));
        let creds = g.s3_credentials.unwrap();
        assert_eq!(creds.access_key_id, "AKID");
        assert_eq!(creds.secret_access_key, "secret");
        assert_eq!(creds.session_token, None);
    }

    #[test]
    fn a_key_id_without_its_secret_is_refused() {
        let e = with_file("s3_access_key_id = \"AKID\"\n", GlobalArgs::default()).unwrap_err();
        assert!(e.to_string().contains("s3_secret_access_key"), "{e}");
    }

    /// The example the Debian package installs as /etc/pitr/pitr.toml is a valid config file
    /// with the values its comments describe.
    #[test]
    fn the_packaged_example_config_is_valid() {
        let text = include_str!("../../../packaging/pitr.toml");
        let file: ConfigFile = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.repo.as_deref(), Some("/var/lib/pitr/repo"));
        assert_eq!(file.cluster.as_deref(), Some("main"));
        assert_eq!(file.port, Some(5432));
        assert_eq!(file.retain_full, Some(2));
        assert_eq!(file.retain_days, None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ConfigFile>("repo = \"/r\"\nretain = 2\n").unwrap_err();
        assert!(err.message().contains("unknown field `retain`"), "{err}");
    }
}
