//! Key files and the repository's key object (`pitr.encryption`).
//!
//! A key file holds either **a raw key**, 64 hexadecimal digits (32 random bytes, e.g. from
//! `openssl rand -hex 32`), or **a passphrase**, any other non-empty text; one trailing newline
//! is ignored. Neither encrypts data directly: `pitr init` makes a random 32-byte *data key* and
//! stores it in `pitr.encryption` sealed (AES-256-GCM) under the *key-encryption key* derived
//! from the key file: the raw key itself, or Argon2id over the passphrase (RFC 9106's second
//! recommended setting: 64 MiB, 3 passes, 4 lanes; salt and parameters stored in the object).
//! A wrong key file fails that seal's authentication: the repository says "wrong key" before
//! reading anything else.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::seal::{random, DataKey, CHUNK};
use super::CryptError;

/// Key of the one object an encrypted repository stores in clear: how to check the key.
pub const KEYRING_KEY: &str = "pitr.encryption";
/// The data cipher recorded in the key object.
pub const CIPHER: &str = "aes-256-gcm";

/// Argon2id memory in KiB (64 MiB).
const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
const ARGON2_T: u32 = 3;
/// Argon2id lanes.
const ARGON2_P: u32 = 4;

/// The content of a key file, kept until the key object says how to use it.
pub struct KeyFile {
    path: PathBuf,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile").field("path", &self.path).finish()
    }
}

impl KeyFile {
    /// Reads a key file.
    pub fn read(path: &Path) -> Result<KeyFile, CryptError> {
        let bytes = std::fs::read(path).map_err(|source| CryptError::KeyFileRead {
            path: path.to_path_buf(),
            source,
        })?;
        KeyFile::from_bytes(path, bytes)
    }

    /// A key file's content (`path` is for messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<KeyFile, CryptError> {
        let mut secret = Zeroizing::new(bytes);
        for end in [b"\n".as_slice(), b"\r"] {
            if secret.ends_with(end) {
                let n = secret.len() - 1;
                secret.truncate(n);
            }
        }
        if secret.is_empty() {
            return Err(CryptError::KeyFileEmpty {
                path: path.to_path_buf(),
            });
        }
        Ok(KeyFile {
            path: path.to_path_buf(),
            secret,
        })
    }

    /// Where the key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw key, when the file holds 64 hexadecimal digits.
    fn raw(&self) -> Option<Zeroizing<[u8; 32]>> {
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(self.secret.as_slice(), k.as_mut_slice()).ok()?;
        Some(k)
    }
}

/// How the key file becomes the key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KekSpec {
    /// The key file holds the key (64 hex digits).
    Raw,
    /// Argon2id (version 0x13) over the key file's passphrase.
    Argon2id {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
        /// Salt, hex.
        salt: String,
    },
}

/// The content of `pitr.encryption` (a metadata object, kind `encryption`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyring {
    /// Data cipher ([`CIPHER`]).
    pub cipher: String,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u64,
    /// How the key file becomes the key-encryption key.
    pub kek: KekSpec,
    /// The data key sealed under the key-encryption key: nonce (12) | ciphertext (32) | tag
    /// (16), hex.
    pub wrapped_key: String,
    /// When the repository was made encrypted.
    pub created_at: Timestamp,
}

/// What can be shown of an encrypted repository's key object: no secret, no salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncryptionInfo {
    /// Data cipher ([`CIPHER`]).
    pub cipher: String,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u64,
    /// How the key file becomes the key-encryption key: `raw` (the file holds the key) or
    /// `argon2id` (over the passphrase in the file).
    pub kdf: &'static str,
    /// Argon2id's cost parameters, for `argon2id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<Argon2Cost>,
}

/// Argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Argon2Cost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl std::fmt::Display for EncryptionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {} KiB chunks, ",
            self.cipher,
            self.chunk_size >> 10
        )?;
        match self.argon2id {
            Some(c) => write!(
                f,
                "key from a passphrase by Argon2id (m={} KiB, t={}, p={})",
                c.m_kib, c.t, c.p
            ),
            None => f.write_str("raw 256-bit key (no KDF)"),
        }
    }
}

