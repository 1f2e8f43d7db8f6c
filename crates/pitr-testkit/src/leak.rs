//! Finding plaintext in stored bytes: does any 64-byte window of a plain file (a WAL segment)
//! appear in an object of an encrypted repository?
//!
//! The plain files are indexed by their 32-byte blocks at offsets that are multiples of 32:
//! every 64-byte window of a file contains one such block whole, so scanning the stored bytes
//! for the blocks at every offset, then comparing the 64-byte windows around each hit, finds
//! every 64-byte window. Blocks that repeat (zero pages) keep only their first positions: a
//! window of repeated content matches at any of them alike.

use std::collections::HashMap;

/// Window length that counts as a leak.
pub const LEAK_WINDOW: usize = 64;
const BLOCK: usize = LEAK_WINDOW / 2;
/// Positions kept per distinct block.
const MAX_POSITIONS: usize = 8;

/// An index of plain files' 32-byte blocks.
pub struct PlainIndex<'a> {
    files: Vec<&'a [u8]>,
    blocks: HashMap<[u8; BLOCK], Vec<(usize, usize)>>,
}

impl std::fmt::Debug for PlainIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainIndex")
            .field("files", &self.files.len())
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl<'a> PlainIndex<'a> {
    /// Indexes `files`.
    pub fn new(files: &[&'a [u8]]) -> PlainIndex<'a> {
        let mut blocks: HashMap<[u8; BLOCK], Vec<(usize, usize)>> = HashMap::new();
        for (f, data) in files.iter().enumerate() {
            for (i, b) in data.chunks_exact(BLOCK).enumerate() {
                let mut key = [0u8; BLOCK];
                key.copy_from_slice(b);
                let v = blocks.entry(key).or_default();
                if v.len() < MAX_POSITIONS {
                    v.push((f, i * BLOCK));
                }
            }
        }
        PlainIndex {
            files: files.to_vec(),
            blocks,
        }
    }

    /// The offset in `stored` of a 64-byte window of a plain file, if there is one.
    pub fn find_in(&self, stored: &[u8]) -> Option<usize> {
        if stored.len() < LEAK_WINDOW {
            return None;
        }
        for o in 0..=stored.len() - BLOCK {
            let Some(hits) = self.blocks.get(&stored[o..o + BLOCK]) else {
                continue;
            };
            for &(f, p) in hits {
                let plain = self.files[f];
                // The window starts `d` bytes before the block, in both.
                for d in 0..=BLOCK {
                    let (Some(s), Some(q)) = (o.checked_sub(d), p.checked_sub(d)) else {
                        break;
                    };
                    match (
                        stored.get(s..s + LEAK_WINDOW),
                        plain.get(q..q + LEAK_WINDOW),
                    ) {
                        (Some(a), Some(b)) if a == b => return Some(s),
                        _ => {}
                    }
                }
            }
        }
        None
    }
}
