//! Data page checksums (`pg_checksum_page` in `src/include/storage/checksum_impl.h`) and the
//! check a base backup makes on every page it copies (`basebackup.c`).
//!
//! The algorithm is the same in PostgreSQL 14 to 18: 32 parallel FNV-1a-like lanes over the
//! page read as 32-bit words, with the page's own `pd_checksum` taken as zero, two extra rounds
//! of zeros, the lanes XOR-folded, the block number XOR-ed in, and the result reduced to
//! `1..=65535`.

use crate::Lsn;

/// Number of parallel lanes (`N_SUMS`).
const N_SUMS: usize = 32;
/// FNV-1a prime (`FNV_PRIME`).
const FNV_PRIME: u32 = 16_777_619;
/// Initial state of each lane (`checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Offset of `pd_checksum` (u16) in the page header.
const PD_CHECKSUM: usize = 8;
/// Offset of `pd_upper` (u16) in the page header.
const PD_UPPER: usize = 14;

/// A page length that is not a PostgreSQL block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid page length {0} bytes: a PostgreSQL block is a power of two from 1 kB to 32 kB")]
pub struct InvalidPageLength(pub usize);

fn check_len(page: &[u8]) -> Result<(), InvalidPageLength> {
    if page.len().is_power_of_two() && (1024..=32768).contains(&page.len()) {
        Ok(())
    } else {
        Err(InvalidPageLength(page.len()))
    }
}

#[inline]
fn comp(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// The checksum PostgreSQL stores in `pd_checksum` for `page` at block number `blkno` (the
/// block's number in its relation fork, counting across 1 GB segment files; see
/// [`relation_block_number`]). The page's own `pd_checksum` does not affect the result.
pub fn pg_checksum_page(page: &[u8], blkno: u32) -> Result<u16, InvalidPageLength> {
    check_len(page)?;
    let mut sums = BASE_OFFSETS;
    // The page is read as rows of N_SUMS native-endian (little-endian here) 32-bit words
    // (a block size is a multiple of a row).
    for (r, row) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (lane, (sum, word)) in sums.iter_mut().zip(row.chunks_exact(4)).enumerate() {
            let mut value = word.try_into().map(u32::from_le_bytes).unwrap_or(0);
            if r == 0 && lane * 4 == PD_CHECKSUM {
                // pd_checksum is the low half of this word; it counts as zero.
                value &= 0xFFFF_0000;
            }
            *sum = comp(*sum, value);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = comp(*s, 0);
        }
    }
    let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    // (checksum % 65535) + 1 is at most 65535.
    Ok(((checksum % 65535) + 1) as u16)
}

/// The number PostgreSQL mixes into a block's checksum: its position in the relation fork,
/// i.e. `segment_no * relseg_size + block_in_segment` for block `block_in_segment` of the
/// segment file `<relfilenode>.<segment_no>` (`relseg_size` from pg_control, normally
/// 131072). `None` on overflow.
pub fn relation_block_number(
    segment_no: u32,
    block_in_segment: u32,
    relseg_size: u32,
) -> Option<u32> {
    segment_no
        .checked_mul(relseg_size)?
        .checked_add(block_in_segment)
}

/// `pd_lsn`: the LSN of the last WAL record that changed the page (stored as two 32-bit
/// halves, high first). `None` if the slice is shorter than a page header.
pub fn page_lsn(page: &[u8]) -> Option<Lsn> {
    let hi = u32::from_le_bytes(page.get(0..4)?.try_into().ok()?);
    let lo = u32::from_le_bytes(page.get(4..8)?.try_into().ok()?);
    Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
}

/// `pd_checksum` as stored in the page header. `None` if the slice is too short.
pub fn stored_checksum(page: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(
        page.get(PD_CHECKSUM..PD_CHECKSUM + 2)?.try_into().ok()?,
    ))
}

/// The outcome of checking one page the way a base backup does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCheck {
    /// The stored checksum matches.
    Ok,
    /// A new page (`PageIsNew`: `pd_upper` is zero, as on an all-zero page): it has no
    /// checksum yet and is not checked.
    NewPage,
    /// The page changed at or after the backup's start LSN: it may have been read while being
    /// written, and WAL replay will restore it, so its checksum is not checked.
    ChangedSinceStart {
        /// The page's LSN.
        page_lsn: Lsn,
    },
    /// The stored checksum differs from the computed one. A page being written during the
    /// copy can fail once: re-read it before reporting corruption.
    Mismatch {
        /// The checksum computed from the contents.
        expected: u16,
        /// The checksum stored in the page.
        found: u16,
    },
    /// The buffer is not a whole block (e.g. a short read at the end of a file being
    /// extended); PostgreSQL skips checking the rest of such a file.
    WrongLength {
        /// Bytes given.
        len: usize,
    },
}