impl Keyring {
    /// What `pitr info` shows of this key object.
    pub fn info(&self) -> EncryptionInfo {
        let (kdf, argon2id) = match &self.kek {
            KekSpec::Raw => ("raw", None),
            KekSpec::Argon2id { m_kib, t, p, .. } => (
                "argon2id",
                Some(Argon2Cost {
                    m_kib: *m_kib,
                    t: *t,
                    p: *p,
                }),
            ),
        };
        EncryptionInfo {
            cipher: self.cipher.clone(),
            chunk_size: self.chunk_size,
            kdf,
            argon2id,
        }
    }

    /// A new data key, wrapped under `file`'s key: the key object to store and the data key.
    pub fn create(file: &KeyFile) -> Result<(Keyring, DataKey), CryptError> {
        let kek = match file.raw() {
            Some(_) => KekSpec::Raw,
            None => KekSpec::Argon2id {
                m_kib: ARGON2_M_KIB,
                t: ARGON2_T,
                p: ARGON2_P,
                salt: hex::encode(random::<16>()?),
            },
        };
        let mut ring = Keyring {
            cipher: CIPHER.to_string(),
            chunk_size: CHUNK as u64,
            kek,
            wrapped_key: String::new(),
            created_at: Timestamp::now(),
        };
        let dk = DataKey(random::<32>()?);
        let kek = ring.derive(file)?;
        let nonce = random::<12>()?;
        let sealed = Aes256Gcm::new(kek.as_ref().into())
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &dk.0,
                    aad: &ring.aad(),
                },
            )
            .map_err(|_| CryptError::Kdf("sealing the data key failed".into()))?;
        ring.wrapped_key = hex::encode([nonce.as_slice(), &sealed].concat());
        Ok((ring, dk))
    }

    /// The data key, if `file` holds this repository's key; `repo` is for messages.
    pub fn unwrap_key(&self, file: &KeyFile, repo: &str) -> Result<DataKey, CryptError> {
        if self.cipher != CIPHER || self.chunk_size != CHUNK as u64 {
            return Err(CryptError::Unsupported {
                repo: repo.to_string(),
                what: format!(
                    "cipher {:?}, chunks of {} bytes",
                    self.cipher, self.chunk_size
                ),
            });
        }
        let wrong = || CryptError::WrongKey {
            repo: repo.to_string(),
            path: file.path.clone(),
            form: match self.kek {
                KekSpec::Raw => "a raw key (64 hex digits)",
                KekSpec::Argon2id { .. } => "a passphrase",
            },
        };
        let kek = self.derive(file).map_err(|e| match e {
            CryptError::Kdf(_) => e,
            _ => wrong(),
        })?;
        let wrapped = hex::decode(&self.wrapped_key).map_err(|_| wrong())?;
        let (nonce, sealed) = wrapped.split_first_chunk::<12>().ok_or_else(wrong)?;
        let plain = Zeroizing::new(
            Aes256Gcm::new(kek.as_ref().into())
                .decrypt(
                    &Nonce::from(*nonce),
                    Payload {
                        msg: sealed,
                        aad: &self.aad(),
                    },
                )
                .map_err(|_| wrong())?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| wrong())?;
        Ok(DataKey(key))
    }

    /// What the data key's seal binds: the cipher and chunk size it is used with.
    fn aad(&self) -> Vec<u8> {
        format!("pitr.encryption v1|{}|{}", self.cipher, self.chunk_size).into_bytes()
    }

    /// The key-encryption key from `file`, as this key object says.
    fn derive(&self, file: &KeyFile) -> Result<Zeroizing<[u8; 32]>, CryptError> {
        match &self.kek {
            KekSpec::Raw => file.raw().ok_or(CryptError::NotRaw),
            KekSpec::Argon2id { m_kib, t, p, salt } => {
                let salt = hex::decode(salt).map_err(|e| CryptError::Kdf(e.to_string()))?;
                let params = argon2::Params::new(*m_kib, *t, *p, Some(32))
                    .map_err(|e| CryptError::Kdf(e.to_string()))?;
                let a2 = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = Zeroizing::new([0u8; 32]);
                a2.hash_password_into(&file.secret, &salt, out.as_mut_slice())
                    .map_err(|e| CryptError::Kdf(e.to_string()))?;
                Ok(out)
            }
        }
    }
}
