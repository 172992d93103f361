//! The hot path "decode": how many pgoutput row messages one core turns into [`Change`]s
//! (`Message::decode`, then `convert::change`, which renders the row as `to_jsonb`-equal JSON,
//! the record id and, for an UPDATE under REPLICA IDENTITY FULL, `old` and `changedFields`),
//! and, in `decode_route_encode`, on into event bytes and a channel as the daemon does.
//!
//! No server is involved. The message bytes are built before timing with the crate's own
//! encoders (`Insert::encode`, `Update::encode`, the round-trip counterparts of the decoders),
//! from values in the text form PostgreSQL sends; the schema is filled with
//! `Schema::insert`, as `Schema::observe` does after its catalog look-ups. One iteration is
//! a transaction of 1,000 messages, so throughput is in events per second on one core.
//!
//! Run with `cargo bench --bench decode` (a filter narrows it, e.g.
//! `cargo bench --bench decode -- wide`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::config::Config;
use sluice::event::Operation;
use sluice::route::{Routed, Router};
use sluice::source::logical::convert::{self, Schema, Txn};
use sluice::source::pgoutput::{
    Column, Insert, Message, OldTuple, Relation, RelationColumn, ReplicaIdentity, TupleData, Update,
};
use sluice::source::values::Kind;

const BATCH: usize = 1000;
const CODES: [&str; 3] = [
    "crm.leads.create",
    "hrms.payroll.process",
    "finance.invoice.send",
];
/// text, numeric, bool, jsonb, timestamptz, int4, float8, text[]
const TEXT: u32 = 25;
const NUMERIC: u32 = 1700;
const BOOL: u32 = 16;
const JSONB: u32 = 3802;
const TIMESTAMPTZ: u32 = 1184;
const INT4: u32 = 23;
const FLOAT8: u32 = 701;
const TEXT_ARRAY: u32 = 1009;

fn column(name: &str, type_oid: u32, key: bool) -> RelationColumn {
    RelationColumn {
        flags: u8::from(key),
        name: name.into(),
        type_oid,
        type_modifier: -1,
    }
}

/// public.credit_configurations as tests/fixtures/seed.sql creates it.
fn credit_relation(id: u32, identity: ReplicaIdentity) -> Relation {
    let full = identity == ReplicaIdentity::Full;
    let cols = [
        ("config_id", TEXT),
        ("tenant_id", TEXT),
        ("operation_code", TEXT),
        ("credit_cost", NUMERIC),
        ("is_active", BOOL),
        ("updated_by", TEXT),
        ("meta", JSONB),
        ("updated_at", TIMESTAMPTZ),
    ];
    let columns = cols
        .iter()
        .enumerate()
        .map(|(k, (name, oid))| column(name, *oid, k == 0 || full))
        .collect();
    Relation {
        id,
        namespace: "public".into(),
        name: "credit_configurations".into(),
        replica_identity: identity,
        columns,
    }
}

fn text(s: impl Into<String>) -> Column {
    Column::Text(s.into().into_bytes())
}

/// A credit_configurations row as pgoutput sends it (text format, ~150 bytes of values).
fn credit_tuple(i: usize, cost: &str) -> TupleData {
    TupleData::new(vec![
        text(format!("config-{i}")),
        text(format!("tenant-{}", i % 50)),
        text(CODES[i % CODES.len()]),
        text(cost),
        text("t"),
        text("admin-123"),
        text(r#"{"tier": [1, 2.0], "flags": {"beta": false}}"#),
        text("2026-11-22 10:00:00.123456+00"),
    ])
}

/// A 30-column relation of mixed types whose row is about 2 KB of text.
fn wide_relation(id: u32) -> Relation {
    let mut columns = vec![
        column("config_id", TEXT, true),
        column("tenant_id", TEXT, false),
        column("operation_code", TEXT, false),
    ];
    for k in 3..30 {
        let oid = [INT4, FLOAT8, BOOL, TEXT, JSONB, TIMESTAMPTZ, TEXT_ARRAY][k % 7];
        columns.push(column(&format!("c{k}"), oid, false));
    }
    Relation {
        id,
        namespace: "public".into(),
        name: "credit_configurations".into(),
        replica_identity: ReplicaIdentity::Default,
        columns,
    }
}

fn wide_tuple(i: usize) -> TupleData {
    let mut values = vec![
        text(format!("config-{i}")),
        text(format!("tenant-{}", i % 50)),
        text(CODES[i % CODES.len()]),
    ];
    for k in 3..30 {
        values.push(text(match k % 7 {
            0 => format!("{}", 1000 + k * 37),
            1 => format!("0.{:04}", k * 113),
            2 => "f".to_string(),
            3 => format!("quota rule {k} for \"tenant\" plan, line two: {}", "x".repeat(90)),
            4 => r#"{"tier": [1, 2.0], "flags": {"beta": false, "region": "eu-west-1"}, "tags": ["a", "b"]}"#.into(),
            5 => "2026-01-05 08:30:12.654321+00".into(),
            _ => r#"{billing,premium,"q4 campaign",NULL}"#.into(),
        }));
    }
    TupleData::new(values)
}

fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out);
    out
}