/// Checks a page copied during a base backup that started at `backup_start_lsn`, following
/// `basebackup.c`: new pages and pages changed since the start are skipped, every other page
/// must carry the right checksum for block number `blkno` (see [`relation_block_number`]).
pub fn verify_page(page: &[u8], blkno: u32, backup_start_lsn: Lsn) -> PageCheck {
    if check_len(page).is_err() {
        return PageCheck::WrongLength { len: page.len() };
    }
    let pd_upper = page
        .get(PD_UPPER..PD_UPPER + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0);
    if pd_upper == 0 {
        return PageCheck::NewPage;
    }
    let page_lsn = page_lsn(page).unwrap_or(Lsn::INVALID);
    if page_lsn >= backup_start_lsn {
        return PageCheck::ChangedSinceStart { page_lsn };
    }
    let found = stored_checksum(page).unwrap_or(0);
    match pg_checksum_page(page, blkno) {
        Ok(expected) if expected == found => PageCheck::Ok,
        Ok(expected) => PageCheck::Mismatch { expected, found },
        Err(InvalidPageLength(len)) => PageCheck::WrongLength { len },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_with(upper: u16, lsn: u64) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&24u16.to_le_bytes());
        p[14..16].copy_from_slice(&upper.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        for (i, b) in p[upper as usize..].iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        p
    }

    #[test]
    fn checksum_ignores_the_stored_checksum_and_depends_on_the_block_number() {
        let mut p = page_with(4000, 0x0100_0000);
        let c = pg_checksum_page(&p, 7).unwrap();
        p[8..10].copy_from_slice(&c.to_le_bytes());
        assert_eq!(pg_checksum_page(&p, 7).unwrap(), c);
        assert_ne!(pg_checksum_page(&p, 8).unwrap(), c);
        assert_ne!(c, 0);
        assert_eq!(verify_page(&p, 7, Lsn(0x0200_0000)), PageCheck::Ok);
        assert!(matches!(
            verify_page(&p, 8, Lsn(0x0200_0000)),
            PageCheck::Mismatch { found, .. } if found == c
        ));
    }

    #[test]
    fn skips_new_pages_and_pages_changed_since_the_backup_started() {
        assert_eq!(verify_page(&[0u8; 8192], 0, Lsn(1)), PageCheck::NewPage);
        let p = page_with(4000, 0x0300_0000);
        assert_eq!(
            verify_page(&p, 0, Lsn(0x0300_0000)),
            PageCheck::ChangedSinceStart {
                page_lsn: Lsn(0x0300_0000)
            }
        );
    }

    #[test]
    fn refuses_buffers_that_are_not_a_block() {
        for len in [0, 7, 24, 1000, 8191, 8193, 65536] {
            let p = vec![1u8; len];
            assert_eq!(
                verify_page(&p, 0, Lsn(u64::MAX)),
                PageCheck::WrongLength { len }
            );
            assert_eq!(pg_checksum_page(&p, 0), Err(InvalidPageLength(len)));
        }
        assert!(pg_checksum_page(&[0u8; 1024], 0).is_ok());
        assert_eq!(page_lsn(&[0u8; 7]), None);
    }

    #[test]
    fn never_panics_on_arbitrary_pages() {
        let mut x: u32 = 0x2545_F491;
        for len in [0usize, 1, 8, 15, 16, 23, 24, 1024, 4096, 8192, 32768] {
            let page: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = verify_page(&page, x, Lsn(u64::from(x)));
            let _ = pg_checksum_page(&page, u32::MAX);
            let _ = (page_lsn(&page), stored_checksum(&page));
        }
    }

    #[test]
    fn numbers_blocks_across_segment_files() {
        assert_eq!(relation_block_number(0, 5, 131_072), Some(5));
        assert_eq!(relation_block_number(2, 5, 131_072), Some(262_149));
        assert_eq!(relation_block_number(u32::MAX, 1, 131_072), None);
    }
}
