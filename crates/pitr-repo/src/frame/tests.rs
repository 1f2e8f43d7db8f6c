//! Frames written and read back, damaged, decoded in parallel.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io;

use super::encode::{compress, PARALLEL_CHUNK};
use super::layout::{header, parts, trailer};
use super::parallel::zstd_pieces;
use super::*;

fn sample() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect()
}

#[test]
fn round_trips_every_compression_whole_and_streamed() {
    let data = sample();
    for c in [
        Compression::None,
        Compression::Zstd(1),
        Compression::Zstd(3),
        Compression::Lz4,
    ] {
        let (obj, s) = encode(&data, c).unwrap();
        assert_eq!(s.len, data.len() as u64);
        assert_eq!(decode(&obj).unwrap(), data, "{c}");
        assert_eq!(summary(&obj).unwrap(), s);

        let mut enc = FrameEncoder::new(c).unwrap();
        let mut streamed = Vec::new();
        for chunk in data.chunks(7777) {
            enc.write(chunk).unwrap();
            streamed.extend(enc.take_output());
        }
        let (rest, s2) = enc.finish().unwrap();
        streamed.extend(rest);
        assert_eq!(s2, s);
        assert_eq!(decode(&streamed).unwrap(), data, "streamed {c}");
    }
}

#[test]
fn chunked_zstd_payload_is_one_stream_and_damage_in_any_piece_is_caught() {
    // 9 pieces' worth of data, compressed in three pieces as encode_file does on three
    // cores (built here so that the test does not depend on the machine's core count).
    let data: Vec<u8> = (0..(9 * PARALLEL_CHUNK / 4) as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 20).to_le_bytes())
        .collect();
    let one = compress(&data, Compression::Zstd(1)).unwrap();
    let three: Vec<u8> = data
        .chunks(data.len().div_ceil(3))
        .flat_map(|piece| compress(piece, Compression::Zstd(1)).unwrap())
        .collect();
    assert_ne!(one, three, "three pieces must be three frames");
    assert_eq!(zstd::stream::decode_all(&three[..]).unwrap(), data);
    let h = header(Compression::Zstd(1));
    let summary = FrameSummary {
        len: data.len() as u64,
        checksum: Checksum::of(&data),
    };
    let mut obj = h.to_vec();
    obj.extend_from_slice(&three);
    obj.extend_from_slice(&trailer(&h, summary));
    assert_eq!(decode(&obj).unwrap(), data);
    let (whole, s) = encode(&data, Compression::Zstd(1)).unwrap();
    assert_eq!(s, summary);
    assert_eq!(decode(&whole).unwrap(), data);
    // A flipped byte in the last piece is caught by decompression or the checksum.
    let at = HEADER_LEN + three.len() - 100;
    obj[at] ^= 0x40;
    assert!(decode(&obj).is_err());
}

/// A [`WriteAt`] into memory, optionally failing on the write that covers one offset.
struct Memory {
    bytes: std::sync::Mutex<Vec<u8>>,
    fail_at: Option<u64>,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            bytes: std::sync::Mutex::new(Vec::new()),
            fail_at: None,
        }
    }
    fn take(self) -> Vec<u8> {
        self.bytes.into_inner().unwrap()
    }
}

impl WriteAt for Memory {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self
            .fail_at
            .is_some_and(|f| (offset..offset + data.len() as u64).contains(&f))
        {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let mut b = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x3f)
        .collect()
}

/// A frame whose zstd payload is `data` cut in `piece`-sized frames.
fn pieced(data: &[u8], piece: usize) -> Vec<u8> {
    let h = header(Compression::Zstd(1));
    let mut obj = h.to_vec();
    for p in data.chunks(piece) {
        obj.extend(compress(p, Compression::Zstd(1)).unwrap());
    }
    let s = FrameSummary {
        len: data.len() as u64,
        checksum: Checksum::of(data),
    };
    obj.extend_from_slice(&trailer(&h, s));
    obj
}

#[test]
fn parallel_decode_gives_blake3_of_the_whole_for_every_tree_shape() {
    for piece in [1024usize, 4096] {
        for pieces in 2..=9usize {
            for tail in [0usize, 1, piece / 2, piece - 1] {
                let len = (pieces - 1) * piece + if tail == 0 { piece } else { tail };
                let data = pseudo_random(len);
                let obj = pieced(&data, piece);
                let (_, payload, _) = parts(&obj).unwrap();
                let (found, frames) = zstd_pieces(payload, len as u64).unwrap();
                assert_eq!((found, frames.len()), (piece as u64, pieces));
                for threads in [2, 3, 8] {
                    let out = Memory::new();
                    let s = decode_to(&obj, threads, &out).unwrap();
                    assert_eq!(s.checksum.0, *blake3::hash(&data).as_bytes());
                    assert_eq!(out.take(), data, "{piece} x {pieces} + {tail}");
                }
            }
        }
    }
}

