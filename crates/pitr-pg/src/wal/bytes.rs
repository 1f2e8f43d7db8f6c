//! Bounds-checked little-endian reads: every access to untrusted bytes goes through here.

/// A read position in a byte slice; every read returns `None` instead of running off the end.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread bytes, without consuming them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Skips to the next multiple of 8 from the start of the buffer (MAXALIGN).
    pub(crate) fn align8(&mut self) -> Option<()> {
        let aligned = self.pos.checked_add(7)? & !7;
        if aligned > self.buf.len() {
            return None;
        }
        self.pos = aligned;
        Some(())
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|s| s.first().copied())
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    b.get(off..end)?.try_into().ok().map(u32::from_le_bytes)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    b.get(off..end)?.try_into().ok().map(u64::from_le_bytes)
}

/// Rounds up to a multiple of 8 (`MAXALIGN` on every platform PostgreSQL WAL comes from).
pub(crate) fn maxalign(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_never_run_off_the_end() {
        let mut c = Cursor::new(&[1, 0, 2, 0, 0, 0, 9]);
        assert_eq!(c.u16(), Some(1));
        assert_eq!(c.u32(), Some(2));
        assert_eq!(c.u16(), None);
        assert_eq!(c.u8(), Some(9));
        assert_eq!(c.u8(), None);
        assert_eq!(c.take(usize::MAX), None);
        let mut c = Cursor::new(&[0; 9]);
        c.u8();
        assert_eq!(c.align8(), Some(()));
        assert_eq!(c.pos(), 8);
        c.u8();
        assert_eq!(c.align8(), None);
        assert_eq!(u32_at(&[1, 2, 3], usize::MAX), None);
        assert_eq!(maxalign(9), 16);
        assert_eq!(maxalign(u64::MAX), u64::MAX - 7);
    }
}
