//! Block-level incremental files: a relation file of an incremental backup is stored as the
//! pages that changed since the parent backup started, and rebuilt from its layers on restore.
//!
//! A block file's manifest entry ([`BlockLayers`]) names a whole-file *base* object (stored by
//! some full or file-level backup of the chain) and the *deltas* stored by each incremental
//! since, oldest first. A delta object is one frame holding the included pages in block order;
//! its [`PageMap`] says which block each page is. Rebuilding streams the base, puts the newest
//! delta's copy of each page in place of the older ones, appends pages beyond the base, and
//! stops at the file's recorded size (so a truncated relation is truncated).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::frame::{self, Checksum, FrameError};

/// Which blocks a delta holds: sorted, disjoint inclusive ranges, written `0-3,7,9-12`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PageMap(Vec<(u32, u32)>);

impl PageMap {
    /// Appends `blk`, which must be greater than every block already in the map.
    pub fn push(&mut self, blk: u32) {
        match self.0.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(blk) => *end = blk,
            _ => self.0.push((blk, blk)),
        }
    }
    /// Number of pages.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
    }
    /// Whether no page is in the map.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The blocks, ascending.
    pub fn blocks(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|&(a, b)| a..=b)
    }
}

impl fmt::Display for PageMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for PageMap {
    type Err = String;
    fn from_str(s: &str) -> Result<PageMap, String> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        if s.is_empty() {
            return Ok(PageMap(out));
        }
        for part in s.split(',') {
            let bad = || format!("page map {s:?}: {part:?} is not a block or a range of blocks");
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                None => {
                    let a: u32 = part.parse().map_err(|_| bad())?;
                    (a, a)
                }
            };
            if a > b || out.last().is_some_and(|&(_, e)| e >= a) {
                return Err(format!(
                    "page map {s:?}: ranges are not ascending and disjoint"
                ));
            }
            out.push((a, b));
        }
        Ok(PageMap(out))
    }
}

impl TryFrom<String> for PageMap {
    type Error = String;
    fn try_from(s: String) -> Result<PageMap, String> {
        s.parse()
    }
}

impl From<PageMap> for String {
    fn from(m: PageMap) -> String {
        m.to_string()
    }
}

/// The whole-file object a block file starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBase {
    /// Backup whose `data/` holds the object.
    pub label: String,
    /// Original size of the object.
    pub size: u64,
    /// BLAKE3 of the object's content.
    pub blake3: String,
    /// Stored size of the object.
    pub stored_size: u64,
}

/// The pages one incremental backup stored for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDelta {
    /// Backup whose `data/` holds the delta object (at the file's own path).
    pub label: String,
    /// The blocks, in the order their pages follow each other in the object.
    pub pages: PageMap,
    /// BLAKE3 of the object's content (the pages, concatenated).
    pub blake3: String,
    /// Stored size of the object.
    pub stored_size: u64,
}

/// How a file of a block-level incremental backup is rebuilt: base, then deltas oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockLayers {
    /// Page size (from pg_control).
    pub block_size: u32,
    /// Blocks per relation segment file (from pg_control), to number pages within the relation.
    pub relseg_size: u32,
    /// The whole-file object.
    pub base: BlockBase,
    /// The deltas, oldest first (newest page wins).
    pub deltas: Vec<BlockDelta>,
}

/// One object a file of a backup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    /// Backup whose `data/` holds it.
    pub label: &'a str,
    /// Original length.
    pub size: u64,
    /// BLAKE3 of the content.
    pub blake3: &'a str,
    /// Stored size.
    pub stored_size: u64,
    /// Where in a bundle of `label` the object lies, when it is a bundle member (a whole-file
    /// object only: block bases and deltas are never bundled).
    pub bundle: Option<crate::backup::BundleRef>,
}

