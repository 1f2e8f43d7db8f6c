//! Authenticated encryption of a whole repository.
//!
//! An encrypted repository stores one object in clear, [`KEYRING_KEY`] (`pitr.encryption`):
//! the cipher, how the key file becomes a key (raw key, or Argon2id over a passphrase), and the
//! repository's random data key sealed under it; enough to know that the repository is
//! encrypted and to check a key, nothing else. Every other object (WAL, backup files,
//! manifests, cluster identity, the marker) goes through [`EncryptedStorage`], which seals it
//! in 64 KiB AES-256-GCM chunks bound to the object's key, the chunk's index and whether it is
//! the last ([`seal`] has the byte layout). Object keys (WAL file names, backup labels, PGDATA
//! paths) and sizes stay visible.
//!
//! - `key`: key files and the key object;
//! - `seal`: the sealed object format;
//! - `storage`: the [`Storage`](pitr_storage::Storage) wrapper;
//! - `object`: ranged reads of one sealed object, one request per range.

mod key;
mod object;
pub mod seal;
mod storage;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use key::{Argon2Cost, EncryptionInfo, KekSpec, KeyFile, Keyring, CIPHER, KEYRING_KEY};
pub use object::{SealedFirst, SealedObject};
pub use seal::{DataKey, SealError};
pub use storage::EncryptedStorage;

/// A key that cannot be used, or a repository that needs another one.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The key file cannot be read.
    #[error("cannot read encryption key file {path:?}: {source}\nhint: check --encryption-key-file / PITR_ENCRYPTION_KEY and that the file is readable by this OS user")]
    KeyFileRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file is empty.
    #[error("encryption key file {path:?} is empty\nhint: put 64 hex digits (e.g. `openssl rand -hex 32 > {path:?}`) or a passphrase in it")]
    KeyFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The repository is encrypted and no key was given.
    #[error("repository {repo} is encrypted and no key was given\nhint: pass --encryption-key-file FILE or set PITR_ENCRYPTION_KEY=FILE (for archive_command and restore_command too)")]
    MissingKey {
        /// Repository location.
        repo: String,
    },
    /// The key given does not open the repository.
    #[error("the key in {path:?} does not open repository {repo} (wrong key; this repository's key file holds {form})\nhint: use the key file the repository was created with; without it the repository cannot be read")]
    WrongKey {
        /// Repository location.
        repo: String,
        /// The key file.
        path: PathBuf,
        /// What the repository's key file holds.
        form: &'static str,
    },
    /// The key file does not hold a raw key (internal: reported as [`CryptError::WrongKey`]).
    #[error("the key file does not hold 64 hex digits")]
    NotRaw,
    /// A key was given for a repository that is not encrypted.
    #[error("repository {repo} is not encrypted, but an encryption key was given\nhint: drop --encryption-key-file / PITR_ENCRYPTION_KEY for this repository; encryption is chosen when a repository is created (`pitr init --encryption-key-file FILE`) and cannot be added to an existing one")]
    UnexpectedKey {
        /// Repository location.
        repo: String,
    },
    /// The key object names something this pitr does not implement.
    #[error("repository {repo} is encrypted with {what}, which this pitr does not support\nhint: upgrade pitr")]
    Unsupported {
        /// Repository location.
        repo: String,
        /// What it names.
        what: String,
    },
    /// Key derivation failed.
    #[error("cannot derive the key-encryption key: {0}")]
    Kdf(String),
    /// Randomness or sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}
