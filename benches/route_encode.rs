//! The hot path "route + encode": how many captured changes one core turns into JSON event
//! bytes and a channel (`Router::route`, which resolves tenant and app(s), renders the channel
//! and invalidation keys, and encodes one envelope per app).
//!
//! No PostgreSQL or Redis is involved: inputs are built before timing, the router is compiled
//! from `config.example.toml`, and the output `Vec<Routed>` and scratch buffer are reused across
//! iterations (cleared, as the daemon does), so freeing the previous batch's events is counted.
//! Throughput is in changes; `role_fan_out` makes two events per change.
//!
//! Run with `cargo bench --bench route_encode` (a filter narrows it, e.g.
//! `cargo bench --bench route_encode -- wide_row`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::config::Config;
use sluice::event::{Change, Operation, SourceRef};
use sluice::route::{Routed, Router};

const BATCH: usize = 1000;
const CODES: [&str; 3] = [
    "crm.leads.create",
    "hrms.payroll.process",
    "finance.invoice.send",
];

fn router() -> Router {
    let config = Config::parse(
        include_str!("../config.example.toml"),
        Path::new("config.example.toml"),
    )
    .expect("config.example.toml parses");
    Router::compile(&config).expect("config.example.toml compiles")
}

fn change(i: usize, operation: Operation, table: &str, record_id: String, data: String) -> Change {
    Change {
        event_id: format!("cl:{}", 1_000_000 + i),
        operation,
        table: table.into(),
        record_id: Some(record_id),
        data,
        old: None,
        changed_fields: None,
        unchanged_columns: Vec::new(),
        timestamp: "2026-11-22T10:00:00.123456Z".into(),
        source: SourceRef {
            mode: "trigger",
            lsn: None,
            xid: Some(5_000_000 + i as u64),
            id: Some(1_000_000 + i as i64),
        },
        replay: None,
        fault: None,
    }
}

/// A row of `public.credit_configurations` as `to_jsonb(row)::text` would give it (~250 bytes).
fn credit_row(i: usize) -> String {
    format!(
        r#"{{"config_id": "config-789", "tenant_id": "tenant-{}", "operation_code": "{}", "credit_cost": 3.00, "is_active": true, "updated_by": "admin-123", "meta": {{"tier": [1, 2.0]}}, "updated_at": "2026-11-22T10:00:00.123456+00:00"}}"#,
        i % 50,
        CODES[i % CODES.len()]
    )
}

fn credit_inserts() -> Vec<Change> {
    (0..BATCH)
        .map(|i| {
            change(
                i,
                Operation::Insert,
                "public.credit_configurations",
                format!("config-{i}"),
                credit_row(i),
            )
        })
        .collect()
}

/// `public.roles` rows whose permissions span two apps (crm twice, hrms once).
fn role_changes() -> Vec<Change> {
    (0..BATCH)
        .map(|i| {
            let row = format!(
                r#"{{"name": "Sales manager", "role_id": "role-{i}", "tenant_id": "tenant-{}", "updated_at": "2026-11-22T10:00:00.123456+00:00", "updated_by": "admin-123", "permissions": ["crm.leads.read", "crm.leads.write", "hrms.leave.approve"]}}"#,
                i % 50
            );
            change(i, Operation::Insert, "public.roles", format!("role-{i}"), row)
        })
        .collect()
}

fn credit_updates() -> Vec<Change> {
    (0..BATCH)
        .map(|i| {
            let mut c = change(
                i,
                Operation::Update,
                "public.credit_configurations",
                format!("config-{i}"),
                credit_row(i),
            );
            c.old = Some(r#"{"credit_cost": 2.50}"#.into());
            c.changed_fields = Some(vec!["credit_cost".into()]);
            c
        })
        .collect()
}

/// A 2 KB, 30-column `public.credit_configurations` row: the routing columns plus 28 others of
/// mixed types, with a text column padded so the row is exactly 2048 bytes.
fn wide_row(i: usize) -> String {
    let mut cols: Vec<String> = vec![
        format!(r#""tenant_id": "tenant-{}""#, i % 50),
        format!(r#""operation_code": "{}""#, CODES[i % CODES.len()]),
        r#""config_id": "config-789""#.into(),
        r#""credit_cost": 3.00"#.into(),
        r#""is_active": true"#.into(),
        r#""updated_by": "admin-123""#.into(),
        r#""updated_at": "2026-11-22T10:00:00.123456+00:00""#.into(),
        r#""created_at": "2026-01-05T08:30:12.654321+00:00""#.into(),
        r#""meta": {"tier": [1, 2.0], "flags": {"beta": false, "region": "eu-west-1"}}"#.into(),
        r#""tags": ["billing", "premium", "q4-campaign", null]"#.into(),
        r#""valid_until": null"#.into(),
    ];
    for k in cols.len()..29 {
        cols.push(match k % 4 {
            0 => format!(r#""limit_{k}": {}"#, 1000 + k * 37),
            1 => format!(r#""ratio_{k}": 0.{:04}"#, k * 113),
            2 => format!(r#""note_{k}": "quota rule {k} for \"tenant\" plan\nline two""#),
            _ => format!(r#""enabled_{k}": {}"#, k % 2 == 0),
        });
    }
    let base: usize = cols.iter().map(|c| c.len() + 2).sum::<usize>() + 2; // ", " separators and braces
    let filler = 2048 - base - r#""description": """#.len();
    cols.push(format!(
        r#""description": "{}""#,
        &"Credit configuration for a premium tenant. ".repeat(64)[..filler]
    ));
    let row = format!("{{{}}}", cols.join(", "));
    debug_assert_eq!(cols.len(), 30);
    row
}

fn wide_rows() -> Vec<Change> {
    (0..BATCH)
        .map(|i| {
            change(
                i,
                Operation::Insert,
                "public.credit_configurations",
                format!("config-{i}"),
                wide_row(i),
            )
        })
        .collect()
}

/// Routes the batch once outside timing: every change must publish `events_per_change`
/// events, so the bench measures the happy path and not dead letters.
fn check(router: &Router, name: &str, changes: &[Change], events_per_change: usize) {
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    for c in changes {
        router.route(c, &mut out, &mut buf);
    }
    assert_eq!(
        out.len(),
        changes.len() * events_per_change,
        "{name}: wrong number of results"
    );
    let mut bytes = 0;
    for r in &out {
        match r {
            Routed::Publish(e) => bytes += e.payload.len(),
            other => panic!("{name}: expected Publish, got {other:?}"),
        }
    }
    let row = changes.iter().map(|c| c.data.len()).sum::<usize>() / changes.len();
    eprintln!(
        "{name}: row {row} B, event payload {} B on average, {events_per_change} event(s)/change",
        bytes / out.len()
    );
}

fn bench(c: &mut Criterion) {
    let router = router();
    let groups: [(&str, Vec<Change>, usize); 4] = [
        ("credit_config_insert", credit_inserts(), 1),
        ("role_fan_out", role_changes(), 2),
        ("update_with_old", credit_updates(), 1),
        ("wide_row", wide_rows(), 1),
    ];
    let mut group = c.benchmark_group("route_encode");
    for (name, changes, fan_out) in &groups {
        check(&router, name, changes, *fan_out);
        group.throughput(Throughput::Elements(changes.len() as u64));
        let mut out: Vec<Routed> = Vec::with_capacity(changes.len() * fan_out);
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        group.bench_function(*name, |b| {
            b.iter(|| {
                for change in changes {
                    router.route(black_box(change), &mut out, &mut buf);
                }
                black_box(&out);
                out.clear();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