impl BlockLayers {
    /// Every object the file needs, base first.
    pub fn objects(&self) -> Vec<ObjectRef<'_>> {
        let mut out = vec![ObjectRef {
            label: &self.base.label,
            size: self.base.size,
            blake3: &self.base.blake3,
            stored_size: self.base.stored_size,
            bundle: None,
        }];
        out.extend(self.deltas.iter().map(|d| ObjectRef {
            label: &d.label,
            size: d.pages.count() * u64::from(self.block_size),
            blake3: &d.blake3,
            stored_size: d.stored_size,
            bundle: None,
        }));
        out
    }
}

/// Why a file could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// An object is damaged.
    #[error("object of backup {label}: {source}")]
    Frame {
        /// Backup holding the object.
        label: String,
        /// What is wrong.
        source: FrameError,
    },
    /// An object is intact but not what the manifest records.
    #[error("object of backup {label} holds {found_len} bytes with BLAKE3 {found}, the manifest records {expected_len} bytes with BLAKE3 {expected}")]
    Mismatch {
        /// Backup holding the object.
        label: String,
        /// Recorded length.
        expected_len: u64,
        /// Recorded checksum.
        expected: String,
        /// Length found.
        found_len: u64,
        /// Checksum found.
        found: String,
    },
    /// No layer holds a page below the file's size.
    #[error("no layer holds block {0}, below the file's recorded size")]
    MissingPage(u32),
    /// The rebuilt file is not the file the manifest records.
    #[error("the rebuilt file has {found_len} bytes with BLAKE3 {found}, the manifest records {expected_len} bytes with BLAKE3 {expected}")]
    Rebuilt {
        /// Recorded length.
        expected_len: u64,
        /// Recorded checksum.
        expected: String,
        /// Length rebuilt.
        found_len: u64,
        /// Checksum rebuilt.
        found: String,
    },
    /// The page sink refused a page (a failed write, a page that fails verification).
    #[error("block {blkno}: {source}")]
    Sink {
        /// Block number within the file.
        blkno: u32,
        /// Why.
        source: io::Error,
    },
}

/// A decoded delta: its pages by block number.
#[derive(Debug)]
struct Delta {
    data: Vec<u8>,
    index: HashMap<u32, usize>,
}

/// Decodes and checks one delta object.
fn decode_delta(layers: &BlockLayers, d: &BlockDelta, obj: &[u8]) -> Result<Delta, RebuildError> {
    let data = frame::decode(obj).map_err(|source| RebuildError::Frame {
        label: d.label.clone(),
        source,
    })?;
    let found = Checksum::of(&data).to_string();
    let expected_len = d.pages.count() * u64::from(layers.block_size);
    if data.len() as u64 != expected_len || !found.eq_ignore_ascii_case(&d.blake3) {
        return Err(RebuildError::Mismatch {
            label: d.label.clone(),
            expected_len,
            expected: d.blake3.clone(),
            found_len: data.len() as u64,
            found,
        });
    }
    let bs = layers.block_size as usize;
    let index = d
        .pages
        .blocks()
        .enumerate()
        .map(|(i, b)| (b, i * bs))
        .collect();
    Ok(Delta { data, index })
}

