//! A streaming reader for the tar archives `BASE_BACKUP` sends: sans-IO, fed chunks as they
//! arrive, returning entry headers and borrowed slices of file data, so a 1 GB relation
//! segment passes through without being held in memory.
//!
//! Why not the `tar` crate: it reads from a blocking `std::io::Read`, which would mean a
//! thread and a pipe per archive between the async stream and the parser; the format
//! PostgreSQL writes (`src/port/tar.c`: POSIX ustar, names up to 99 bytes, sizes above 8 GB in
//! base-256) takes a few dozen lines to read. GNU long names (`L`/`K`) are accepted too, pax
//! headers are refused by name. Never panics on any input.

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Longest GNU long name accepted.
const MAX_LONG_NAME: u64 = 64 * 1024;

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0` or NUL).
    File,
    /// A directory (`5`).
    Directory,
    /// A symbolic link (`2`), e.g. `pg_tblspc/<oid>` without a tablespace map.
    Symlink,
    /// A hard link (`1`).
    HardLink,
    /// Anything else, with its type flag.
    Other(u8),
}

/// An entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Path inside the archive (directories end without `/`).
    pub path: String,
    /// Kind.
    pub kind: EntryKind,
    /// Bytes of data that follow (0 for directories and links).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Target of a link.
    pub link_target: Option<String>,
}

/// What the parser found.
#[derive(Debug, PartialEq, Eq)]
pub enum TarEvent<'a> {
    /// An entry begins.
    Entry(TarEntry),
    /// The next bytes of the current entry's data.
    Data(&'a [u8]),
    /// The current entry's data is complete.
    EntryEnd,
    /// The end-of-archive marker (two zero blocks) was read.
    End,
}

/// Input that is not a tar archive PostgreSQL would write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header's checksum does not match.
    #[error("tar header at byte {offset} has a bad checksum (not a tar archive, or corrupted)")]
    Checksum {
        /// Offset of the header in the archive.
        offset: u64,
    },
    /// A numeric field is not octal or base-256.
    #[error("tar header at byte {offset}: field {field} is not a number: {value:?}")]
    BadNumber {
        /// Offset of the header.
        offset: u64,
        /// The field's name.
        field: &'static str,
        /// Its raw text.
        value: String,
    },
    /// A header kind pitr does not read.
    #[error(
        "tar header at byte {offset}: unsupported entry type {kind:?} (pax or another extension)"
    )]
    Unsupported {
        /// Offset of the header.
        offset: u64,
        /// The type flag.
        kind: char,
    },
    /// The archive ends inside an entry.
    #[error("tar archive truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the input ended.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// Non-zero bytes after the end-of-archive marker.
    #[error("data after the end of the tar archive at byte {offset}")]
    TrailingData {
        /// Where.
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header block.
    Header,
    /// Data of the current entry; `remaining` bytes left.
    Data,
    /// Announce the end of the current entry.
    EntryEnd,
    /// Skipping the zero padding to the next block.
    Padding,
    /// Collecting a GNU long name (`L`) or link name (`K`).
    LongName,
    /// After the end-of-archive marker.
    Ended,
}

/// The parser. Feed it with [`TarParser::parse`] until the input is used up, then call
/// [`TarParser::finish`] at the end of the stream.
#[derive(Debug)]
pub struct TarParser {
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    remaining: u64,
    padding: u64,
    offset: u64,
    zero_blocks: u8,
    long_kind: u8,
    long_buf: Vec<u8>,
    long_name: Option<String>,
    long_link: Option<String>,
}

impl Default for TarParser {
    fn default() -> Self {
        TarParser::new()
    }
}

fn padding_after(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The text of a NUL-terminated field.
fn field_str(f: &[u8]) -> String {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// An octal field (spaces and NULs around it allowed) or a base-256 one (high bit set).
fn number(f: &[u8], offset: u64, field: &'static str) -> Result<u64, TarError> {
    let bad = || TarError::BadNumber {
        offset,
        field,
        value: String::from_utf8_lossy(f).into_owned(),
    };
    if let Some((&first, rest)) = f.split_first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(bad()); // negative
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in rest {
                v = v.checked_mul(256).ok_or_else(bad)? | u64::from(b);
            }
            return Ok(v);
        }
    }
    let text: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad());
        }
        v = v.checked_mul(8).ok_or_else(bad)? + u64::from(b - b'0');
    }
    Ok(v)
}

impl TarParser {
    /// A parser at the start of an archive.
    pub fn new() -> TarParser {
        TarParser {
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            remaining: 0,
            padding: 0,
            offset: 0,
            zero_blocks: 0,
            long_kind: 0,
            long_buf: Vec::new(),
            long_name: None,
            long_link: None,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Consumes a prefix of `input` and returns how many bytes it used and the event found,
    /// if any. Call again with the rest until it returns `(0, None)`: some events (the end of
    /// an entry) need no input, so call once more with an empty slice at the end of a stream.
    pub fn parse<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<TarEvent<'a>>), TarError> {
        match self.state {
            State::EntryEnd => {
                self.state = if self.padding > 0 {
                    State::Padding
                } else {
                    State::Header
                };
                Ok((0, Some(TarEvent::EntryEnd)))
            }
            State::Data if self.remaining == 0 => {
                self.state = if self.padding > 0 {
                    State::Padding
                } else {
                    State::Header
                };
                Ok((0, Some(TarEvent::EntryEnd)))
            }
            State::Data => {
                let n = (self.remaining.min(input.len() as u64)) as usize;
                self.remaining -= n as u64;
                self.offset += n as u64;
                if self.remaining == 0 {
                    self.state = State::EntryEnd;
                }
                if n == 0 {
                    return Ok((0, None));
                }
                Ok((n, Some(TarEvent::Data(&input[..n]))))
            }
            State::Padding => {
                let n = (self.padding.min(input.len() as u64)) as usize;
                self.padding -= n as u64;
                self.offset += n as u64;
                if self.padding == 0 {
                    if self.long_kind != 0 {
                        self.finish_long_name();
                    }
                    self.state = State::Header;
                }
                Ok((n, None))
            }
            State::LongName => {
                let n = (self.remaining.min(input.len() as u64)) as usize;
                self.long_buf.extend_from_slice(&input[..n]);
                self.remaining -= n as u64;
                self.offset += n as u64;
                if self.remaining == 0 {
                    if self.padding > 0 {
                        self.state = State::Padding;
                    } else {
                        self.finish_long_name();
                        self.state = State::Header;
                    }
                }
                Ok((n, None))
            }
            State::Ended => {
                if let Some(pos) = input.iter().position(|&b| b != 0) {
                    return Err(TarError::TrailingData {
                        offset: self.offset + pos as u64,
                    });
                }
                self.offset += input.len() as u64;
                Ok((input.len(), None))
            }
            State::Header => self.header(input),
        }
    }

    fn finish_long_name(&mut self) {
        let text = field_str(&self.long_buf);
        if self.long_kind == b'K' {
            self.long_link = Some(text);
        } else {
            self.long_name = Some(text);
        }
        self.long_kind = 0;
        self.long_buf.clear();
    }

    fn header<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<TarEvent<'a>>), TarError> {
        let n = (BLOCK - self.filled).min(input.len());
        self.block[self.filled..self.filled + n].copy_from_slice(&input[..n]);
        self.filled += n;
        self.offset += n as u64;
        if self.filled < BLOCK {
            return Ok((n, None));
        }
        self.filled = 0;
        let at = self.offset - BLOCK as u64;
        let h = &self.block;
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::Ended;
                return Ok((n, Some(TarEvent::End)));
            }
            return Ok((n, None));
        }
        self.zero_blocks = 0;
        verify_checksum(h, at)?;
        let size = number(&h[124..136], at, "size")?;
        let typeflag = h[156];
        match typeflag {
            b'L' | b'K' => {
                if size > MAX_LONG_NAME {
                    return Err(TarError::BadNumber {
                        offset: at,
                        field: "long name size",
                        value: size.to_string(),
                    });
                }
                self.long_kind = typeflag;
                self.remaining = size;
                self.padding = padding_after(size);
                self.state = State::LongName;
                if size == 0 {
                    self.finish_long_name();
                    self.state = State::Header;
                }
                return Ok((n, None));
            }
            b'x' | b'g' => {
                return Err(TarError::Unsupported {
                    offset: at,
                    kind: typeflag as char,
                })
            }
            _ => {}
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink,
            b'1' => EntryKind::HardLink,
            other => EntryKind::Other(other),
        };
        let mut path = self.long_name.take().unwrap_or_else(|| header_path(h));
        while path.len() > 1 && path.ends_with('/') {
            path.pop();
        }
        let link = self.long_link.take().or_else(|| {
            let l = field_str(&h[157..257]);
            (!l.is_empty()).then_some(l)
        });
        let data_size = match kind {
            EntryKind::File | EntryKind::Other(_) => size,
            _ => 0,
        };
        let entry = TarEntry {
            path,
            kind,
            size: data_size,
            mode: number(&h[100..108], at, "mode")? as u32,
            mtime: number(&h[136..148], at, "mtime")? as i64,
            link_target: matches!(kind, EntryKind::Symlink | EntryKind::HardLink)
                .then_some(link)
                .flatten(),
        };
        self.remaining = data_size;
        self.padding = padding_after(data_size);
        self.state = State::Data;
        Ok((n, Some(TarEvent::Entry(entry))))
    }

    /// Checks the archive may end here: between entries (PostgreSQL 14's server sends no
    /// end-of-archive marker; pg_basebackup adds it) or after the marker.
    pub fn finish(&self) -> Result<(), TarError> {
        let truncated = |what| {
            Err(TarError::Truncated {
                offset: self.offset,
                what,
            })
        };
        match self.state {
            State::Ended => Ok(()),
            State::Header
                if self.filled == 0 && self.long_name.is_none() && self.long_link.is_none() =>
            {
                Ok(())
            }
            State::Header => truncated("inside a header"),
            State::Data | State::EntryEnd => truncated("inside an entry's data"),
            State::Padding => truncated("inside the padding after an entry"),
            State::LongName => truncated("inside a long name"),
        }
    }
}

/// Checks a header block's checksum (the sum of its bytes with the checksum field read as
/// spaces; some writers summed signed bytes).
fn verify_checksum(h: &[u8; BLOCK], at: u64) -> Result<(), TarError> {
    let stored = number(&h[148..156], at, "checksum")?;
    let byte = |i: usize, b: u8| -> (u64, i64) {
        if (148..156).contains(&i) {
            (32, 32)
        } else {
            (u64::from(b), i64::from(b as i8))
        }
    };
    let (unsigned, signed) = h.iter().enumerate().fold((0u64, 0i64), |(u, s), (i, &b)| {
        let (bu, bs) = byte(i, b);
        (u + bu, s + bs)
    });
    if stored != unsigned && stored as i64 != signed {
        return Err(TarError::Checksum { offset: at });
    }
    Ok(())
}

/// The path a header names itself: `name`, after ustar's `prefix` when there is one.
fn header_path(h: &[u8; BLOCK]) -> String {
    let name = field_str(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        field_str(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header as PostgreSQL's `tarCreateHeader` writes it.
    fn header(name: &str, kind: u8, size: u64, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o} ").as_bytes());
        h[136..148].copy_from_slice(b"14000000000 ");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn archive(with_end: bool) -> Vec<u8> {
        let mut a = header("base/1/", b'5', 0, "");
        a.extend(header("base/1/1259", b'0', 700, ""));
        a.extend((0..700u32).map(|i| (i % 251) as u8));
        a.extend(vec![0u8; 1024 - 700]);
        a.extend(header("pg_tblspc/16384", b'2', 0, "/srv/ts"));
        a.extend(header("PG_VERSION", b'0', 3, ""));
        a.extend(b"17\n");
        a.extend(vec![0u8; BLOCK - 3]);
        if with_end {
            a.extend(vec![0u8; 2 * BLOCK + 3 * BLOCK]);
        }
        a
    }

    /// Entries, data per entry, and whether the end marker was seen.
    type Read = (Vec<TarEntry>, Vec<Vec<u8>>, bool);

    /// Feeds `input` in chunks of `chunk` bytes.
    fn read(input: &[u8], chunk: usize) -> Result<Read, TarError> {
        let mut p = TarParser::new();
        let (mut entries, mut data, mut ended) = (Vec::new(), Vec::<Vec<u8>>::new(), false);
        let mut open = false;
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            loop {
                let (n, ev) = p.parse(rest)?;
                rest = &rest[n..];
                match ev {
                    Some(TarEvent::Entry(e)) => {
                        assert!(!open);
                        open = true;
                        entries.push(e);
                        data.push(Vec::new());
                    }
                    Some(TarEvent::Data(d)) => data.last_mut().unwrap().extend_from_slice(d),
                    Some(TarEvent::EntryEnd) => open = false,
                    Some(TarEvent::End) => ended = true,
                    None if rest.is_empty() => break,
                    None => {}
                }
            }
        }
        // Events that need no input (the last entry's end).
        while let (0, Some(ev)) = p.parse(&[])? {
            if ev == TarEvent::EntryEnd {
                open = false;
            }
        }
        assert!(!open || p.finish().is_err());
        p.finish()?;
        Ok((entries, data, ended))
    }

    #[test]
    fn reads_entries_and_data_in_any_chunking() {
        let a = archive(true);
        for chunk in [1, 7, 511, 512, 513, 4096, a.len()] {
            let (entries, data, ended) = read(&a, chunk).unwrap();
            let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                names,
                ["base/1", "base/1/1259", "pg_tblspc/16384", "PG_VERSION"]
            );
            assert_eq!(entries[0].kind, EntryKind::Directory);
            assert_eq!(entries[1].size, 700);
            assert_eq!(
                data[1],
                (0..700u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()
            );
            assert_eq!(entries[2].kind, EntryKind::Symlink);
            assert_eq!(entries[2].link_target.as_deref(), Some("/srv/ts"));
            assert_eq!(data[3], b"17\n");
            assert_eq!(entries[3].mode, 0o600);
            assert_eq!(entries[3].mtime, 0o14000000000);
            assert!(ended, "chunk {chunk}");
        }
    }

    #[test]
    fn an_archive_without_end_marker_ends_between_entries() {
        let (entries, _, ended) = read(&archive(false), 100).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(!ended);
    }

    #[test]
    fn truncation_corruption_and_extensions_are_errors() {
        let a = archive(true);
        let cut = BLOCK + BLOCK + 100; // inside base/1/1259's data
        assert!(matches!(
            read(&a[..cut], 64),
            Err(TarError::Truncated { .. })
        ));
        assert!(matches!(
            read(&a[..BLOCK + 10], 64),
            Err(TarError::Truncated { .. })
        ));
        let mut bad = a.clone();
        bad[BLOCK + 3] ^= 1; // a name byte of the second header
        assert_eq!(
            read(&bad, 512).unwrap_err(),
            TarError::Checksum { offset: 512 }
        );
        let pax = header("PaxHeader/x", b'x', 0, "");
        assert!(matches!(
            read(&pax, 512),
            Err(TarError::Unsupported { kind: 'x', .. })
        ));
        let mut trailing = a.clone();
        trailing.push(1);
        assert!(matches!(
            read(&trailing, 512),
            Err(TarError::TrailingData { .. })
        ));
        // Garbage never panics.
        let mut x: u32 = 1;
        let junk: Vec<u8> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        assert!(read(&junk, 333).is_err());
    }

    #[test]
    fn mutated_archives_never_panic_or_overrun_entries() {
        let base = archive(true);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut a = base.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() % a.len() as u64) as usize;
                a[i] = next() as u8;
            }
            a.truncate((next() % (a.len() as u64 + 1)) as usize);
            let chunk = (next() % 700 + 1) as usize;
            let mut p = TarParser::new();
            let mut left: u64 = 0;
            'feed: for piece in a.chunks(chunk) {
                let mut rest = piece;
                loop {
                    let Ok((n, ev)) = p.parse(rest) else {
                        break 'feed;
                    };
                    rest = &rest[n..];
                    match ev {
                        Some(TarEvent::Entry(e)) => left = e.size,
                        Some(TarEvent::Data(d)) => {
                            assert!(d.len() as u64 <= left);
                            left -= d.len() as u64;
                        }
                        Some(TarEvent::EntryEnd) => assert_eq!(left, 0),
                        Some(TarEvent::End) => {}
                        None if rest.is_empty() => break,
                        None => {}
                    }
                }
            }
            let _ = p.finish();
        }
    }

    #[test]
    fn long_names_and_base_256_sizes() {
        let long = format!("base/{}", "x".repeat(200));
        let mut a = header("././@LongLink", b'L', long.len() as u64 + 1, "");
        a.extend(long.as_bytes());
        a.push(0);
        a.extend(vec![0u8; padding_after(long.len() as u64 + 1) as usize]);
        a.extend(header("base/trunc", b'0', 1, ""));
        a.push(b'z');
        a.extend(vec![0u8; BLOCK - 1]);
        let (entries, data, _) = read(&a, 100).unwrap();
        assert_eq!(entries[0].path, long);
        assert_eq!(data[0], b"z");

        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..12].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(number(&f, 0, "size").unwrap(), 9 << 30);
        assert!(number(b"12x4\0", 0, "size").is_err());
    }
}
