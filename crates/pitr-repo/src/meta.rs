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

/// The envelope as written: `body` serialized straight from its type.
#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    kind: &'a str,
    format: u32,
    blake3: String,
    body: &'a T,
}

/// Canonical JSON (compact, every object's keys sorted, as [`canonical`] writes a
/// `serde_json::Value`) of the JSON text it is deserialized from, built without a `Value`
/// tree: a backup manifest of a million files is ~2.5 KB per file as a `Value` (twice, with
/// the sorted copy), ~0.3 KB as text.
struct Canon(Vec<u8>);

impl<'de> Deserialize<'de> for Canon {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Canon, D::Error> {
        d.deserialize_any(CanonVisitor)
    }
}

struct CanonVisitor;

impl CanonVisitor {
    fn json<E: serde::de::Error, V: Serialize + ?Sized>(v: &V) -> Result<Canon, E> {
        serde_json::to_vec(v).map(Canon).map_err(E::custom)
    }
}

impl<'de> serde::de::Visitor<'de> for CanonVisitor {
    type Value = Canon;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Canon, E> {
        Self::json(&v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Canon, E> {
        Self::json(&v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Canon, E> {
        Self::json(&v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Canon, E> {
        // As `serde_json::Value` holds it (a non-finite float is `null` there too).
        Self::json(&serde_json::Number::from_f64(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Canon, E> {
        Self::json(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Canon, E> {
        Ok(Canon(b"null".to_vec()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Canon, A::Error> {
        let mut out = vec![b'['];
        while let Some(Canon(e)) = seq.next_element()? {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&e);
        }
        out.push(b']');
        Ok(Canon(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Canon, A::Error> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some((k, Canon(v))) = map.next_entry::<String, Canon>()? {
            entries.push((k, v));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = vec![b'{'];
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&serde_json::to_vec(k).map_err(serde::de::Error::custom)?);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        Ok(Canon(out))
    }
}

/// Serialises `body` as metadata of `kind`.
pub fn encode<T: Serialize>(kind: &str, body: &T) -> Result<Vec<u8>, MetaError> {
    let malformed = |e: serde_json::Error| MetaError::Malformed(e.to_string());
    let blake3 = {
        let text = serde_json::to_vec(body).map_err(malformed)?;
        let Canon(canon) = serde_json::from_slice(&text).map_err(malformed)?;
        blake3::hash(&canon).to_hex().to_string()
    };
    let env = EnvelopeRef {
        kind,
        format: META_FORMAT,
        blake3,
        body,
    };
    let mut out = serde_json::to_vec_pretty(&env).map_err(malformed)?;
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

    /// The checksum written is the one over `serde_json::Value`'s canonical form, whatever the
    /// field order, escapes and numbers.
    #[test]
    fn canonical_text_matches_canonical_values() {
        #[derive(Serialize)]
        struct Odd {
            z: Vec<i64>,
            a: String,
            m: Option<u32>,
            b: std::collections::HashMap<String, f64>,
            nested: Vec<Body>,
        }
        let odd = Odd {
            z: vec![-3, 0, i64::MAX],
            a: "quote \" backslash \\ tab \t é \u{1}".into(),
            m: None,
            b: [("y".to_string(), 0.1), ("x".to_string(), 1e300)].into(),
            nested: vec![Body {
                system_id: u64::MAX,
                name: "n".into(),
            }],
        };
        let value = serde_json::to_value(&odd).unwrap();
        let text = serde_json::to_vec(&odd).unwrap();
        let Canon(canon) = serde_json::from_slice(&text).unwrap();
        assert_eq!(canon, canonical(&value));
        let env: Envelope = serde_json::from_slice(&encode("odd", &odd).unwrap()).unwrap();
        assert_eq!(
            env.blake3,
            blake3::hash(&canonical(&value)).to_hex().as_str()
        );
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
