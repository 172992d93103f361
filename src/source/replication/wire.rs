//! Backend message framing for the replication connection: a tag byte, a length, a body.
//! (postgres-protocol builds our frontend messages and does SCRAM; its backend parser has no
//! CopyBothResponse, which replication needs, so the few backend messages are read here.)

use bytes::{Buf, Bytes, BytesMut};

/// One backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub tag: u8,
    pub body: Bytes,
}

/// Bytes from the server that are not the replication protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid message length {0}")]
    Length(i32),
    #[error("truncated replication frame")]
    Truncated,
    #[error("unknown replication frame {0:?}")]
    UnknownFrame(Option<u8>),
    #[error("not a standby status update")]
    NotStatus,
    #[error("unexpected {what} (message {tag:?})")]
    Unexpected { what: &'static str, tag: char },
    #[error("{0} is too short")]
    Short(&'static str),
}

/// Takes one complete message off the front of `buf`, if there is one.
pub fn take(buf: &mut BytesMut) -> Result<Option<Backend>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(WireError::Length(len));
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let tag = frame.get_u8();
    frame.advance(4);
    Ok(Some(Backend { tag, body: frame }))
}

/// Writes a backend message (tests and tools use it to build frames).
pub fn put(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

/// The `M`essage field of an ErrorResponse, with its SQLSTATE: `message (SQLSTATE 42704)`.
pub fn error_text(body: &[u8]) -> String {
    let (mut message, mut code) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'M' => message = value,
            b'C' => code = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    format!("{message} (SQLSTATE {code})")
}

/// The SQLSTATE of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<String> {
    let text = error_text(body);
    let start = text.rfind("(SQLSTATE ")? + 10;
    Some(text[start..text.len() - 1].to_string())
}

/// A replication frame inside CopyData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `w`: WAL data; `data` is one pgoutput message.
    XLogData {
        start: u64,
        end: u64,
        time: i64,
        data: Bytes,
    },
    /// `k`: the server's WAL end and whether it wants a status reply now.
    Keepalive { end: u64, time: i64, reply: bool },
}

impl Frame {
    pub fn decode(mut body: Bytes) -> Result<Frame, WireError> {
        match body.first().copied() {
            Some(b'w') if body.len() >= 25 => {
                body.advance(1);
                let (start, end, time) = (body.get_u64(), body.get_u64(), body.get_i64());
                Ok(Frame::XLogData {
                    start,
                    end,
                    time,
                    data: body,
                })
            }
            Some(b'k') if body.len() >= 18 => {
                body.advance(1);
                Ok(Frame::Keepalive {
                    end: body.get_u64(),
                    time: body.get_i64(),
                    reply: body.get_u8() != 0,
                })
            }
            Some(b'w' | b'k') => Err(WireError::Truncated),
            other => Err(WireError::UnknownFrame(other)),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::XLogData {
                start,
                end,
                time,
                data,
            } => {
                out.push(b'w');
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&end.to_be_bytes());
                out.extend_from_slice(&time.to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::Keepalive { end, time, reply } => {
                out.push(b'k');
                out.extend_from_slice(&end.to_be_bytes());
                out.extend_from_slice(&time.to_be_bytes());
                out.push(u8::from(*reply));
            }
        }
    }
}

/// `r`: the standby status update we send: written, flushed and applied positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    pub write: u64,
    pub flush: u64,
    pub apply: u64,
    pub time: i64,
    pub reply: bool,
}

impl StandbyStatus {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'r');
        for v in [self.write, self.flush, self.apply] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.time.to_be_bytes());
        out.push(u8::from(self.reply));
    }

    pub fn decode(body: &[u8]) -> Result<StandbyStatus, WireError> {
        if body.len() != 34 || body[0] != b'r' {
            return Err(WireError::NotStatus);
        }
        let mut b = &body[1..];
        Ok(StandbyStatus {
            write: b.get_u64(),
            flush: b.get_u64(),
            apply: b.get_u64(),
            time: b.get_i64(),
            reply: b.get_u8() != 0,
        })
    }
}

/// Four bytes of `body` from `at`, or which message was too short.
pub fn head(body: &[u8], at: usize, what: &'static str) -> Result<[u8; 4], WireError> {
    body.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Short(what))
}

pub fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
    let mut b = body;
    let n = take_i16(&mut b)?;
    (0..n)
        .map(|_| {
            let len = take_i32(&mut b)?;
            if len < 0 {
                return Ok(None);
            }
            let (value, rest) = b
                .split_at_checked(len as usize)
                .ok_or(WireError::Short("a data row"))?;
            b = rest;
            Ok(Some(String::from_utf8_lossy(value).into_owned()))
        })
        .collect()
}

fn take_i16(b: &mut &[u8]) -> Result<i16, WireError> {
    let (v, rest) = b
        .split_first_chunk::<2>()
        .ok_or(WireError::Short("a message"))?;
    *b = rest;
    Ok(i16::from_be_bytes(*v))
}

fn take_i32(b: &mut &[u8]) -> Result<i32, WireError> {
    let (v, rest) = b
        .split_first_chunk::<4>()
        .ok_or(WireError::Short("a message"))?;
    *b = rest;
    Ok(i32::from_be_bytes(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for frame in [
            Frame::XLogData {
                start: 0x16B3748,
                end: 0x16B3800,
                time: 42,
                data: Bytes::from_static(b"B..."),
            },
            Frame::Keepalive {
                end: u64::MAX - 1,
                time: -7,
                reply: true,
            },
        ] {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            assert_eq!(Frame::decode(Bytes::from(bytes.clone())).unwrap(), frame);
            for cut in 1..bytes.len().min(18) {
                assert!(
                    Frame::decode(Bytes::from(bytes[..cut].to_vec())).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let status = StandbyStatus {
            write: 9,
            flush: 8,
            apply: 7,
            time: 6,
            reply: false,
        };
        let mut bytes = Vec::new();
        status.encode(&mut bytes);
        assert_eq!(StandbyStatus::decode(&bytes).unwrap(), status);
    }

    #[test]
    fn messages_are_taken_whole() {
        let mut buf = BytesMut::new();
        put(b'Z', b"I", &mut buf);
        put(
            b'E',
            b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0\0",
            &mut buf,
        );
        let mut partial = BytesMut::from(&buf[..7]);
        assert_eq!(
            take(&mut partial).unwrap(),
            Some(Backend {
                tag: b'Z',
                body: Bytes::from_static(b"I")
            })
        );
        assert_eq!(take(&mut partial).unwrap(), None);
        take(&mut buf).unwrap();
        let error = take(&mut buf).unwrap().unwrap();
        assert_eq!(
            error_text(&error.body),
            "replication slot \"x\" does not exist (SQLSTATE 42704)"
        );
        assert_eq!(error_code(&error.body).as_deref(), Some("42704"));
    }
}
