//! Full-page image decompression for the catalog rows read from the WAL.

use pitr_pg::wal::ImageCompression;

/// LZ4 and zstd full-page images for [`CatalogTracker`] (PostgreSQL writes a raw LZ4 block
/// and a zstd frame, each decompressing to the page minus its hole).
pub(super) fn decompress_image(c: ImageCompression, data: &[u8], len: usize) -> Option<Vec<u8>> {
    match c {
        ImageCompression::Lz4 => lz4_flex::block::decompress(data, len).ok(),
        ImageCompression::Zstd => zstd::bulk::decompress(data, len).ok(),
        ImageCompression::None | ImageCompression::Pglz => None,
    }
}
