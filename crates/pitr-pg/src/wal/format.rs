//! What differs in the WAL record format between PostgreSQL 14 and 18: one row per version.
//!
//! The page and record headers are the same in all supported versions; the differences are in
//! full-page-image flags (`BKPIMAGE_*` were renumbered in PG15 when LZ4/zstd arrived), custom
//! resource managers (PG15+), the dropped-statistics items of transaction records (PG15+,
//! widened in PG18) and the two-phase prepare header (PG15 added two counters).
//! Sources: `src/include/access/xlogrecord.h`, `xact.h`, `rmgr.h` of each version.

use crate::PgMajor;

/// Where the `bimg_info` flags of a full-page image live in one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BkpImageBits {
    /// `BKPIMAGE_HAS_HOLE`.
    pub has_hole: u8,
    /// `BKPIMAGE_APPLY`.
    pub apply: u8,
    /// `BKPIMAGE_IS_COMPRESSED` (PG14) / `BKPIMAGE_COMPRESS_PGLZ` (PG15+).
    pub pglz: u8,
    /// `BKPIMAGE_COMPRESS_LZ4` (0 before PG15).
    pub lz4: u8,
    /// `BKPIMAGE_COMPRESS_ZSTD` (0 before PG15).
    pub zstd: u8,
}

impl BkpImageBits {
    /// Any compression bit.
    pub fn compressed_mask(&self) -> u8 {
        self.pglz | self.lz4 | self.zstd
    }
}

/// The WAL record format of one PostgreSQL major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalFormat {
    /// Major version.
    pub major: u32,
    /// Full-page image flag bits.
    pub bkpimage: BkpImageBits,
    /// Highest built-in resource manager id (`RM_MAX_BUILTIN_ID`; 21 in 14–18).
    pub max_builtin_rmgr: u8,
    /// Whether ids 128–255 are valid custom resource managers (PG15+).
    pub custom_rmgrs: bool,
    /// Size of one `xl_xact_stats_item` (dropped statistics), `None` before PG15.
    pub dropped_stats_item_len: Option<usize>,
    /// `sizeof(xl_xact_prepare)` (the two-phase state header in PREPARE records).
    pub prepare_header_len: usize,
    /// HEAP2 opcodes 0x10–0x30 are the PG17+ `PRUNE_*` records (else PRUNE/VACUUM/FREEZE_PAGE).
    pub heap2_prune_v17: bool,
    /// `XLOG_CHECKPOINT_REDO` (0xE0) exists (PG17+).
    pub checkpoint_redo: bool,
    /// `CheckPoint` records `wal_level` (PG17+, in what was padding).
    pub checkpoint_wal_level: bool,
}

const BKP_14: BkpImageBits = BkpImageBits {
    has_hole: 0x01,
    pglz: 0x02,
    apply: 0x04,
    lz4: 0,
    zstd: 0,
};

const BKP_15: BkpImageBits = BkpImageBits {
    has_hole: 0x01,
    apply: 0x02,
    pglz: 0x04,
    lz4: 0x08,
    zstd: 0x10,
};

/// One row per supported version, checked against each version's headers and real WAL.
pub const WAL_FORMATS: &[WalFormat] = &[
    WalFormat {
        major: 14,
        bkpimage: BKP_14,
        max_builtin_rmgr: 21,
        custom_rmgrs: false,
        dropped_stats_item_len: None,
        prepare_header_len: 64,
        heap2_prune_v17: false,
        checkpoint_redo: false,
        checkpoint_wal_level: false,
    },
    WalFormat {
        major: 15,
        bkpimage: BKP_15,
        max_builtin_rmgr: 21,
        custom_rmgrs: true,
        dropped_stats_item_len: Some(12),
        prepare_header_len: 72,
        heap2_prune_v17: false,
        checkpoint_redo: false,
        checkpoint_wal_level: false,
    },
    WalFormat {
        major: 16,
        bkpimage: BKP_15,
        max_builtin_rmgr: 21,
        custom_rmgrs: true,
        dropped_stats_item_len: Some(12),
        prepare_header_len: 72,
        heap2_prune_v17: false,
        checkpoint_redo: false,
        checkpoint_wal_level: false,
    },
    WalFormat {
        major: 17,
        bkpimage: BKP_15,
        max_builtin_rmgr: 21,
        custom_rmgrs: true,
        dropped_stats_item_len: Some(12),
        prepare_header_len: 72,
        heap2_prune_v17: true,
        checkpoint_redo: true,
        checkpoint_wal_level: true,
    },
    PG18,
];

/// PostgreSQL 18's row of [`WAL_FORMATS`].
const PG18: WalFormat = WalFormat {
    major: 18,
    bkpimage: BKP_15,
    max_builtin_rmgr: 21,
    custom_rmgrs: true,
    // PG18 stores the 64-bit object id as two uint32 (kind, dboid, objid_lo, objid_hi).
    dropped_stats_item_len: Some(16),
    prepare_header_len: 72,
    heap2_prune_v17: true,
    checkpoint_redo: true,
    checkpoint_wal_level: true,
};

impl WalFormat {
    /// The format of `version`.
    pub fn of(version: PgMajor) -> &'static WalFormat {
        // Every PgMajor has a row (both tables list 14–18; a unit test checks it).
        WAL_FORMATS
            .iter()
            .find(|f| f.major == version.number())
            .unwrap_or(&PG18)
    }

    /// Whether `rmid` is a resource manager id this version can write.
    pub fn rmgr_is_valid(&self, rmid: u8) -> bool {
        rmid <= self.max_builtin_rmgr || (self.custom_rmgrs && rmid >= 128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VERSIONS;

    #[test]
    fn every_supported_version_has_a_wal_format() {
        for v in VERSIONS {
            let major = PgMajor::new(v.major).unwrap();
            assert_eq!(WalFormat::of(major).major, v.major);
        }
        assert_eq!(WAL_FORMATS.len(), VERSIONS.len());
    }

    #[test]
    fn bkpimage_bits_were_renumbered_in_15() {
        let f14 = WalFormat::of(PgMajor::new(14).unwrap());
        let f15 = WalFormat::of(PgMajor::new(15).unwrap());
        assert_eq!(f14.bkpimage.apply, 0x04);
        assert_eq!(f15.bkpimage.apply, 0x02);
        assert_eq!(f14.bkpimage.compressed_mask(), 0x02);
        assert_eq!(f15.bkpimage.compressed_mask(), 0x1C);
        assert!(!f14.rmgr_is_valid(128));
        assert!(f15.rmgr_is_valid(128));
        assert!(!f15.rmgr_is_valid(22));
    }
}
