//! Tests of the pgoutput decoder: spec-shaped byte buffers, errors, properties, formatting.

mod cache;
mod changes;
mod errors;
mod format;
mod messages;
mod props;

use super::{DecodeError, Message};

/// Concatenates wire fields.
pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The parts of a `'t'` column: kind, Int32 length, bytes.
pub(super) fn text(s: &str) -> Vec<u8> {
    cat(&[b"t", &(s.len() as i32).to_be_bytes(), s.as_bytes()])
}

/// Checks decode(bytes) == msg, encode(msg) == bytes, and that every proper prefix and the
/// buffer plus one extra byte fail to decode.
pub(super) fn check(bytes: &[u8], msg: Message) {
    assert_eq!(Message::decode(bytes), Ok(msg.clone()));
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(out, bytes);
    assert_eq!(msg.tag(), bytes[0]);
    for len in 0..bytes.len() {
        let err = Message::decode(&bytes[..len]).expect_err("a prefix decoded");
        assert!(
            matches!(err, DecodeError::Truncated { .. }),
            "prefix {len}: {err:?}"
        );
    }
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(
        Message::decode(&long),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
}
