//! Our RESP command encoder (`publish::resp::command`, which writes a command's array of bulk
//! strings straight into the batch's buffer) against redis-protocol's
//! (`extend_encode_borrowed` of a `BorrowedFrame::Array`, the zero-copy form), which fred
//! already compiles in. Two shapes from the hot path: a `PUBLISH` with a 600-byte event, and a
//! channel script call carrying 50 events (4 arguments each), as a batch sends them.
//!
//! `cargo bench --bench resp_encode`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;
use sluice::publish::resp;

fn shapes() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let event = vec![b'x'; 600];
    let publish = vec![
        b"PUBLISH".to_vec(),
        b"crm:tenant-1:roles".to_vec(),
        event.clone(),
    ];
    let mut script = vec![b"EVALSHA".to_vec(), vec![b'a'; 40], b"3".to_vec()];
    for k in ["meta", "history", "state"] {
        script.push(format!("sluice:{k}:{{crm:tenant-1:roles}}").into_bytes());
    }
    for a in ["crm:tenant-1:roles", "lzx1", "10000", "86400000", "", "0"] {
        script.push(a.as_bytes().to_vec());
    }
    for i in 0..50 {
        script.push(format!("L{:016x}{i:08x}", 0x1a2b3c8u64).into_bytes());
        script.push(format!("role-{i}").into_bytes());
        script.push(b"0".to_vec());
        script.push(event.clone());
    }
    vec![("publish_600B", publish), ("script_50_events", script)]
}

fn encode(c: &mut Criterion) {
    for (name, args) in shapes() {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1000));
        group.bench_function("sluice_resp", |b| {
            let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
            b.iter(|| {
                out.clear();
                for _ in 0..1000 {
                    resp::command(&mut out, black_box(&args));
                }
                black_box(out.len())
            })
        });
        group.bench_function("redis_protocol", |b| {
            let mut out = BytesMut::with_capacity(1 << 20);
            b.iter(|| {
                out.clear();
                for _ in 0..1000 {
                    let frames: Vec<BorrowedFrame> = black_box(&args)
                        .iter()
                        .map(|a| BorrowedFrame::BulkString(a))
                        .collect();
                    extend_encode_borrowed(&mut out, &BorrowedFrame::Array(&frames), false)
                        .unwrap();
                }
                black_box(out.len())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
