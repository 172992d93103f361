//! Partitioned tables on real servers, in both modes: writes aimed at the parent or straight at
//! a partition (one level down or two), at a partition created or attached while the daemon
//! runs, and a row moved between partitions, all reach the parent's route with their data and
//! nothing is dead-lettered.

mod common;

use std::time::Duration;

use common::{config_text, fenced, wait_until, Env, Msg, DB};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// `leads` by range of `created_on`; its 2025 partition is partitioned again, by `lead_id`.
const LEADS: &str = "CREATE TABLE leads (lead_id bigint, created_on date, tenant_id text, operation_code text, name text, \
       PRIMARY KEY (lead_id, created_on)) PARTITION BY RANGE (created_on); \
     CREATE TABLE leads_2024 PARTITION OF leads FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
     CREATE TABLE leads_2025 PARTITION OF leads FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY RANGE (lead_id); \
     CREATE TABLE leads_2025_low PARTITION OF leads_2025 FOR VALUES FROM (0) TO (1000);";

/// The route of `leads` (after the `[source]` keys): routing columns outside the primary key,
/// so logical mode needs `REPLICA IDENTITY FULL` for DELETEs.
const ROUTE: &str = "[[tables]]\ntable = \"public.leads\"\ntype = \"leads\"\ntenant = \"tenant_id\"\napp = { operation_code = \"operation_code\" }\n";

const LOGICAL: &str = "mode = \"logical\"";

/// A lead row as `to_jsonb` gives it.
fn lead(id: i64, day: &str, name: &str) -> Value {
    json!({"lead_id": id, "created_on": day, "tenant_id": "t1", "operation_code": "crm.leads.create", "name": name})
}

fn values(id: i64, day: &str, name: &str) -> String {
    format!("({id}, '{day}', 't1', 'crm.leads.create', '{name}')")
}

/// Every kind of write, each its own transaction, in this order.
fn write_everywhere(env: &Env) {
    env.sql(&format!(
        "INSERT INTO leads VALUES {}, {}",
        values(1, "2024-03-01", "via parent"),
        values(2, "2025-03-01", "via parent")
    ));
    env.sql(&format!(
        "INSERT INTO leads_2024 VALUES {}",
        values(3, "2024-04-01", "direct")
    ));
    env.sql("UPDATE leads_2024 SET name = 'direct update' WHERE lead_id = 3");
    env.sql("DELETE FROM leads_2025_low WHERE lead_id = 2");
    env.sql("CREATE TABLE leads_2026 PARTITION OF leads FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')");
    env.sql(&format!(
        "INSERT INTO leads_2026 VALUES {}",
        values(4, "2026-02-01", "new partition")
    ));
    env.sql("UPDATE leads_2026 SET name = 'new partition update' WHERE lead_id = 4");
    env.sql("DELETE FROM leads_2026 WHERE lead_id = 4");
    env.sql("CREATE TABLE leads_2027 (LIKE leads); ALTER TABLE leads ATTACH PARTITION leads_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')");
    env.sql(&format!(
        "INSERT INTO leads_2027 VALUES {}",
        values(5, "2027-02-01", "attached")
    ));
    env.sql("DELETE FROM leads_2027 WHERE lead_id = 5");
    env.sql("TRUNCATE leads_2027"); // a partition's TRUNCATE is captured in neither mode
    env.sql("UPDATE leads SET created_on = '2025-06-01' WHERE lead_id = 1");
}

/// What [`write_everywhere`] publishes before its last statement (the move), in order:
/// operation, recordId, data.
fn before_the_move() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "INSERT",
            "1,2024-03-01",
            lead(1, "2024-03-01", "via parent"),
        ),
        (
            "INSERT",
            "2,2025-03-01",
            lead(2, "2025-03-01", "via parent"),
        ),
        ("INSERT", "3,2024-04-01", lead(3, "2024-04-01", "direct")),
        (
            "UPDATE",
            "3,2024-04-01",
            lead(3, "2024-04-01", "direct update"),
        ),
        (
            "DELETE",
            "2,2025-03-01",
            lead(2, "2025-03-01", "via parent"),
        ),
        (
            "INSERT",
            "4,2026-02-01",
            lead(4, "2026-02-01", "new partition"),
        ),
        (
            "UPDATE",
            "4,2026-02-01",
            lead(4, "2026-02-01", "new partition update"),
        ),
        (
            "DELETE",
            "4,2026-02-01",
            lead(4, "2026-02-01", "new partition update"),
        ),
        ("INSERT", "5,2027-02-01", lead(5, "2027-02-01", "attached")),
        ("DELETE", "5,2027-02-01", lead(5, "2027-02-01", "attached")),
    ]
}

