//! Arrays of ids and relation files stored in records, read in place.

use super::super::types::{Oid, RelFileLocator, Xid};

/// A 4-byte chunk as a little-endian u32 (chunks come from `chunks_exact(4)`).
fn le_u32(c: &[u8]) -> u32 {
    c.try_into().map(u32::from_le_bytes).unwrap_or(0)
}

/// A list of 32-bit transaction ids stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XidList<'a>(pub(super) &'a [u8]);

impl<'a> XidList<'a> {
    /// Number of xids.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The xids.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Xid> + 'a {
        self.0.chunks_exact(4).map(|c| Xid(le_u32(c)))
    }
}

/// A list of 32-bit object ids stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OidList<'a>(pub(super) &'a [u8]);

impl<'a> OidList<'a> {
    /// Number of oids.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The oids.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Oid> + 'a {
        self.0.chunks_exact(4).map(|c| Oid(le_u32(c)))
    }
}

/// A list of relation files stored in a record (e.g. those a commit drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelList<'a>(pub(super) &'a [u8]);

impl<'a> RelList<'a> {
    /// Number of relations.
    pub fn len(&self) -> usize {
        self.0.len() / RelFileLocator::LEN
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The relations.
    pub fn iter(&self) -> impl Iterator<Item = RelFileLocator> + 'a {
        self.0
            .chunks_exact(RelFileLocator::LEN)
            .filter_map(RelFileLocator::parse)
    }
}