#[test]
fn frame_encoder_cuts_zstd_in_pieces_that_decode_in_parallel() {
    let data = pseudo_random(2 * ZSTD_PIECE + ZSTD_PIECE / 3);
    let mut enc = FrameEncoder::new(Compression::Zstd(1)).unwrap();
    let mut obj = Vec::new();
    for chunk in data.chunks(1 << 20) {
        enc.write(chunk).unwrap();
        obj.extend(enc.take_output());
    }
    let (rest, s) = enc.finish().unwrap();
    obj.extend(rest);
    let (_, payload, _) = parts(&obj).unwrap();
    let (piece, frames) = zstd_pieces(payload, s.len).unwrap();
    assert_eq!((piece, frames.len()), (ZSTD_PIECE as u64, 3));
    let out = Memory::new();
    assert_eq!(decode_to(&obj, 2, &out).unwrap(), s);
    assert_eq!(out.take(), data);
    assert_eq!(decode(&obj).unwrap(), data);
    // Encoded from a file on two cores, a WAL segment-sized input is also two pieces.
    let (whole, _) = encode(&data, Compression::Zstd(1)).unwrap();
    let (_, payload, _) = parts(&whole).unwrap();
    assert!(zstd_pieces(payload, s.len).is_none(), "one frame");
    let out = Memory::new();
    assert_eq!(decode_to(&whole, 2, &out).unwrap(), s);
    assert_eq!(out.take(), data);
}

#[test]
fn parallel_decode_catches_damage_reordering_and_write_failures() {
    let piece = 4096;
    let data = pseudo_random(5 * piece + 100);
    let obj = pieced(&data, piece);
    let frames: Vec<Vec<u8>> = data
        .chunks(piece)
        .map(|p| compress(p, Compression::Zstd(1)).unwrap())
        .collect();
    // A flipped byte inside any piece.
    let mut at = HEADER_LEN;
    for f in &frames {
        let mut bad = obj.clone();
        bad[at + f.len() / 2] ^= 0x10;
        assert!(decode_to(&bad, 2, &Memory::new()).is_err(), "flip at {at}");
        at += f.len();
    }
    // Two whole pieces swapped: every frame is intact, only the checksum can tell.
    let h = header(Compression::Zstd(1));
    let mut swapped = h.to_vec();
    for i in [1, 0, 2, 3, 4, 5] {
        swapped.extend_from_slice(&frames[i]);
    }
    swapped.extend_from_slice(&obj[obj.len() - TRAILER_LEN..]);
    assert!(matches!(
        decode_to(&swapped, 2, &Memory::new()),
        Err(FrameError::ChecksumMismatch { .. })
    ));
    // A piece missing: the sizes no longer add up, so it is decoded in order and the
    // length is wrong.
    let mut short = h.to_vec();
    for f in &frames[1..] {
        short.extend_from_slice(f);
    }
    short.extend_from_slice(&obj[obj.len() - TRAILER_LEN..]);
    assert!(matches!(
        decode_to(&short, 2, &Memory::new()),
        Err(FrameError::LengthMismatch { .. })
    ));
    // The destination failing is a write error, in parallel and in order.
    for threads in [1, 2] {
        let out = Memory {
            fail_at: Some(2 * piece as u64),
            ..Memory::new()
        };
        let err = decode_to(&obj, threads, &out).unwrap_err();
        assert!(
            matches!(err, FrameError::Write(ref m) if m.contains("disk full")),
            "{err}"
        );
    }
}

