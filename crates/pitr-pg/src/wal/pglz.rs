//! PGLZ decompression (`pglz_decompress` in `src/common/pg_lzcompress.c`): how
//! `wal_compression = pglz` (`on` in PostgreSQL 14) stores full-page images.
//!
//! The format: a control byte whose 8 bits, low first, say whether each of the next 8 items is
//! a literal byte (0) or a back-reference (1) of 2 or 3 bytes: length `(b0 & 0x0f) + 3`
//! (18 means "add the next byte"), offset `((b0 & 0xf0) << 4) | b1` back into the output.

/// Decompresses `src` into exactly `rawsize` bytes, consuming all of `src`
/// (`check_complete`); `None` on corrupt input.
pub(crate) fn decompress(src: &[u8], rawsize: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(rawsize);
    let mut sp = 0usize;
    while sp < src.len() && out.len() < rawsize {
        let mut ctrl = *src.get(sp)?;
        sp += 1;
        for _ in 0..8 {
            if sp >= src.len() || out.len() >= rawsize {
                break;
            }
            if ctrl & 1 != 0 {
                let b0 = *src.get(sp)?;
                let b1 = *src.get(sp + 1)?;
                sp += 2;
                let mut len = usize::from(b0 & 0x0f) + 3;
                let off = (usize::from(b0 & 0xf0) << 4) | usize::from(b1);
                if len == 18 {
                    len += usize::from(*src.get(sp)?);
                    sp += 1;
                }
                if off == 0 || off > out.len() {
                    return None;
                }
                let len = len.min(rawsize - out.len());
                // Byte by byte: the source may overlap what is being written (a run).
                let start = out.len() - off;
                for i in 0..len {
                    let b = *out.get(start + i)?;
                    out.push(b);
                }
            } else {
                out.push(*src.get(sp)?);
                sp += 1;
            }
            ctrl >>= 1;
        }
    }
    (out.len() == rawsize && sp == src.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_back_references() {
        // ctrl 0b0000_0010: literal 'a', then a reference of length 3+2=5 at offset 1.
        let src = [0b0000_0010, b'a', 0x02, 0x01];
        assert_eq!(decompress(&src, 6).unwrap(), b"aaaaaa");
        // A long reference: length 18 + extra byte.
        let src = [0b0000_0010, b'z', 0x0f, 0x01, 2];
        assert_eq!(decompress(&src, 21).unwrap(), vec![b'z'; 21]);
    }

    #[test]
    fn corrupt_input_is_refused_not_a_panic() {
        assert_eq!(decompress(&[0b0000_0001, 0x00, 0x00], 4), None); // offset 0
        assert_eq!(decompress(&[0b0000_0001, 0x02, 0x05], 8), None); // before the start
        assert_eq!(decompress(&[0b0000_0001, 0x02], 8), None); // cut short
        assert_eq!(decompress(&[0, b'a'], 2), None); // too short an output
        assert_eq!(decompress(&[0, b'a', b'b', b'c'], 2), None); // input left over
        for n in 0..64u8 {
            let src: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
            let _ = decompress(&src, 8192);
        }
    }
}
