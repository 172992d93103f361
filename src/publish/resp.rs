//! The few RESP2 frames the publisher needs: commands as arrays of bulk strings, and replies.

use bytes::{Buf, BytesMut};

/// Appends a command (`*N` array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_len(out, args.len());
    for arg in args {
        out.push(b'$');
        push_len(out, arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without allocating (this runs several times per event).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A reply, as far as the publisher cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Integer(i64),
    Error(String),
    Bulk(Vec<u8>),
    /// `ROLE`'s answer, `HMGET`'s and `EXEC`'s results.
    Array(Vec<Reply>),
    /// Simple strings and nulls: acknowledged, content unused.
    Other,
}

impl Reply {
    /// Whether `ROLE`'s answer names a primary (`master`), the one role that takes writes;
    /// `None` when this is no answer to `ROLE`.
    pub fn is_primary_role(&self) -> Option<bool> {
        match self {
            Reply::Array(items) => match items.first() {
                Some(Reply::Bulk(role)) => Some(role == b"master"),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Bytes that are not RESP2.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad {what} {line:?}")]
    BadNumber { what: &'static str, line: String },
    #[error("a reply line is not UTF-8")]
    NotUtf8,
    #[error("unexpected reply type byte {0:?}")]
    UnknownType(u8),
    #[error("expected {0}")]
    Unexpected(&'static str),
}

/// Takes one complete reply off the front of `buf`; `Ok(None)` if more bytes are needed.
pub fn take_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    match reply_len(buf, 0)? {
        None => Ok(None),
        Some((end, reply)) => {
            buf.advance(end);
            Ok(Some(reply))
        }
    }
}

/// Parses the reply starting at `at`: its end offset and value.
fn reply_len(buf: &[u8], at: usize) -> Result<Option<(usize, Reply)>, ProtocolError> {
    let Some(line_end) = find_crlf(buf, at) else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[at + 1..line_end]).map_err(|_| ProtocolError::NotUtf8)?;
    let number = |what| {
        line.parse::<i64>().map_err(|_| ProtocolError::BadNumber {
            what,
            line: line.to_string(),
        })
    };
    let next = line_end + 2;
    match buf[at] {
        b'+' => Ok(Some((next, Reply::Other))),
        b'-' => Ok(Some((next, Reply::Error(line.to_string())))),
        b':' => Ok(Some((next, Reply::Integer(number("integer reply")?)))),
        b'$' => {
            let len = number("bulk length")?;
            if len < 0 {
                return Ok(Some((next, Reply::Other)));
            }
            let end = next + len as usize + 2;
            Ok((buf.len() >= end).then(|| (end, Reply::Bulk(buf[next..end - 2].to_vec()))))
        }
        b'*' => array(buf, next, number("array length")?),
        other => Err(ProtocolError::UnknownType(other)),
    }
}

/// An array of `n` replies starting at `at`.
fn array(buf: &[u8], at: usize, n: i64) -> Result<Option<(usize, Reply)>, ProtocolError> {
    if n < 0 {
        return Ok(Some((at, Reply::Other)));
    }
    let (mut end, mut items) = (at, Vec::with_capacity(n.min(1024) as usize));
    for _ in 0..n {
        match reply_len(buf, end)? {
            Some((e, item)) => {
                end = e;
                items.push(item);
            }
            None => return Ok(None),
        }
    }
    Ok(Some((end, Reply::Array(items))))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_bulk_string_arrays() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"crm:t1:x", b"{\"a\":1}"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$8\r\ncrm:t1:x\r\n$7\r\n{\"a\":1}\r\n"
        );
    }

    #[test]
    fn parses_replies_whole_or_not_at_all() {
        let all = b":3\r\n-ERR wrong\r\n+OK\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n:0\r\n*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:0\r\n";
        let mut buf = BytesMut::from(&all[..]);
        let mut got = Vec::new();
        while let Some(r) = take_reply(&mut buf).unwrap() {
            got.push(r);
        }
        use Reply::*;
        assert_eq!(
            got[..7],
            [
                Integer(3),
                Error("ERR wrong".into()),
                Other,
                Bulk(b"abc".to_vec()),
                Other,
                Array(vec![Integer(1), Bulk(b"x".to_vec())]),
                Integer(0)
            ]
        );
        assert_eq!(got[7].is_primary_role(), Some(true));
        assert_eq!(got[8].is_primary_role(), Some(false));
        assert_eq!(got[0].is_primary_role(), None);
        for cut in 0..all.len() {
            let mut partial = BytesMut::from(&all[..cut]);
            let mut n = 0;
            while take_reply(&mut partial).unwrap().is_some() {
                n += 1;
            }
            assert!(n <= 9, "a cut never yields a reply that is not there");
        }
        assert!(take_reply(&mut BytesMut::from(&b"?x\r\n"[..])).is_err());
    }
}
