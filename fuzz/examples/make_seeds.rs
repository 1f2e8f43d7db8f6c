//! Builds seed corpora from real WAL segments (the test fixtures, decompressed).
//!
//! `cargo run --example make_seeds -- <dir with segment files> <corpus dir>`
//! writes `<corpus>/wal_decoder/` (segment prefixes, with the 2-byte chunk-size prefix the
//! target expects) and `<corpus>/wal_record/` (record bodies with version, rmid and info).

use std::collections::HashMap;
use std::path::Path;

use pitr_pg::wal::WalDecoder;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (src, out) = match args.as_slice() {
        [_, s, o] => (Path::new(s), Path::new(o)),
        _ => {
            eprintln!("usage: make_seeds <segment dir> <corpus dir>");
            std::process::exit(2);
        }
    };
    let dec_dir = out.join("wal_decoder");
    let rec_dir = out.join("wal_record");
    std::fs::create_dir_all(&dec_dir)?;
    std::fs::create_dir_all(&rec_dir)?;
    let mut names: Vec<_> = std::fs::read_dir(src)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut per_kind: HashMap<(u32, u8, u8), usize> = HashMap::new();
    for (i, path) in names.iter().enumerate() {
        let seg = std::fs::read(path)?;
        for (j, (len, chunk)) in [(8192usize, 65535u16), (24_576, 999), (65_536, 8191)]
            .into_iter()
            .enumerate()
        {
            let mut seed = chunk.to_le_bytes().to_vec();
            seed.extend_from_slice(&seg[..len.min(seg.len())]);
            std::fs::write(dec_dir.join(format!("seg{i}-{j}")), seed)?;
        }
        let mut dec = WalDecoder::new();
        dec.feed(&seg);
        dec.finish();
        while let Ok(Some(r)) = dec.next_record() {
            let major = r.version.number();
            let key = (major, r.rmgr().0, r.header.info & 0xF0);
            let n = per_kind.entry(key).or_default();
            if *n >= 20 || r.raw().len() > 16_384 {
                continue;
            }
            *n += 1;
            let mut seed = vec![(major - 14) as u8, r.rmgr().0, r.header.info];
            seed.extend_from_slice(&r.raw()[24..]);
            std::fs::write(
                rec_dir.join(format!("{major}-{}-{:02x}-{n}", r.rmgr().0, r.header.info)),
                seed,
            )?;
        }
    }
    println!("seeds written to {}", out.display());
    Ok(())
}
