//! Backend messages of a replication connection, framed and decoded without panicking.
//!
//! Frontend messages are built with `postgres-protocol`'s `frontend` module; backend messages
//! are decoded here because `postgres-protocol`'s backend parser rejects `CopyBothResponse`
//! (`W`), the answer to `START_REPLICATION`, as an unknown tag. Decoding keeps `CopyData`
//! payloads as `Bytes` split off the read buffer: WAL and tar data are never copied here.

use bytes::{Buf, Bytes, BytesMut};

use crate::ServerMessage;

/// Largest backend message accepted: the server's own `CopyData` messages stay far below
/// (128 kB of WAL, 32 kB of tar data), so anything larger is garbage, not a message.
pub(crate) const MAX_MESSAGE_LEN: usize = 64 << 20;

/// A decoded backend message.
#[derive(Debug)]
pub(crate) enum Backend {
    /// `R`: an authentication request (code, then the code's payload).
    Auth(AuthRequest),
    /// `S`: a run-time parameter's value (not needed: the version is asked for).
    ParameterStatus,
    /// `K`: cancellation key (unused).
    KeyData,
    /// `Z`: ready for the next command.
    ReadyForQuery,
    /// `T`: a result set begins (column names are not needed: positions are documented).
    RowDescription,
    /// `D`: one row, each column as text or NULL.
    DataRow(Vec<Option<Bytes>>),
    /// `C`: command tag.
    CommandComplete(String),
    /// `I`: the query was empty.
    EmptyQuery,
    /// `E`: the command failed.
    Error(Box<ServerMessage>),
    /// `N`: a warning or notice.
    Notice(Box<ServerMessage>),
    /// `H`: the server starts sending COPY data.
    CopyOutResponse,
    /// `G`: the server waits for COPY data.
    CopyInResponse,
    /// `W`: both sides send COPY data (replication streaming).
    CopyBothResponse,
    /// `d`: COPY payload.
    CopyData(Bytes),
    /// `c`: end of COPY data.
    CopyDone,
    /// `v`: the server does not support a protocol option (we request none).
    NegotiateProtocolVersion,
}

/// The authentication requests pitr answers (others are refused by name).
#[derive(Debug)]
pub(crate) enum AuthRequest {
    /// 0.
    Ok,
    /// 3.
    Cleartext,
    /// 5, with the salt.
    Md5([u8; 4]),
    /// 10, with the mechanisms offered.
    Sasl(Vec<String>),
    /// 11, with the server's challenge.
    SaslContinue(Bytes),
    /// 12, with the server's signature.
    SaslFinal(Bytes),
    /// Another method (Kerberos, GSS, SSPI, ...): its code.
    Unsupported(u32),
}

/// Splits one message off `buf` and decodes it; `Ok(None)` means more bytes are needed.
pub(crate) fn next_message(buf: &mut BytesMut) -> Result<Option<Backend>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(format!(
            "invalid length {len} in a message of type {:?}",
            tag as char
        ));
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len + 1);
    frame.advance(5);
    let body = frame.freeze();
    decode(tag, body)
        .map(Some)
        .map_err(|what| format!("malformed message of type {:?}: {what}", tag as char))
}

/// A cursor over a message body whose reads fail instead of panicking.
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self) -> Result<u8, &'static str> {
        if self.0.is_empty() {
            return Err("truncated");
        }
        Ok(self.0.get_u8())
    }

    fn i16(&mut self) -> Result<i16, &'static str> {
        if self.0.len() < 2 {
            return Err("truncated");
        }
        Ok(self.0.get_i16())
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        if self.0.len() < 4 {
            return Err("truncated");
        }
        Ok(self.0.get_i32())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        Ok(self.0.split_to(n))
    }

    fn cstr(&mut self) -> Result<String, &'static str> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0.advance(end + 1);
        Ok(s)
    }
}

