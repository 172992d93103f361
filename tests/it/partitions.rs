//! Partitioned tables on real servers, in both modes: writes aimed at the parent or straight at
//! a partition (one level down or two), at a partition created or attached while the daemon
//! runs, and a row moved between partitions, all reach the parent's route with their data and
//! nothing is dead-lettered. Then what `check`, `setup` and `teardown` do with partitions.

use std::time::Duration;

use crate::common::{config_text, fenced, wait_until, Env, Msg, DB, SEED};
use serde_json::{json, Value};
use sluice::testkit::{Postgres, Redis};

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

/// An event as the test expects it: operation, then the lead's id, `created_on` and name.
type Expected = (&'static str, i64, &'static str, &'static str);

/// What [`write_everywhere`] publishes before its last statement (the move), in order.
const BEFORE_THE_MOVE: [Expected; 10] = [
    ("INSERT", 1, "2024-03-01", "via parent"),
    ("INSERT", 2, "2025-03-01", "via parent"),
    ("INSERT", 3, "2024-04-01", "direct"),
    ("UPDATE", 3, "2024-04-01", "direct update"),
    ("DELETE", 2, "2025-03-01", "via parent"),
    ("INSERT", 4, "2026-02-01", "new partition"),
    ("UPDATE", 4, "2026-02-01", "new partition update"),
    ("DELETE", 4, "2026-02-01", "new partition update"),
    ("INSERT", 5, "2027-02-01", "attached"),
    ("DELETE", 5, "2027-02-01", "attached"),
];

/// `INSERT INTO <table>` of one lead.
fn insert(env: &Env, table: &str, id: i64, day: &str, name: &str) {
    env.sql(&format!(
        "INSERT INTO {table} VALUES ({id}, '{day}', 't1', 'crm.leads.create', '{name}')"
    ));
}

fn scalar(env: &Env, sql: &str) -> String {
    env.sql(sql).trim().to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every kind of write, each its own transaction, in this order.
fn write_everywhere(env: &Env) {
    env.sql("INSERT INTO leads VALUES (1, '2024-03-01', 't1', 'crm.leads.create', 'via parent'), (2, '2025-03-01', 't1', 'crm.leads.create', 'via parent')");
    insert(env, "leads_2024", 3, "2024-04-01", "direct");
    env.sql("UPDATE leads_2024 SET name = 'direct update' WHERE lead_id = 3");
    env.sql("DELETE FROM leads_2025_low WHERE lead_id = 2");
    env.sql("CREATE TABLE leads_2026 PARTITION OF leads FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')");
    insert(env, "leads_2026", 4, "2026-02-01", "new partition");
    env.sql("UPDATE leads_2026 SET name = 'new partition update' WHERE lead_id = 4");
    env.sql("DELETE FROM leads_2026 WHERE lead_id = 4");
    env.sql("CREATE TABLE leads_2027 (LIKE leads); ALTER TABLE leads ATTACH PARTITION leads_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')");
    insert(env, "leads_2027", 5, "2027-02-01", "attached");
    env.sql("DELETE FROM leads_2027 WHERE lead_id = 5");
    env.sql("TRUNCATE leads_2027"); // a partition's TRUNCATE is captured in neither mode
    env.sql("UPDATE leads SET created_on = '2025-06-01' WHERE lead_id = 1");
}

/// Runs [`write_everywhere`] under a daemon in `mode`; returns what was published.
async fn publish_everywhere(mode: &str, expected: usize) -> Vec<Msg> {
    let env = Env::start_with(LEADS, &format!("{mode}\n{ROUTE}"));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    if mode == LOGICAL {
        daemon.wait_for_log("streaming from the slot").await;
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
        wait_until!(WAIT, || env.pending() == 0, || {
            "change_log rows still pending".into()
        })
        .await;
    }
    for m in &msgs {
        let (channel, table) = (m.channel.as_str(), m.event["table"].as_str());
        assert_eq!(
            (channel, table),
            ("crm:t1:leads", Some("public.leads")),
            "{}",
            m.raw
        );
    }
    msgs
}

/// The events are `expected`, in order, each with `recordId` `<id>,<created_on>` and `data` the
/// whole row.
fn assert_events(msgs: &[Msg], expected: &[Expected]) {
    let got: Vec<Value> = msgs
        .iter()
        .map(|m| json!([m.event["operation"], m.event["recordId"], m.event["data"]]))
        .collect();
    let row = |id, day, name| json!({"lead_id": id, "created_on": day, "tenant_id": "t1", "operation_code": "crm.leads.create", "name": name});
    let want: Vec<Value> = expected
        .iter()
        .map(|&(op, id, day, name)| json!([op, format!("{id},{day}"), row(id, day, name)]))
        .collect();
    assert_eq!(got, want);
    // the UPDATEs aimed at a partition, one there at setup and a new one, carry old values
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
    // the move is one UPDATE (the statement's transition tables hold both rows), but the key
    // changed with the partition, so no old row pairs with it: no `old`
    let expected = [
        &BEFORE_THE_MOVE[..],
        &[("UPDATE", 1, "2025-06-01", "via parent")],
    ]
    .concat();
    let msgs = publish_everywhere("", expected.len()).await;
    assert_events(&msgs, &expected);
    assert!(msgs[10].event["old"].is_null(), "{}", msgs[10].raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_publishes_partition_writes_as_the_parent() {
    // pgoutput sends the move as a DELETE from the old partition and an INSERT into the new one
    let moved = [
        ("DELETE", 1, "2024-03-01", "via parent"),
        ("INSERT", 1, "2025-06-01", "via parent"),
    ];
    let expected = [&BEFORE_THE_MOVE[..], &moved].concat();
    let msgs = publish_everywhere(LOGICAL, expected.len()).await;
    assert_events(&msgs, &expected);
}

/// Capture trigger copies on partitions (the parent's own four are not counted).
fn copies(env: &Env) -> String {
    scalar(env, "SELECT count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE c.relispartition AND g.tgname LIKE 'sluice_capture_%'")
}

fn event_trigger(env: &Env) -> String {
    scalar(
        env,
        "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'sluice_partitions'",
    )
}

/// `sluice check`'s report, asserting its exit status.
fn check(env: &Env, passes: bool) -> String {
    let out = env.sluice(&["check"]);
    let report = stdout(&out);
    assert_eq!(out.status.success(), passes, "{report}");
    report
}

fn setup(env: &Env) {
    let out = env.sluice(&["setup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trigger_mode_check_setup_and_teardown_cover_every_partition() {
    let env = Env::start_with(LEADS, ROUTE);
    assert_eq!(
        (copies(&env), event_trigger(&env)),
        ("9".to_string(), "1".to_string())
    );
    let report = check(&env, true);
    assert!(
        report.contains("ok   table public.leads: its 3 partitions have their capture triggers"),
        "{report}"
    );
    assert!(
        report.contains("ok   event trigger sluice_partitions: partitions added later are covered"),
        "{report}"
    );
    let dry = stdout(&env.sluice(&["setup", "--dry-run"]));
    assert!(
        dry.contains("SELECT sluice.cover_partitions('\"public\".\"leads\"');"),
        "{dry}"
    );

    env.sql("DROP TRIGGER sluice_capture_update ON leads_2025_low");
    let report = check(&env, false);
    assert!(report.contains("FAIL table public.leads: partition leads_2025_low has 2 of its 3 capture triggers, so writes aimed at it"), "{report}");
    setup(&env);
    assert_eq!(copies(&env), "9");
    check(&env, true);

    env.sql("ALTER TABLE leads DETACH PARTITION leads_2024");
    assert_eq!(
        copies(&env),
        "6",
        "a detached partition no longer logs as leads"
    );
    insert(&env, "leads_2024", 1, "2024-01-02", "detached");
    assert_eq!(scalar(&env, "SELECT count(*) FROM sluice.change_log"), "0");

    let out = env.sluice(&["teardown", "--yes"]);
    assert!(stdout(&out).contains("  - event trigger sluice_partitions (it covered partitions added to captured tables)\n"), "{}", stdout(&out));
    assert_eq!(
        (copies(&env), event_trigger(&env)),
        ("0".to_string(), "0".to_string())
    );
    setup(&env);
    assert_eq!(
        (copies(&env), event_trigger(&env)),
        ("6".to_string(), "1".to_string())
    );
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

#[test]
fn logical_mode_check_and_setup_give_every_partition_its_replica_identity() {
    let env = Env::start_with(LEADS, &format!("{LOGICAL}\n{ROUTE}"));
    let identities = || {
        scalar(
            &env,
            "SELECT string_agg(relname || ':' || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relname LIKE 'leads%' AND relkind IN ('r', 'p')",
        )
    };
    assert_eq!(
        identities(),
        "leads:f,leads_2024:f,leads_2025:f,leads_2025_low:f"
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT pubviaroot FROM pg_publication WHERE pubname = 'sluice'"
        ),
        "t"
    );
    let report = check(&env, true);
    assert!(
        report.contains("ok   table public.leads: its 3 partitions have their replica identity"),
        "{report}"
    );
    assert!(
        report.contains("ok   event trigger sluice_partitions"),
        "{report}"
    );
    assert!(
        report.contains(
            "ok   publication sluice: publishes partitions' changes as their partitioned table's"
        ),
        "{report}"
    );

    env.sql("ALTER TABLE leads_2025_low REPLICA IDENTITY DEFAULT");
    assert_eq!(
        identities(),
        "leads:f,leads_2024:f,leads_2025:f,leads_2025_low:f",
        "the event trigger puts it back"
    );
    env.sql("ALTER EVENT TRIGGER sluice_partitions DISABLE; ALTER TABLE leads_2025_low REPLICA IDENTITY DEFAULT");
    env.sql("ALTER PUBLICATION sluice SET (publish_via_partition_root = false)");
    let report = check(&env, false);
    assert!(report.contains("FAIL table public.leads: partition leads_2025_low lacks the table's REPLICA IDENTITY FULL"), "{report}");
    assert!(
        report.contains("WARN event trigger sluice_partitions: missing or disabled"),
        "{report}"
    );
    assert!(
        report.contains("FAIL publication sluice: publish_via_partition_root is off"),
        "{report}"
    );
    setup(&env);
    assert_eq!(
        identities(),
        "leads:f,leads_2024:f,leads_2025:f,leads_2025_low:f"
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT pubviaroot FROM pg_publication WHERE pubname = 'sluice'"
        ),
        "t",
        "setup turns it on"
    );
    check(&env, true);

    let out = env.sluice(&["teardown", "--yes"]);
    assert!(
        stdout(&out).contains("  - event trigger sluice_partitions"),
        "{}",
        stdout(&out)
    );
    assert_eq!(event_trigger(&env), "0");
}

#[test]
fn setup_by_a_non_superuser_covers_the_partitions_there_are_and_says_later_ones_need_it_again() {
    let (pg, redis) = (Postgres::start().unwrap(), Redis::start().unwrap());
    pg.psql("postgres", "CREATE ROLE owner LOGIN").unwrap();
    pg.psql("postgres", &format!("CREATE DATABASE {DB} OWNER owner"))
        .unwrap();
    pg.psql(DB, &format!("SET ROLE owner; {SEED}\n{LEADS}"))
        .unwrap();
    let url = format!("postgres://owner@127.0.0.1:{}/{DB}", pg.port());
    let redis_url = redis.url();
    let env = Env::start_on(pg, redis, |_| config_text(&url, &redis_url, ROUTE));
    let out = env.sluice(&["setup"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a superuser"),
        "{out:?}"
    );
    assert_eq!(
        (copies(&env), event_trigger(&env)),
        ("9".to_string(), "0".to_string())
    );
    let report = check(&env, true);
    assert!(
        report.contains("WARN event trigger sluice_partitions: missing or disabled"),
        "{report}"
    );

    env.sql("SET ROLE owner; CREATE TABLE leads_2026 PARTITION OF leads FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')");
    assert!(check(&env, false)
        .contains("FAIL table public.leads: partition leads_2026 has 0 of its 3 capture triggers"));
    setup(&env);
    assert_eq!(copies(&env), "12");
}