/// One case: the relation, its primary key, and a transaction's worth of encoded messages.
struct Case {
    name: &'static str,
    relation: Relation,
    messages: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    let insert = |rel: u32, new: TupleData| {
        encode(&Message::Insert(Insert {
            relation_id: rel,
            new,
        }))
    };
    let update = |i: usize| {
        let old = Some(OldTuple::Old(credit_tuple(i, "2.50")));
        encode(&Message::Update(Update {
            relation_id: 2,
            old,
            new: credit_tuple(i, "3.00"),
        }))
    };
    vec![
        Case {
            name: "insert",
            relation: credit_relation(1, ReplicaIdentity::Default),
            messages: (0..BATCH)
                .map(|i| insert(1, credit_tuple(i, "3.00")))
                .collect(),
        },
        Case {
            name: "update_full_identity",
            relation: credit_relation(2, ReplicaIdentity::Full),
            messages: (0..BATCH).map(update).collect(),
        },
        Case {
            name: "wide_insert_30_columns",
            relation: wide_relation(3),
            messages: (0..BATCH).map(|i| insert(3, wide_tuple(i))).collect(),
        },
    ]
}

fn schema(case: &Case) -> Schema {
    let kinds = case
        .relation
        .columns
        .iter()
        .map(|c| Kind::of_builtin(c.type_oid).expect("a built-in type"))
        .collect();
    let mut schema = Schema::default();
    schema.insert(&case.relation, &["config_id".to_string()], kinds);
    schema
}

/// Decodes one message and converts it: what the logical session does per row.
fn decode_convert(schema: &Schema, bytes: &[u8], txn: &mut Txn) -> sluice::event::Change {
    let (rel, op, new, old) = match Message::decode(bytes).expect("a valid message") {
        Message::Insert(i) => (i.relation_id, Operation::Insert, i.new, None),
        Message::Update(u) => (u.relation_id, Operation::Update, u.new, u.old),
        other => panic!("unexpected {other:?}"),
    };
    let table = schema.table(rel).expect("a known relation");
    convert::change(table, op, Some(&new), old.as_ref(), txn)
}

fn router() -> Router {
    let config = Config::parse(
        include_str!("../config.example.toml"),
        Path::new("config.example.toml"),
    )
    .expect("config.example.toml parses");
    Router::compile(&config).expect("the bench's routes compile")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    for case in cases() {
        let schema = schema(&case);
        let bytes: usize = case.messages.iter().map(Vec::len).sum();
        let sample = decode_convert(&schema, &case.messages[0], &mut Txn::new(1, 1, 0));
        eprintln!(
            "{}: message {} B on average, data {} B",
            case.name,
            bytes / BATCH,
            sample.data.len()
        );
        group.bench_function(format!("decode_only/{}", case.name), |b| {
            b.iter(|| {
                case.messages
                    .iter()
                    .for_each(|m| drop(black_box(Message::decode(black_box(m)))))
            })
        });
        group.bench_function(format!("decode_convert/{}", case.name), |b| {
            b.iter(|| {
                let mut txn = Txn::new(0x16B_3740, 5_000_000, 817_000_000_000_000);
                case.messages
                    .iter()
                    .for_each(|m| drop(black_box(decode_convert(&schema, m, &mut txn))))
            })
        });
    }
    decode_route_encode(&mut group);
    group.finish();
}

/// The whole CPU path of one row short of the socket: decode, convert, route, encode.
fn decode_route_encode(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    let (router, case) = (router(), cases().swap_remove(0));
    let schema = schema(&case);
    let (mut out, mut buf): (Vec<Routed>, Vec<u8>) =
        (Vec::with_capacity(BATCH), Vec::with_capacity(4096));
    group.bench_function("decode_route_encode/insert", |b| {
        b.iter(|| {
            let mut txn = Txn::new(0x16B_3740, 5_000_000, 817_000_000_000_000);
            for m in &case.messages {
                router.route(&decode_convert(&schema, m, &mut txn), &mut out, &mut buf);
            }
            assert!(
                matches!(out.last(), Some(Routed::Publish(_))),
                "the row routes to an app"
            );
            black_box(&out);
            out.clear();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
