//! 10,000 mixed changes over 50 tenants: each arrives exactly once on its channel with
//! `data` equal to `to_jsonb(row)`; and with the daemon SIGKILLed half way, none is lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common;
use crate::common::{wait_until, Env, Msg};
use serde_json::Value;

const ROWS: i64 = 5_000;
const UPDATED: i64 = 3_000; // rows 1..=3000 are updated once, rows 3001..=5000 deleted
const TOTAL: usize = 10_000;
const CODES: [(&str, &str); 3] = [
    ("crm.leads.create", "crm"),
    ("hrms.payroll.process", "hrms"),
    ("finance.invoice.send", "finance"),
];

fn insert_sql(from: i64, to: i64) -> String {
    format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) \
         SELECT 'k' || g, 'tenant-' || (g % 50), (ARRAY['{}', '{}', '{}'])[g % 3 + 1], (g % 1000) / 100.0, \
                jsonb_build_object('g', g, 'half', g / 2.0) \
         FROM generate_series({from}, {to}) g;",
        CODES[0].0, CODES[1].0, CODES[2].0
    )
}

/// The whole workload as statements of 100 rows each, one transaction each.
fn workload() -> (Vec<String>, Vec<String>, Vec<String>) {
    let chunks = |to: i64, from: i64, f: &dyn Fn(i64, i64) -> String| -> Vec<String> {
        (from..=to)
            .step_by(100)
            .map(|a| f(a, (a + 99).min(to)))
            .collect()
    };
    let inserts = chunks(ROWS, 1, &insert_sql);
    let updates = chunks(UPDATED, 1, &|a, b| {
        format!(
            "UPDATE credit_configurations SET credit_cost = credit_cost + 1, updated_by = 'load' \
                 WHERE config_id IN (SELECT 'k' || g FROM generate_series({a}, {b}) g);"
        )
    });
    let deletes = chunks(ROWS, UPDATED + 1, &|a, b| {
        format!("DELETE FROM credit_configurations WHERE config_id IN (SELECT 'k' || g FROM generate_series({a}, {b}) g);")
    });
    (inserts, updates, deletes)
}

fn expected_channel(g: i64) -> String {
    format!(
        "{}:tenant-{}:credit-configs",
        CODES[(g % 3) as usize].1,
        g % 50
    )
}

fn rows_as_json(env: &Env) -> HashMap<String, Value> {
    let json = env.sql("SELECT coalesce(jsonb_object_agg(config_id, to_jsonb(c)), '{}') FROM credit_configurations c");
    serde_json::from_str(json.trim()).unwrap()
}

/// (operation, record id) -> channel, for every change of the workload.
fn expected_events() -> HashMap<(String, String), String> {
    let mut out = HashMap::new();
    for g in 1..=ROWS {
        let id = format!("k{g}");
        out.insert(("INSERT".to_string(), id.clone()), expected_channel(g));
        let second = if g <= UPDATED { "UPDATE" } else { "DELETE" };
        out.insert((second.to_string(), id), expected_channel(g));
    }
    assert_eq!(out.len(), TOTAL);
    out
}

fn key(m: &Msg) -> (String, String) {
    (
        m.event["operation"].as_str().unwrap().to_string(),
        m.event["recordId"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_changes_over_fifty_tenants_arrive_exactly_once() {
    exactly_once("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_changes_arrive_exactly_once_in_logical_mode_too() {
    exactly_once("mode = \"logical\"").await;
}

async fn exactly_once(mode: &str) {
    let env = Env::start(mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    if !mode.is_empty() {
        daemon.wait_for_log("streaming from the slot").await;
    }
    let (inserts, updates, deletes) = workload();
    env.sql(&inserts.concat());
    let after_insert = rows_as_json(&env);
    env.sql(&updates.concat());
    let after_update = rows_as_json(&env);
    env.sql(&deletes.concat());
    sub.wait_for(TOTAL, Duration::from_secs(120), || daemon.log())
        .await;
    if mode.is_empty() {
        wait_until!(Duration::from_secs(10), || env.pending() == 0, || {
            "rows still pending".into()
        })
        .await;
    }
    // a sentinel change, published after everything before it: a duplicate would precede it
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('sentinel', 't', 'crm.x')");
    let mut msgs = sub
        .wait_for(TOTAL + 1, Duration::from_secs(30), || daemon.log())
        .await;
    assert_eq!(
        msgs.pop().unwrap().event["recordId"],
        "sentinel",
        "nothing after the sentinel"
    );

    let expected = expected_events();
    assert_eq!(msgs.len(), TOTAL, "exactly once: no duplicate, no extra");
    let mut seen = HashSet::new();
    let mut tenants = HashSet::new();
    for m in &msgs {
        let k = key(m);
        assert_eq!(Some(&m.channel), expected.get(&k), "{k:?}");
        assert!(
            seen.insert(m.event["eventId"].as_str().unwrap().to_string()),
            "duplicate {k:?}"
        );
        let want = match k.0.as_str() {
            "INSERT" => &after_insert[&k.1],
            _ => &after_update[&k.1], // updated rows, and deleted rows as they were before the delete
        };
        assert_eq!(&m.event["data"], want, "{k:?}");
        tenants.insert(m.event["tenantId"].as_str().unwrap().to_string());
    }
    assert_eq!(tenants.len(), 50);
    assert!(env.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_ten_thousand_changes_loses_none() {
    let env = Env::start("batch_size = 200");
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    let (inserts, updates, deletes) = workload();
    let url = env.pg.url_for(common::DB);
    let writer = std::thread::spawn(move || {
        let pg = tokio::runtime::Runtime::new().unwrap();
        pg.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for statement in inserts.iter().chain(&updates).chain(&deletes) {
                client.batch_execute(statement).await.unwrap();
            }
        });
    });
    wait_until!(Duration::from_secs(60), || sub.count() >= 2_500, || daemon
        .log())
    .await;
    daemon.sigkill();
    let published_before_kill = sub.count();
    writer.join().unwrap();
    assert!(env.pending() > 0, "the kill happened with work left");
    let restarted = env.daemon();
    wait_until!(Duration::from_secs(120), || env.pending() == 0, || {
        restarted.log()
    })
    .await;
    let expected = expected_events();
    wait_until!(
        Duration::from_secs(30),
        || sub.all().iter().map(key).collect::<HashSet<_>>().len() == TOTAL,
        || {
            format!(
                "{} distinct of {TOTAL}",
                sub.all().iter().map(key).collect::<HashSet<_>>().len()
            )
        }
    )
    .await;
    let msgs = sub.all();
    for m in &msgs {
        assert_eq!(Some(&m.channel), expected.get(&key(m)));
    }
    let duplicates = msgs.len() - TOTAL;
    eprintln!("killed after {published_before_kill} events; {duplicates} duplicates from the unconfirmed tail");
    assert!(
        duplicates <= 2 * 200,
        "duplicates only from the batch in flight: {duplicates}"
    );
    assert!(env.dead_letters().is_empty());
}
