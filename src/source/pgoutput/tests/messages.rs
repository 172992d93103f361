//! One hand-built buffer per non-row message type, laid out field by field as in the
//! PostgreSQL docs, checked in both directions and against every truncation.

use super::super::*;
use super::{cat, check};

#[test]
fn begin() {
    let bytes = [
        b'B', 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48, // final LSN 0/16B3748
        0, 0x03, 0x03, 0xD9, 0x4F, 0x1B, 0x8A, 0x40, // commit time
        0xF0, 0, 0, 0x01, // xid above 2^31
    ];
    let msg = Begin {
        final_lsn: 0x16B_3748,
        commit_ts: 848_656_800_123_456,
        xid: 0xF000_0001,
    };
    assert_eq!(fmt_lsn(msg.final_lsn), "0/16B3748");
    assert_eq!(fmt_timestamp(msg.commit_ts), "2026-11-22T10:00:00.123456Z");
    check(&bytes, Message::Begin(msg));
}

#[test]
fn commit() {
    let bytes = cat(&[
        b"C",
        &[0],
        &7u64.to_be_bytes(),
        &9u64.to_be_bytes(),
        &5i64.to_be_bytes(),
    ]);
    let msg = Commit {
        flags: 0,
        commit_lsn: 7,
        end_lsn: 9,
        commit_ts: 5,
    };
    check(&bytes, Message::Commit(msg));
}

#[test]
fn origin() {
    let bytes = cat(&[b"O", &0x1_0000_0000u64.to_be_bytes(), b"node_a\0"]);
    let msg = Origin {
        lsn: 0x1_0000_0000,
        name: "node_a".into(),
    };
    check(&bytes, Message::Origin(msg));
}

#[test]
fn relation() {
    let bytes = cat(&[
        b"R",
        &16_385u32.to_be_bytes(),
        b"public\0",
        b"orders\0",
        b"d",
        &[0, 2],
        &[1],
        b"id\0",
        &23u32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        &[0],
        b"note\0",
        &1043u32.to_be_bytes(),
        &68i32.to_be_bytes(),
    ]);
    let column = |flags, name: &str, type_oid, type_modifier| RelationColumn {
        flags,
        name: name.into(),
        type_oid,
        type_modifier,
    };
    let msg = Relation {
        id: 16_385,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![column(1, "id", 23, -1), column(0, "note", 1043, 68)],
    };
    assert!(msg.columns[0].is_key() && !msg.columns[1].is_key());
    assert_eq!(msg.qualified_name(), "public.orders");
    check(&bytes, Message::Relation(msg));
}

#[test]
fn type_message() {
    let bytes = cat(&[b"Y", &16_400u32.to_be_bytes(), b"public\0", b"mood\0"]);
    let msg = Type {
        id: 16_400,
        namespace: "public".into(),
        name: "mood".into(),
    };
    check(&bytes, Message::Type(msg));
}

#[test]
fn truncate() {
    let bytes = cat(&[
        b"T",
        &2u32.to_be_bytes(),
        &[3],
        &7u32.to_be_bytes(),
        &9u32.to_be_bytes(),
    ]);
    let msg = Truncate {
        options: 3,
        relation_ids: vec![7, 9],
    };
    assert!(msg.cascade() && msg.restart_identity());
    check(&bytes, Message::Truncate(msg));
}

#[test]
fn truncate_plain() {
    let bytes = cat(&[b"T", &1u32.to_be_bytes(), &[0], &7u32.to_be_bytes()]);
    let msg = Truncate {
        options: 0,
        relation_ids: vec![7],
    };
    assert!(!msg.cascade() && !msg.restart_identity());
    check(&bytes, Message::Truncate(msg));
}

#[test]
fn logical_message() {
    let bytes = cat(&[
        b"M",
        &[1],
        &0x16B_3748u64.to_be_bytes(),
        b"app\0",
        &3i32.to_be_bytes(),
        b"x\0y",
    ]);
    let msg = LogicalMessage {
        flags: 1,
        lsn: 0x16B_3748,
        prefix: "app".into(),
        content: b"x\0y".to_vec(),
    };
    assert!(msg.is_transactional());
    check(&bytes, Message::Logical(msg));
}

#[test]
fn logical_message_non_transactional_empty() {
    let bytes = cat(&[b"M", &[0], &1u64.to_be_bytes(), b"\0", &0i32.to_be_bytes()]);
    let msg = LogicalMessage {
        flags: 0,
        lsn: 1,
        prefix: String::new(),
        content: Vec::new(),
    };
    assert!(!msg.is_transactional());
    check(&bytes, Message::Logical(msg));
}
