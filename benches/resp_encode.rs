//! Our RESP command encoder (`publish::resp::command`, which writes a command's array of bulk
//! strings straight into the batch's buffer) against redis-protocol's
//! (`extend_encode_borrowed` of a `BorrowedFrame::Array`, the zero-copy form), which fred
//! already compiles in. Three commands of a channel transaction (the hot path): the `PUBLISH`
//! of a 600-byte event, the `XADD` of its history entry, and the meta's `HSET`.
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
    let xadd = vec![
        b"XADD".to_vec(),
        b"sluice:history:{crm:tenant-1:roles}".to_vec(),
        b"1234-0".to_vec(),
        b"event".to_vec(),
        event.clone(),
    ];
    let mut meta = vec![
        b"HSET".to_vec(),
        b"sluice:meta:{crm:tenant-1:roles}".to_vec(),
    ];
    for (k, v) in [
        ("epoch", "lzx1"),
        ("seq", "1234"),
        ("pos", "L00000000001a2b3c800000031"),
    ] {
        meta.push(k.as_bytes().to_vec());
        meta.push(v.as_bytes().to_vec());
    }
    vec![
        ("publish_600B", publish),
        ("xadd_600B", xadd),
        ("hset_meta", meta),
    ]
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
