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
    let mut digits = itoa_buf(n);
    out.append(&mut digits);
    out.extend_from_slice(b"\r\n");
}

fn itoa_buf(mut n: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(8);
    loop {
        d.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    d.reverse();
    d
}

/// A reply, as far as the publisher cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Integer(i64),
    Error(String),
    /// Simple strings, bulk strings, nulls and arrays: acknowledged, content unused.
    Other,
}

/// Takes one complete reply off the front of `buf`; `Ok(None)` if more bytes are needed.
pub fn take_reply(buf: &mut BytesMut) -> Result<Option<Reply>, String> {
    match reply_len(buf, 0)? {
        None => Ok(None),
        Some((end, reply)) => {
            buf.advance(end);
            Ok(Some(reply))
        }
    }
}

/// Parses the reply starting at `at`: its end offset and value.
fn reply_len(buf: &[u8], at: usize) -> Result<Option<(usize, Reply)>, String> {
    let Some(line_end) = find_crlf(buf, at) else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[at + 1..line_end])
        .map_err(|_| "reply is not UTF-8".to_string())?;
    let next = line_end + 2;
    match buf.get(at) {
        Some(b'+') => Ok(Some((next, Reply::Other))),
        Some(b'-') => Ok(Some((next, Reply::Error(line.to_string())))),
        Some(b':') => line
            .parse()
            .map(|n| Some((next, Reply::Integer(n))))
            .map_err(|_| format!("bad integer reply {line:?}")),
        Some(b'$') => {
            let len: i64 = line
                .parse()
                .map_err(|_| format!("bad bulk length {line:?}"))?;
            if len < 0 {
                return Ok(Some((next, Reply::Other)));
            }
            let end = next + len as usize + 2;
            Ok((buf.len() >= end).then_some((end, Reply::Other)))
        }
        Some(b'*') => {
            let n: i64 = line
                .parse()
                .map_err(|_| format!("bad array length {line:?}"))?;
            let mut end = next;
            for _ in 0..n.max(0) {
                match reply_len(buf, end)? {
                    Some((e, _)) => end = e,
                    None => return Ok(None),
                }
            }
            Ok(Some((end, Reply::Other)))
        }
        other => Err(format!("unexpected reply type {other:?}")),
    }
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
        let all = b":3\r\n-ERR wrong\r\n+OK\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n:0\r\n";
        let mut buf = BytesMut::from(&all[..]);
        let mut got = Vec::new();
        while let Some(r) = take_reply(&mut buf).unwrap() {
            got.push(r);
        }
        use Reply::*;
        assert_eq!(
            got,
            [
                Integer(3),
                Error("ERR wrong".into()),
                Other,
                Other,
                Other,
                Other,
                Integer(0)
            ]
        );
        for cut in 0..all.len() {
            let mut partial = BytesMut::from(&all[..cut]);
            let mut n = 0;
            while take_reply(&mut partial).unwrap().is_some() {
                n += 1;
            }
            assert!(n <= 7, "a cut never yields a reply that is not there");
        }
        assert!(take_reply(&mut BytesMut::from(&b"?x\r\n"[..])).is_err());
    }
}
