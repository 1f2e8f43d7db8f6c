//! Metadata files: JSON that carries its own checksum.
//!
//! ```json
//! { "kind": "cluster", "format": 1, "blake3": "<hex>", "body": { ... } }
//! ```
//! `blake3` covers the compact, key-sorted serialisation of `body`, so a hand edit or a torn
//! write is detected on read. Metadata never contains floating-point numbers.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Current metadata format.
pub const META_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Envelope {
    kind: String,
    format: u32,
    blake3: String,
    body: serde_json::Value,
}

/// A metadata file that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Not JSON of the expected shape.
    #[error("not a pitr metadata file: {0}")]
    Malformed(String),
    /// Another kind of metadata.
    #[error("metadata of kind {found:?} where {expected:?} was expected")]
    WrongKind {
        /// Expected kind.
        expected: String,
        /// Kind found.
        found: String,
    },
    /// Written by a newer pitr.
    #[error("metadata format {0} is newer than this pitr understands (format {META_FORMAT}); upgrade pitr")]
    TooNew(u32),
    /// Content does not match its checksum.
    #[error("metadata checksum mismatch (edited by hand or damaged)")]
    Checksum,
}

fn canonical(body: &serde_json::Value) -> Vec<u8> {
    // serde_json::Value maps are sorted by key (BTreeMap), so this is canonical.
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k.clone(), sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(body)).unwrap_or_default()
}

/// Serialises `body` as metadata of `kind`.
pub fn encode<T: Serialize>(kind: &str, body: &T) -> Result<Vec<u8>, MetaError> {
    let body = serde_json::to_value(body).map_err(|e| MetaError::Malformed(e.to_string()))?;
    let env = Envelope {
        kind: kind.to_string(),
        format: META_FORMAT,
        blake3: blake3::hash(&canonical(&body)).to_hex().to_string(),
        body,
    };
    let mut out =
        serde_json::to_vec_pretty(&env).map_err(|e| MetaError::Malformed(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Parses and verifies metadata of `kind`.
pub fn decode<T: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<T, MetaError> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| MetaError::Malformed(e.to_string()))?;
    if env.kind != kind {
        return Err(MetaError::WrongKind {
            expected: kind.to_string(),
            found: env.kind,
        });
    }
    if env.format > META_FORMAT {
        return Err(MetaError::TooNew(env.format));
    }
    if blake3::hash(&canonical(&env.body)).to_hex().as_str() != env.blake3 {
        return Err(MetaError::Checksum);
    }
    serde_json::from_value(env.body).map_err(|e| MetaError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Body {
        system_id: u64,
        name: String,
    }

    /// Floats (history records hold seconds) survive the write/read round trip bit for bit,
    /// so the checksum over the re-serialized body matches (serde_json's default float parser
    /// may be off by one unit in the last place).
    #[test]
    fn floats_round_trip_exactly() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Timed {
            seconds: Vec<f64>,
        }
        let mut x = 0.1_f64;
        let mut seconds = Vec::new();
        for i in 0..2000 {
            x = (x * 1.618_033_988_749_895 + f64::from(i) * 0.000_123_456_789) % 97.0;
            seconds.push(x);
            seconds.push(1.0 / (f64::from(i) + 3.0));
        }
        let body = Timed { seconds };
        let bytes = encode("timed", &body).unwrap();
        let back: Timed = decode("timed", &bytes).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn round_trips_and_detects_edits() {
        let b = Body {
            system_id: u64::MAX - 3,
            name: "main".into(),
        };
        let bytes = encode("cluster", &b).unwrap();
        assert_eq!(decode::<Body>("cluster", &bytes).unwrap(), b);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let edited = text.replace("\"main\"", "\"mainx\"");
        assert_eq!(
            decode::<Body>("cluster", edited.as_bytes()),
            Err(MetaError::Checksum)
        );
        assert!(matches!(
            decode::<Body>("backup", &bytes),
            Err(MetaError::WrongKind { .. })
        ));
        assert!(matches!(
            decode::<Body>("cluster", &bytes[..bytes.len() / 2]),
            Err(MetaError::Malformed(_))
        ));
    }
}
