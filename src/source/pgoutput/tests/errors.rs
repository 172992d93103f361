//! Malformed input: each error kind, and no panics or huge allocations.

use super::super::*;

fn decode(parts: &[&[u8]]) -> Result<Message, DecodeError> {
    Message::decode(&parts.concat())
}

#[test]
fn empty_buffer_is_truncated() {
    assert_eq!(
        Message::decode(&[]),
        Err(DecodeError::Truncated {
            offset: 0,
            needed: 1
        })
    );
}

#[test]
fn unknown_tag() {
    assert_eq!(
        decode(&[b"Z", &[0; 20]]),
        Err(DecodeError::UnknownTag(b'Z'))
    );
    assert_eq!(decode(&[&[0xFF]]), Err(DecodeError::UnknownTag(0xFF)));
    let shown = DecodeError::UnknownTag(b'Z').to_string();
    assert!(shown.contains("'Z'") && shown.contains("0x5A"), "{shown}");
}

#[test]
fn streaming_and_two_phase_tags_are_unsupported() {
    for tag in *b"SEcAbPKrp" {
        assert_eq!(
            decode(&[&[tag], &[0; 40]]),
            Err(DecodeError::UnsupportedTag(tag))
        );
    }
}

#[test]
fn bad_tuple_kind() {
    let err = decode(&[b"I", &7u32.to_be_bytes(), b"N", &[0, 1], b"x"]);
    assert_eq!(err, Err(DecodeError::BadTupleKind(b'x')));
}

#[test]
fn bad_tuple_markers() {
    let rel = 7u32.to_be_bytes();
    let tuple: &[u8] = &[0, 1, b'n'];
    let marker = |expected, found| Err(DecodeError::BadTupleMarker { expected, found });
    assert_eq!(decode(&[b"I", &rel, b"K", tuple]), marker("'N'", b'K'));
    assert_eq!(
        decode(&[b"U", &rel, b"X", tuple]),
        marker("'K', 'O' or 'N'", b'X')
    );
    assert_eq!(
        decode(&[b"U", &rel, b"K", tuple, b"K", tuple]),
        marker("'N'", b'K')
    );
    assert_eq!(
        decode(&[b"D", &rel, b"N", tuple]),
        marker("'K' or 'O'", b'N')
    );
}

#[test]
fn negative_lengths() {
    let rel = 7u32.to_be_bytes();
    let err = decode(&[b"I", &rel, b"N", &(-1i16).to_be_bytes()]);
    assert_eq!(
        err,
        Err(DecodeError::NegativeLength {
            offset: 6,
            length: -1
        })
    );
    let err = decode(&[b"I", &rel, b"N", &[0, 1], b"t", &(-5i32).to_be_bytes()]);
    assert_eq!(
        err,
        Err(DecodeError::NegativeLength {
            offset: 9,
            length: -5
        })
    );
    let err = decode(&[b"M", &[0], &[0; 8], b"p\0", &i32::MIN.to_be_bytes()]);
    assert!(matches!(err, Err(DecodeError::NegativeLength { .. })));
}

#[test]
fn invalid_utf8() {
    let err = decode(&[b"O", &[0; 8], &[b'a', 0xC3, 0x28, 0]]);
    assert_eq!(err, Err(DecodeError::InvalidUtf8 { offset: 9 }));
}

#[test]
fn missing_nul_is_truncated() {
    let err = decode(&[b"O", &[0; 8], b"abc"]);
    assert_eq!(
        err,
        Err(DecodeError::Truncated {
            offset: 12,
            needed: 1
        })
    );
}

#[test]
fn bad_replica_identity() {
    let err = decode(&[b"R", &[0, 0, 0, 1], b"s\0", b"t\0", b"x", &[0, 0]]);
    assert_eq!(err, Err(DecodeError::BadReplicaIdentity(b'x')));
}

#[test]
fn huge_counts_fail_without_allocating() {
    let err = decode(&[b"T", &u32::MAX.to_be_bytes(), &[0], &[0; 8]]);
    assert_eq!(
        err,
        Err(DecodeError::Truncated {
            offset: 14,
            needed: 4
        })
    );
    let err = decode(&[b"I", &[0; 4], b"N", &[0, 1], b"b", &i32::MAX.to_be_bytes()]);
    assert!(matches!(err, Err(DecodeError::Truncated { .. })));
    let err = decode(&[b"R", &[0; 4], b"\0\0d", &i16::MAX.to_be_bytes()]);
    assert!(matches!(err, Err(DecodeError::Truncated { .. })));
}

#[test]
fn null_and_unchanged_toast_stay_distinct() {
    let decode_one = |kind: u8| {
        let msg = decode(&[b"I", &[0; 4], b"N", &[0, 1], &[kind]]);
        match msg {
            Ok(Message::Insert(insert)) => insert.new.columns,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(decode_one(b'n'), vec![Column::Null]);
    assert_eq!(decode_one(b'u'), vec![Column::UnchangedToast]);
    assert_ne!(Column::Null, Column::UnchangedToast);
}

#[test]
fn reader_reads_each_type() {
    let buf = [
        1, 0xFF, 0xFE, 0, 0, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 3, b'h', 0,
    ];
    let mut r = Reader::new(&buf);
    assert_eq!(r.u8(), Ok(1));
    assert_eq!(r.i16(), Ok(-2));
    assert_eq!(r.i32(), Ok(2));
    assert_eq!(r.u32(), Ok(u32::MAX));
    assert_eq!(r.i64(), Ok(3));
    assert_eq!(r.cstring().as_deref(), Ok("h"));
    assert_eq!(r.position(), buf.len());
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(r.bytes(0), Ok(&[][..]));
    assert_eq!(
        r.u64(),
        Err(DecodeError::Truncated {
            offset: buf.len(),
            needed: 8
        })
    );
}