#[test]
fn encode_file_matches_encode_for_every_compression() {
    let data: Vec<u8> = (0..(3 * PARALLEL_CHUNK / 2 + 12_345) as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 22).to_le_bytes())
        .collect();
    let dir = std::env::temp_dir().join(format!("pitr-frame-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    std::fs::write(&path, &data).unwrap();
    let file = File::open(&path).unwrap();
    for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
        let (obj, s) = encode_file(&file, data.len() as u64, c).unwrap();
        assert_eq!(s, encode(&data, c).unwrap().1, "{c}");
        assert_eq!(decode(&obj).unwrap(), data, "{c}");
    }
    // The zstd payload is frames of 1 MiB, each recording its size: the parallel decoder can
    // split it (and its subtree hashes merge into the same checksum).
    let (obj, s) = encode_file(&file, data.len() as u64, Compression::Zstd(1)).unwrap();
    let (_, payload, _) = parts(&obj).unwrap();
    let (piece_len, pieces) = zstd_pieces(payload, s.len).expect("uniform pieces");
    assert_eq!(piece_len, 1 << 20);
    assert_eq!(pieces.len(), data.len().div_ceil(1 << 20));
    let out = Memory::new();
    assert_eq!(decode_to(&obj, 4, &out).unwrap(), s);
    assert_eq!(out.take(), data);
    // Asking for more than the file holds is an error, not a short object.
    assert!(encode_file(&file, data.len() as u64 + 1, Compression::Zstd(1)).is_err());
    let (empty, s) = encode_file(&file, 0, Compression::Zstd(1)).unwrap();
    assert_eq!((s.len, decode(&empty).unwrap()), (0, vec![]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn detects_any_flipped_byte_and_truncation() {
    let data = sample();
    for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
        let (obj, _) = encode(&data, c).unwrap();
        for pos in [
            0,
            9,
            HEADER_LEN,
            HEADER_LEN + 100,
            obj.len() / 2,
            obj.len() - 30,
            obj.len() - 1,
        ] {
            let mut bad = obj.clone();
            bad[pos] ^= 0x40;
            assert!(decode(&bad).is_err(), "{c}: flip at {pos} undetected");
        }
        for cut in [
            0,
            10,
            HEADER_LEN + TRAILER_LEN - 1,
            obj.len() / 2,
            obj.len() - 1,
        ] {
            assert!(
                decode(&obj[..cut]).is_err(),
                "{c}: truncation at {cut} undetected"
            );
        }
    }
}

#[test]
fn parses_compression_names() {
    assert_eq!(
        Compression::parse("zstd"),
        Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL))
    );
    assert_eq!(Compression::parse("zstd:9"), Some(Compression::Zstd(9)));
    assert_eq!(Compression::parse("LZ4"), Some(Compression::Lz4));
    assert_eq!(Compression::parse("none"), Some(Compression::None));
    assert_eq!(Compression::parse("zstd:99"), None);
    assert_eq!(Compression::parse("gzip"), None);
}

/// A payload that arrives a few hundred bytes at a time (ranged reads, in miniature).
struct Trickle<'a>(&'a [u8]);

impl io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(777);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Decodes `obj` with [`decode_stream_to`], its payload trickling in.
fn stream_decode(obj: &[u8], threads: usize) -> (Result<FrameSummary, FrameError>, Vec<u8>) {
    let (code, payload, summary) = parts(obj).unwrap();
    let out = Memory::new();
    let r = decode_stream_to(code, Trickle(payload), summary, threads, &out);
    (r, out.take())
}

#[test]
fn streamed_parallel_decode_matches_whole_decode_and_catches_damage() {
    for piece in [1024usize, 4096] {
        for pieces in [2usize, 3, 5, 9] {
            for tail in [0usize, 1, piece - 1] {
                let len = (pieces - 1) * piece + if tail == 0 { piece } else { tail };
                let data = pseudo_random(len);
                let obj = pieced(&data, piece);
                for threads in [1, 2, 3] {
                    let (r, out) = stream_decode(&obj, threads);
                    assert_eq!(r.unwrap().checksum, Checksum::of(&data));
                    assert!(out == data, "{piece} x {pieces} + {tail} on {threads}");
                }
                let mut bad = obj.clone();
                let at = bad.len() - TRAILER_LEN - 5;
                bad[at] ^= 0x10;
                assert!(stream_decode(&bad, 2).0.is_err());
                let mut cut = obj[..obj.len() - TRAILER_LEN - 3].to_vec();
                cut.extend_from_slice(&obj[obj.len() - TRAILER_LEN..]);
                assert!(stream_decode(&cut, 2).0.is_err());
            }
        }
    }
    // One zstd frame, no compression, LZ4: decoded in order, same result.
    let data = pseudo_random(50_000);
    for c in [Compression::Zstd(1), Compression::None, Compression::Lz4] {
        let (obj, _) = encode(&data, c).unwrap();
        let (r, out) = stream_decode(&obj, 3);
        assert_eq!(r.unwrap().len, data.len() as u64);
        assert!(out == data, "{c}");
    }
}

#[test]
fn member_encoder_writes_what_encode_writes_one_frame_after_another() {
    let data = sample();
    let pieces: Vec<&[u8]> = vec![&data[..8192], &data[100..20_000], &[], &data[..]];
    for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
        let mut enc = MemberEncoder::new(c).unwrap();
        let mut out = Vec::new();
        let mut at = Vec::new();
        for p in &pieces {
            let start = out.len();
            let s = enc.encode_into(p, &mut out).unwrap();
            at.push(start..out.len());
            assert_eq!(s, encode(p, c).unwrap().1, "{c}");
        }
        // Each member is a complete frame: cut out, it decodes alone to its own bytes.
        for (p, r) in pieces.iter().zip(at) {
            assert_eq!(&out[r.clone()], &encode(p, c).unwrap().0[..], "{c}");
            assert_eq!(decode(&out[r]).unwrap(), *p, "{c}");
        }
    }
}
