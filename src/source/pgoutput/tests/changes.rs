//! Hand-built Insert, Update and Delete buffers, laid out as in the PostgreSQL docs, checked
//! in both directions and against every truncation.

use super::super::*;
use super::{cat, check, text};

/// The two-column tuple `(42, NULL)` in wire form.
fn tuple_42_null() -> (Vec<u8>, TupleData) {
    let bytes = cat(&[&[0, 2], &text("42"), b"n"]);
    (
        bytes,
        TupleData::new(vec![Column::Text(b"42".to_vec()), Column::Null]),
    )
}
#[test]
fn insert() {
    let bytes = cat(&[
        b"I",
        &7u32.to_be_bytes(),
        b"N",
        &[0, 4],
        &text("héllo"),
        b"n",
        b"u",
        b"b",
        &3i32.to_be_bytes(),
        &[0, 0xFF, 1],
    ]);
    let new = TupleData::new(vec![
        Column::Text("héllo".as_bytes().to_vec()),
        Column::Null,
        Column::UnchangedToast,
        Column::Binary(vec![0, 0xFF, 1]),
    ]);
    check(
        &bytes,
        Message::Insert(Insert {
            relation_id: 7,
            new,
        }),
    );
}

#[test]
fn update_without_old() {
    let (tuple_bytes, tuple) = tuple_42_null();
    let bytes = cat(&[b"U", &7u32.to_be_bytes(), b"N", &tuple_bytes]);
    check(
        &bytes,
        Message::Update(Update {
            relation_id: 7,
            old: None,
            new: tuple,
        }),
    );
}

#[test]
fn update_with_key() {
    let (tuple_bytes, tuple) = tuple_42_null();
    let key_bytes = cat(&[&[0, 2], &text("41"), b"n"]);
    let key = TupleData::new(vec![Column::Text(b"41".to_vec()), Column::Null]);
    let bytes = cat(&[
        b"U",
        &7u32.to_be_bytes(),
        b"K",
        &key_bytes,
        b"N",
        &tuple_bytes,
    ]);
    let msg = Update {
        relation_id: 7,
        old: Some(OldTuple::Key(key)),
        new: tuple,
    };
    check(&bytes, Message::Update(msg));
}

#[test]
fn update_with_old_row() {
    let (tuple_bytes, tuple) = tuple_42_null();
    let bytes = cat(&[
        b"U",
        &7u32.to_be_bytes(),
        b"O",
        &tuple_bytes,
        b"N",
        &tuple_bytes,
    ]);
    let msg = Update {
        relation_id: 7,
        old: Some(OldTuple::Old(tuple.clone())),
        new: tuple,
    };
    check(&bytes, Message::Update(msg));
}

#[test]
fn delete_with_key() {
    let (tuple_bytes, tuple) = tuple_42_null();
    let bytes = cat(&[b"D", &7u32.to_be_bytes(), b"K", &tuple_bytes]);
    check(
        &bytes,
        Message::Delete(Delete {
            relation_id: 7,
            old: OldTuple::Key(tuple),
        }),
    );
}

#[test]
fn delete_with_old_row() {
    let (tuple_bytes, tuple) = tuple_42_null();
    let bytes = cat(&[b"D", &7u32.to_be_bytes(), b"O", &tuple_bytes]);
    let msg = Delete {
        relation_id: 7,
        old: OldTuple::Old(tuple.clone()),
    };
    assert_eq!(msg.old.tuple(), &tuple);
    check(&bytes, Message::Delete(msg));
}