/// Runs [`write_everywhere`] under a daemon in `mode`; returns what was published.
async fn publish_everywhere(mode: &str, expected: usize) -> Vec<Msg> {
    let env = Env::start_with(LEADS, &format!("{mode}\n{ROUTE}"));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    if mode == LOGICAL {
        wait_until(
            WAIT,
            || daemon.log().contains("streaming from the slot"),
            || daemon.log(),
        )
        .await;
    }
    write_everywhere(&env);
    sub.wait_for(expected, WAIT, || daemon.log()).await;
    let msgs = fenced(&env, &sub).await;
    assert!(
        env.dead_letters().is_empty(),
        "{:?}\n{}",
        env.dead_letters(),
        daemon.log()
    );
    if mode != LOGICAL {
        wait_until(
            WAIT,
            || env.pending() == 0,
            || "change_log rows still pending".into(),
        )
        .await;
    }
    for m in &msgs {
        assert_eq!(
            (m.channel.as_str(), m.event["table"].as_str()),
            ("crm:t1:leads", Some("public.leads")),
            "{}",
            m.raw
        );
    }
    msgs
}

fn assert_events(msgs: &[Msg], expected: &[(&str, &str, Value)]) {
    let got: Vec<(&str, &str, &Value)> = msgs
        .iter()
        .map(|m| {
            (
                m.event["operation"].as_str().unwrap(),
                m.event["recordId"].as_str().unwrap(),
                &m.event["data"],
            )
        })
        .collect();
    let want: Vec<(&str, &str, &Value)> = expected.iter().map(|(o, r, d)| (*o, *r, d)).collect();
    assert_eq!(got, want);
    // the UPDATEs aimed at a partition, the setup-time one and the new one, carry old values
    assert_eq!(
        (&msgs[3].event["old"], &msgs[6].event["old"]),
        (
            &json!({"name": "direct"}),
            &json!({"name": "new partition"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_publishes_partition_writes_as_the_parent() {
    let mut expected = before_the_move();
    // the move is one UPDATE (the statement's transition tables hold both rows), but the key
    // changed with the partition, so no old row pairs with it: no `old`
    expected.push((
        "UPDATE",
        "1,2025-06-01",
        lead(1, "2025-06-01", "via parent"),
    ));
    let msgs = publish_everywhere("", expected.len()).await;
    assert_events(&msgs, &expected);
    assert!(msgs[10].event["old"].is_null(), "{}", msgs[10].raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_publishes_partition_writes_as_the_parent() {
    let mut expected = before_the_move();
    // pgoutput sends the move as a DELETE from the old partition and an INSERT into the new one
    expected.push((
        "DELETE",
        "1,2024-03-01",
        lead(1, "2024-03-01", "via parent"),
    ));
    expected.push((
        "INSERT",
        "1,2025-06-01",
        lead(1, "2025-06-01", "via parent"),
    ));
    let msgs = publish_everywhere(LOGICAL, expected.len()).await;
    assert_events(&msgs, &expected);
}

#[test]
fn a_partition_and_its_parent_cannot_both_be_configured() {
    let env = Env::start_with(LEADS, ROUTE);
    let path = env.dir.path().join("nested.toml");
    let nested = ROUTE.replace("public.leads", "public.leads_2025");
    std::fs::write(
        &path,
        config_text(
            &env.pg.url_for(DB),
            &env.redis.url(),
            &format!("{ROUTE}{nested}"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&path)
        .arg("setup")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "table public.leads_2025 is a partition of public.leads, which is configured too"
        ),
        "{err}"
    );
}