/// Rebuilds a block file of `size` bytes with BLAKE3 `blake3` from `base` (the base object) and
/// `deltas` (the delta objects, in the order of `layers.deltas`), handing every page to `sink`
/// in block order; returns the number of bytes handed over. It holds the decoded deltas in
/// memory: for small files (catalogs); restore streams the objects instead (pitr-core's
/// `restore::execute::rebuild`). The base's, every delta's and the
/// rebuilt file's checksums are verified (the last at the end: `sink` must write somewhere
/// that is published only on success).
pub fn rebuild(
    layers: &BlockLayers,
    base: &[u8],
    deltas: &[bytes::Bytes],
    size: u64,
    blake3: &str,
    sink: &mut dyn FnMut(u32, &[u8]) -> io::Result<()>,
) -> Result<u64, RebuildError> {
    if deltas.len() != layers.deltas.len() {
        return Err(RebuildError::Rebuilt {
            expected_len: size,
            expected: format!("{} delta objects", layers.deltas.len()),
            found_len: 0,
            found: format!("{} given", deltas.len()),
        });
    }
    let decoded = layers
        .deltas
        .iter()
        .zip(deltas)
        .map(|(d, obj)| decode_delta(layers, d, obj))
        .collect::<Result<Vec<_>, _>>()?;
    let bs = layers.block_size as usize;
    let mut w = Composer {
        bs,
        size,
        deltas: &decoded,
        page: Vec::with_capacity(bs),
        next: 0,
        hasher: blake3::Hasher::new(),
        sink,
        error: None,
    };
    let summary = frame::decode_into(base, &mut w);
    if let Some(e) = w.error.take() {
        return Err(e);
    }
    let summary = summary.map_err(|source| RebuildError::Frame {
        label: layers.base.label.clone(),
        source,
    })?;
    let found = summary.checksum.to_string();
    if summary.len != layers.base.size || !found.eq_ignore_ascii_case(&layers.base.blake3) {
        return Err(RebuildError::Mismatch {
            label: layers.base.label.clone(),
            expected_len: layers.base.size,
            expected: layers.base.blake3.clone(),
            found_len: summary.len,
            found,
        });
    }
    // Pages beyond the base: from the deltas only.
    let total = size / bs as u64;
    while u64::from(w.next) < total {
        let blk = w.next;
        let page = w
            .newest(blk)
            .ok_or(RebuildError::MissingPage(blk))?
            .to_vec();
        w.emit(blk, &page)?;
    }
    let found = w.hasher.finalize().to_hex().to_string();
    let written = u64::from(w.next) * bs as u64;
    // (An empty `blake3`: the backup read only the pages WAL summaries named and does not know
    // the file's; the objects were checked.)
    if written != size || (!blake3.is_empty() && !found.eq_ignore_ascii_case(blake3)) {
        return Err(RebuildError::Rebuilt {
            expected_len: size,
            expected: blake3.to_string(),
            found_len: written,
            found,
        });
    }
    Ok(written)
}

/// Receives the base object's bytes, page by page, and emits the newest copy of each page.
struct Composer<'a, 's> {
    bs: usize,
    size: u64,
    deltas: &'a [Delta],
    page: Vec<u8>,
    /// Next block to emit.
    next: u32,
    hasher: blake3::Hasher,
    sink: &'s mut dyn FnMut(u32, &[u8]) -> io::Result<()>,
    error: Option<RebuildError>,
}

impl Composer<'_, '_> {
    fn newest(&self, blk: u32) -> Option<&[u8]> {
        self.deltas.iter().rev().find_map(|d| {
            d.index
                .get(&blk)
                .and_then(|&at| d.data.get(at..at + self.bs))
        })
    }

    fn emit(&mut self, blk: u32, page: &[u8]) -> Result<(), RebuildError> {
        self.hasher.update(page);
        (self.sink)(blk, page).map_err(|source| RebuildError::Sink { blkno: blk, source })?;
        self.next = blk + 1;
        Ok(())
    }

    /// One whole page of the base.
    fn base_page(&mut self) -> Result<(), RebuildError> {
        let blk = self.next;
        if (u64::from(blk) + 1) * self.bs as u64 > self.size {
            // Beyond the file's size (truncated since the base): dropped.
            self.page.clear();
            return Ok(());
        }
        let page = std::mem::take(&mut self.page);
        let r = match self.newest(blk) {
            Some(newer) => {
                let newer = newer.to_vec();
                self.emit(blk, &newer)
            }
            None => self.emit(blk, &page),
        };
        self.page = page;
        self.page.clear();
        r
    }
}

