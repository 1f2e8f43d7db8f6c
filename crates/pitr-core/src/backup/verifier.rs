//! Data page checksums verified while a backup copies relation files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pitr_pg::page_checksum::{verify_page, PageCheck};
use pitr_pg::Lsn;

use super::PageVerifier;

/// Verifies data page checksums the way `pg_basebackup` does: pages changed since the backup
/// started and new pages are skipped; a mismatch is re-read once (the page may have been read
/// while PostgreSQL was writing it) before it is reported.
#[derive(Debug)]
pub(super) struct ChecksumVerifier {
    pub(super) start_lsn: Lsn,
    pub(super) block_size: usize,
    pub(super) relseg_size: u32,
}

impl PageVerifier for ChecksumVerifier {
    fn bad_blocks(&self, path: &Path, offset: u64, first_block: u32, chunk: &[u8]) -> Vec<u32> {
        let mut bad = Vec::new();
        for (i, page) in chunk.chunks(self.block_size).enumerate() {
            if page.len() != self.block_size {
                break; // a file being extended: PostgreSQL skips the rest too
            }
            let blkno = first_block.saturating_add(i as u32);
            if let PageCheck::Mismatch { .. } = verify_page(page, blkno, self.start_lsn) {
                let mut again = vec![0u8; self.block_size];
                let at = offset + (i * self.block_size) as u64;
                let reread = File::open(path).and_then(|f| f.read_exact_at(&mut again, at));
                if reread.is_err()
                    || matches!(
                        verify_page(&again, blkno, self.start_lsn),
                        PageCheck::Mismatch { .. }
                    )
                {
                    tracing::warn!(
                        "data page checksum failure in {} block {blkno}",
                        path.display()
                    );
                    bad.push(blkno);
                }
            }
        }
        bad
    }
    fn block_size(&self) -> usize {
        self.block_size
    }
    fn blocks_per_segment(&self) -> u32 {
        self.relseg_size
    }
}
