//! Property tests: round trips over arbitrary tuples and changes, no panics on any input.

use proptest::prelude::*;

use super::super::*;

fn column() -> impl Strategy<Value = Column> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        Just(Column::Null),
        Just(Column::UnchangedToast),
        bytes().prop_map(Column::Text),
        bytes().prop_map(Column::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(column(), 0..16).prop_map(TupleData::new)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Old)
    ]
}

fn change() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), tuple())
            .prop_map(|(relation_id, new)| { Message::Insert(Insert { relation_id, new }) }),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(relation_id, old, new)| Message::Update(Update {
                relation_id,
                old,
                new
            })
        ),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_id, old)| { Message::Delete(Delete { relation_id, old }) }),
    ]
}

fn encoded(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out);
    out
}

proptest! {
    #[test]
    fn tuple_round_trips(t in tuple()) {
        let mut out = Vec::new();
        t.encode(&mut out);
        let mut r = Reader::new(&out);
        prop_assert_eq!(TupleData::decode(&mut r), Ok(t));
        prop_assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn change_round_trips(msg in change()) {
        let bytes = encoded(&msg);
        prop_assert_eq!(Message::decode(&bytes), Ok(msg));
    }

    #[test]
    fn change_prefixes_fail(msg in change()) {
        let bytes = encoded(&msg);
        for len in 0..bytes.len() {
            prop_assert!(Message::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn null_and_toast_never_confused(t in tuple()) {
        let bytes = encoded(&Message::Insert(Insert { relation_id: 1, new: t.clone() }));
        let Ok(Message::Insert(back)) = Message::decode(&bytes) else {
            return Err(TestCaseError::fail("not an insert"));
        };
        for (a, b) in t.columns.iter().zip(&back.new.columns) {
            prop_assert_eq!(matches!(a, Column::Null), matches!(b, Column::Null));
            prop_assert_eq!(matches!(a, Column::UnchangedToast), matches!(b, Column::UnchangedToast));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(msg) = Message::decode(&bytes) {
            prop_assert_eq!(encoded(&msg), bytes);
        }
    }

    #[test]
    fn tagged_garbage_never_panics(
        tag in proptest::sample::select(b"BCORYIUDTM".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        if let Ok(msg) = Message::decode(&bytes) {
            prop_assert_eq!(encoded(&msg), bytes);
        }
    }
}