impl Write for Composer<'_, '_> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (self.bs - self.page.len()).min(buf.len());
            let (head, rest) = buf.split_at(take);
            self.page.extend_from_slice(head);
            buf = rest;
            if self.page.len() == self.bs {
                if let Err(e) = self.base_page() {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::frame::Compression;

    #[test]
    fn page_maps_print_and_parse_as_ranges() {
        let mut m = PageMap::default();
        for b in [0, 1, 2, 3, 7, 9, 10] {
            m.push(b);
        }
        assert_eq!(m.to_string(), "0-3,7,9-10");
        assert_eq!(m.count(), 7);
        assert_eq!("0-3,7,9-10".parse::<PageMap>().unwrap(), m);
        assert_eq!(m.blocks().collect::<Vec<_>>(), vec![0, 1, 2, 3, 7, 9, 10]);
        for bad in ["3-1", "1,1", "4,2", "x", "1-", "-"] {
            assert!(bad.parse::<PageMap>().is_err(), "{bad}");
        }
        assert!("".parse::<PageMap>().unwrap().is_empty());
    }

    fn page(bs: usize, fill: u8) -> Vec<u8> {
        vec![fill; bs]
    }

    fn delta(label: &str, bs: usize, pages: &[(u32, u8)]) -> (BlockDelta, bytes::Bytes) {
        let mut map = PageMap::default();
        let mut data = Vec::new();
        for &(b, fill) in pages {
            map.push(b);
            data.extend(page(bs, fill));
        }
        let (obj, s) = frame::encode(&data, Compression::Zstd(1)).unwrap();
        (
            BlockDelta {
                label: label.into(),
                pages: map,
                blake3: s.checksum.to_string(),
                stored_size: obj.len() as u64,
            },
            obj.into(),
        )
    }

    #[test]
    fn newest_page_wins_and_the_file_is_cut_or_extended_to_its_size() {
        let bs = 1024;
        let base_data: Vec<u8> = (0..6u8).flat_map(|i| page(bs, i)).collect();
        let (base_obj, s) = frame::encode(&base_data, Compression::Zstd(1)).unwrap();
        let (d1, o1) = delta("I1", bs, &[(1, 11), (4, 14), (6, 16), (7, 17)]);
        let (d2, o2) = delta("I2", bs, &[(1, 21), (7, 27)]);
        let layers = BlockLayers {
            block_size: bs as u32,
            relseg_size: 131072,
            base: BlockBase {
                label: "F".into(),
                size: base_data.len() as u64,
                blake3: s.checksum.to_string(),
                stored_size: base_obj.len() as u64,
            },
            deltas: vec![d1, d2],
        };
        let want: Vec<u8> = [0u8, 21, 2, 3, 14, 5, 16, 27]
            .iter()
            .flat_map(|&f| page(bs, f))
            .collect();
        let mut got = Vec::new();
        let mut sink = |_: u32, p: &[u8]| {
            got.extend_from_slice(p);
            Ok(())
        };
        let hash = blake3::hash(&want).to_hex().to_string();
        let n = rebuild(
            &layers,
            &base_obj,
            &[o1.clone(), o2.clone()],
            want.len() as u64,
            &hash,
            &mut sink,
        )
        .unwrap();
        assert_eq!(n, want.len() as u64);
        assert_eq!(got, want);

        // Truncated to 3 pages.
        let short = &want[..3 * bs];
        let hash = blake3::hash(short).to_hex().to_string();
        let mut got = Vec::new();
        let mut sink = |_: u32, p: &[u8]| {
            got.extend_from_slice(p);
            Ok(())
        };
        rebuild(
            &layers,
            &base_obj,
            &[o1.clone(), o2.clone()],
            3 * bs as u64,
            &hash,
            &mut sink,
        )
        .unwrap();
        assert_eq!(got, short);

        // A wrong file checksum, a damaged delta and a missing page are refused.
        let mut sink = |_: u32, _: &[u8]| Ok(());
        assert!(matches!(
            rebuild(
                &layers,
                &base_obj,
                &[o1.clone(), o2.clone()],
                3 * bs as u64,
                "00",
                &mut sink
            ),
            Err(RebuildError::Rebuilt { .. })
        ));
        let mut bad = o2.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(matches!(
            rebuild(
                &layers,
                &base_obj,
                &[o1.clone(), bad.into()],
                3 * bs as u64,
                &hash,
                &mut sink
            ),
            Err(RebuildError::Frame { .. })
        ));
        assert!(matches!(
            rebuild(
                &layers,
                &base_obj,
                &[o1, o2],
                10 * bs as u64,
                &hash,
                &mut sink
            ),
            Err(RebuildError::MissingPage(8))
        ));
    }
}