fn decode(tag: u8, body: Bytes) -> Result<Backend, &'static str> {
    let mut r = Reader(body);
    Ok(match tag {
        b'd' => Backend::CopyData(r.0),
        b'c' => Backend::CopyDone,
        b'R' => Backend::Auth(auth(&mut r)?),
        b'S' => {
            r.cstr()?;
            r.cstr()?;
            Backend::ParameterStatus
        }
        b'K' => Backend::KeyData,
        b'Z' => Backend::ReadyForQuery,
        b'T' => {
            let n = r.i16()?;
            for _ in 0..n {
                r.cstr()?;
                // table oid, column number, type oid, type size, type modifier, format
                r.bytes(18)?;
            }
            Backend::RowDescription
        }
        b'D' => {
            let n = r.i16()?;
            let mut cols = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let len = r.i32()?;
                cols.push(if len < 0 {
                    None
                } else {
                    Some(r.bytes(len as usize)?)
                });
            }
            Backend::DataRow(cols)
        }
        b'C' => Backend::CommandComplete(r.cstr()?),
        b'I' => Backend::EmptyQuery,
        b'E' => Backend::Error(server_message(&mut r)?),
        b'N' => Backend::Notice(server_message(&mut r)?),
        b'H' => Backend::CopyOutResponse,
        b'G' => Backend::CopyInResponse,
        b'W' => Backend::CopyBothResponse,
        b'v' => Backend::NegotiateProtocolVersion,
        _ => return Err("unknown message type"),
    })
}

fn auth(r: &mut Reader) -> Result<AuthRequest, &'static str> {
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.bytes(4)?;
            AuthRequest::Md5([s[0], s[1], s[2], s[3]])
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl(mechanisms)
        }
        11 => AuthRequest::SaslContinue(r.0.clone()),
        12 => AuthRequest::SaslFinal(r.0.clone()),
        other => AuthRequest::Unsupported(other as u32),
    })
}

/// The fields of an `ErrorResponse` / `NoticeResponse`.
fn server_message(r: &mut Reader) -> Result<Box<ServerMessage>, &'static str> {
    let mut m = ServerMessage {
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        let value = r.cstr()?;
        match field {
            b'C' => m.code = value,
            b'M' => m.message = value,
            b'D' => m.detail = Some(value),
            b'H' => m.hint = Some(value),
            _ => {}
        }
    }
    Ok(Box::new(m))
}

/// Big-endian readers for the fixed-size fields inside replication `CopyData` payloads.
pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    Some(u64::from_be_bytes([
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn decodes_copy_both_and_data_rows_and_waits_for_whole_frames() {
        let mut buf = frame(b'W', &[0, 0, 0]);
        buf.extend_from_slice(&frame(
            b'D',
            &[0, 2, 0, 0, 0, 1, b'7', 0xff, 0xff, 0xff, 0xff],
        ));
        let partial = frame(b'd', b"wal")[..6].to_vec();
        buf.extend_from_slice(&partial);
        assert!(matches!(
            next_message(&mut buf),
            Ok(Some(Backend::CopyBothResponse))
        ));
        match next_message(&mut buf) {
            Ok(Some(Backend::DataRow(cols))) => {
                assert_eq!(cols, vec![Some(Bytes::from_static(b"7")), None]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(next_message(&mut buf), Ok(None)));
        buf.extend_from_slice(b"al");
        match next_message(&mut buf) {
            Ok(Some(Backend::CopyData(d))) => assert_eq!(&d[..], b"wal"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&b""[..], &[0, 5, 0, 0], &[0, 1, 0, 0, 0, 9, b'x']] {
            let mut buf = frame(b'D', body);
            assert!(next_message(&mut buf).is_err(), "{body:?}");
        }
        let mut buf = frame(b'E', b"Mno terminator");
        assert!(next_message(&mut buf).is_err());
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 1][..]);
        assert!(next_message(&mut buf).is_err());
        let mut buf = frame(b'?', b"");
        assert!(next_message(&mut buf).is_err());
    }

    #[test]
    fn errors_keep_code_message_detail_and_hint() {
        let mut buf = frame(
            b'E',
            b"SERROR\0C28P01\0Mpassword authentication failed\0Hcheck it\0\0",
        );
        match next_message(&mut buf) {
            Ok(Some(Backend::Error(m))) => {
                assert_eq!(m.code, "28P01");
                assert_eq!(m.message, "password authentication failed");
                assert_eq!(m.hint.as_deref(), Some("check it"));
                assert_eq!(m.detail, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
