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
//! ```

use std::path::{Path, PathBuf};

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
    #[error("config file {path:?} is invalid: {message}")]
    Parse {
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
    let file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        message: e.message().to_string(),
    })?;
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
    Ok(g)
}
