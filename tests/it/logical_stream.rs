//! Logical mode end to end: pgoutput from a replication slot to the same channels and the
//! same `data` as trigger mode, with the slot confirmed only past what Redis acknowledged.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{distinct, insert, restart_redis_after_a_retry, wait_until, Env};
use serde_json::Value;

const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
const WAIT: Duration = Duration::from_secs(30);

fn jsonb(env: &Env, sql: &str) -> Value {
    serde_json::from_str(env.sql(sql).trim()).unwrap()
}

fn confirmed(env: &Env) -> String {
    env.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice'")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_tables_reach_their_channels_with_to_jsonb_data() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    daemon.wait_for_log("streaming from the slot").await;
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) VALUES \
         ('c1', 'tenant-123', 'crm.leads.create', 2.50, '{\"tier\": [1, 2.0]}'), \
         ('c3', 'tenant-789', 'finance.invoice.generate', 1.25, NULL); \
         INSERT INTO roles VALUES ('r1', 'tenant-123', 'Sales manager', '{crm.leads.create,hrms.leave.approve}'); \
         INSERT INTO users VALUES (7, 'tenant-123', 'a@example.com', 'Ada', '{x,\"y z\"}', '2026-01-02');",
    );
    let c1_inserted = jsonb(
        &env,
        "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c1'",
    );
    let c3_before = jsonb(
        &env,
        "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c3'",
    );
    env.sql("UPDATE credit_configurations SET credit_cost = 3.00, updated_by = 'admin-123' WHERE config_id = 'c1'");
    env.sql("DELETE FROM credit_configurations WHERE config_id = 'c3'");
    let msgs = sub.wait_for(8, WAIT, || daemon.log()).await;
    let find = |op: &str, id: &str| {
        msgs.iter()
            .find(|m| m.event["operation"] == op && m.event["recordId"] == id)
            .unwrap()
            .clone()
    };
    let insert = find("INSERT", "c1");
    assert_eq!(insert.channel, "crm:tenant-123:credit-configs");
    assert_eq!(insert.event["data"], c1_inserted);
    assert_eq!(insert.event["source"]["mode"], "logical");
    assert!(
        insert.event["eventId"].as_str().unwrap().contains('/'),
        "{}",
        insert.raw
    );
    let update = find("UPDATE", "c1");
    assert_eq!(
        update.event["data"],
        jsonb(
            &env,
            "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c1'"
        )
    );
    assert_eq!(
        update.event["old"],
        serde_json::json!({"credit_cost": 2.50, "updated_by": null}),
        "REPLICA IDENTITY FULL gives old"
    );
    assert_eq!(find("DELETE", "c3").event["data"], c3_before);
    assert_eq!(
        find("DELETE", "c3").channel,
        "finance:tenant-789:credit-configs"
    );
    assert_eq!(
        find("INSERT", "7").event["data"],
        jsonb(&env, "SELECT to_jsonb(u) FROM users u WHERE user_id = 7")
    );
    let roles: HashSet<&str> = msgs
        .iter()
        .filter(|m| m.event["dataType"] == "roles")
        .map(|m| m.channel.as_str())
        .collect();
    assert_eq!(
        roles,
        HashSet::from(["crm:tenant-123:roles", "hrms:tenant-123:roles"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_work_is_never_published() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql("BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('gone', 't1', 'crm.a'); ROLLBACK;");
    env.sql(
        "BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('kept', 't1', 'crm.a'); \
         SAVEPOINT s; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('undone', 't1', 'crm.a'); \
         ROLLBACK TO SAVEPOINT s; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('last', 't1', 'crm.a'); COMMIT;",
    );
    let msgs = sub.wait_for(2, WAIT, || daemon.log()).await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["kept", "last"],
        "the last change of the transaction arrives last: nothing else in between"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_is_confirmed_only_past_what_redis_acknowledged() {
    let mut env = Env::start(&format!(
        "{LOGICAL}\n[delivery]\ninitial_backoff = \"3s\"\nmax_backoff = \"3s\""
    ));
    env.set_redis_timeout("1s");
    let daemon = env.daemon();
    daemon.wait_for_log("streaming from the slot").await;
    env.redis.stop().unwrap();
    let before = env.sql("SELECT pg_current_wal_lsn()").trim().to_string();
    insert(&env, 1, 200);
    daemon.wait_for_log("Redis is unavailable").await;
    let held = env.sql(&format!(
        "SELECT '{}'::pg_lsn <= '{before}'::pg_lsn",
        confirmed(&env)
    ));
    assert_eq!(
        held.trim(),
        "t",
        "confirmed {} must not pass {before} while Redis is down",
        confirmed(&env)
    );
    let sub = restart_redis_after_a_retry(&mut env, &daemon).await;
    wait_until!(WAIT, || distinct(&sub) == 200, || format!(
        "{} of 200\n{}",
        distinct(&sub),
        daemon.log()
    ))
    .await;
    wait_until!(
        WAIT,
        || {
            env.sql(&format!(
                "SELECT '{}'::pg_lsn > '{before}'::pg_lsn",
                confirmed(&env)
            ))
            .trim()
                == "t"
        },
        || daemon.log()
    )
    .await;
    assert!(env.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let env = Env::start(&format!("{LOGICAL}\nbatch_size = 100"));
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    daemon.wait_for_log("streaming from the slot").await;
    for chunk in 0..20 {
        insert(&env, chunk * 100 + 1, chunk * 100 + 100);
    }
    wait_until!(WAIT, || sub.count() >= 500, || daemon.log()).await;
    daemon.sigkill();
    let restarted = env.daemon();
    wait_until!(WAIT, || distinct(&sub) == 2000, || format!(
        "{} of 2000\n{}",
        distinct(&sub),
        restarted.log()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_the_slot_when_the_active_daemon_dies() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let mut active = env.daemon();
    active.wait_for_log("streaming from the slot").await;
    let standby = env.daemon();
    wait_until!(WAIT, || standby.log().contains("standby"), || standby.log()).await;
    insert(&env, 1, 10);
    sub.wait_for(10, WAIT, || active.log()).await;
    active.sigkill();
    insert(&env, 11, 20);
    wait_until!(WAIT, || distinct(&sub) == 20, || standby.log()).await;
    assert!(standby.log().contains("took over"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_stops_the_daemon_with_its_own_exit_code() {
    let env = Env::start(LOGICAL);
    env.sql("SELECT pg_drop_replication_slot('sluice')");
    let out = env.sluice(&["run"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("replication slot sluice does not exist"));
    assert_eq!(
        env.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "0",
        "never recreated silently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_in_the_middle_of_the_stream_is_followed() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let ins = |id: &str| {
        format!("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('{id}', 't1', 'crm.a')")
    };
    env.sql(&ins("before"));
    env.sql("ALTER TABLE credit_configurations ADD COLUMN region text DEFAULT 'eu'");
    env.sql(&ins("added"));
    env.sql("ALTER TABLE credit_configurations RENAME COLUMN region TO area");
    env.sql(&ins("renamed"));
    env.sql("ALTER TABLE credit_configurations DROP COLUMN area");
    env.sql(&ins("dropped"));
    let msgs = sub.wait_for(4, WAIT, || daemon.log()).await;
    for m in &msgs {
        let id = m.event["recordId"].as_str().unwrap();
        let want = jsonb(&env, &format!("SELECT to_jsonb(c) - 'updated_at' FROM credit_configurations c WHERE config_id = '{id}'"));
        let mut got = m.event["data"].clone();
        got.as_object_mut().unwrap().remove("updated_at");
        let extra = match id {
            "added" => Some(("region", "eu")),
            "renamed" => Some(("area", "eu")),
            _ => None,
        };
        if let Some((column, value)) = extra {
            assert_eq!(
                got.as_object_mut().unwrap().remove(column),
                Some(Value::from(value)),
                "{id}: {got}"
            );
        }
        assert_eq!(got, want, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_parked_not_lost_and_unpublished_tables_still_move_the_slot() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(&env, 1, 3);
    sub.wait_for(3, WAIT, || daemon.log()).await;
    env.sql("TRUNCATE credit_configurations");
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    let (reason, _, event_id) = env.dead_letters().remove(0);
    assert_eq!(
        reason, "missing_tenant",
        "a TRUNCATE has no tenant to route by"
    );
    assert!(event_id.contains('/'));
    // a table outside the publication: the heartbeat keeps the idle slot moving
    env.sql("CREATE TABLE other (id int); INSERT INTO other SELECT generate_series(1, 1000)");
    let now = env.sql("SELECT pg_current_wal_lsn()").trim().to_string();
    wait_until!(
        WAIT,
        || {
            env.sql(&format!(
                "SELECT '{}'::pg_lsn >= '{now}'::pg_lsn",
                confirmed(&env)
            ))
            .trim()
                == "t"
        },
        || daemon.log()
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_is_survived() {
    let env = Env::start(LOGICAL);
    crate::common::survive_a_postgres_crash(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_toasted_column_is_listed_not_shown_as_null() {
    let env = Env::start(LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    // 64 KB of incompressible text, stored out of line (TOAST)
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code, meta) \
             SELECT 'big', 't1', 'crm.a', jsonb_build_object('blob', string_agg(md5(g::text), '')) FROM generate_series(1, 2000) g");
    env.sql("UPDATE credit_configurations SET credit_cost = 9 WHERE config_id = 'big'");
    let msgs = sub.wait_for(2, WAIT, || daemon.log()).await;
    let update = msgs
        .iter()
        .find(|m| m.event["operation"] == "UPDATE")
        .unwrap();
    assert_eq!(
        update.event["unchangedColumns"],
        serde_json::json!(["meta"]),
        "{}",
        &update.raw[..200.min(update.raw.len())]
    );
    assert!(
        update.event["data"].get("meta").is_none(),
        "left out of data, never null"
    );
    assert_eq!(update.event["data"]["credit_cost"], serde_json::json!(9.0));
    let insert = msgs
        .iter()
        .find(|m| m.event["operation"] == "INSERT")
        .unwrap();
    assert!(insert.event["data"]["meta"]["blob"].as_str().unwrap().len() == 64_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_the_daemon_with_its_own_exit_code() {
    let env = Env::start(LOGICAL);
    env.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    env.sql("SELECT pg_reload_conf()");
    env.sql("CREATE TABLE filler (x text)");
    for _ in 0..6 {
        env.sql(
            "INSERT INTO filler SELECT repeat(md5(g::text), 20) FROM generate_series(1, 20000) g",
        );
        env.sql("SELECT pg_switch_wal()");
        env.sql("CHECKPOINT");
    }
    let status = env.sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'sluice'");
    assert_eq!(status.trim(), "lost", "the slot was invalidated");
    let check = String::from_utf8_lossy(&env.sluice(&["check"]).stdout).into_owned();
    assert!(check.contains("FAIL slot sluice: invalidated"), "{check}");
    let out = env.sluice(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("was invalidated") && stderr.contains("--recreate-slot"),
        "{stderr}"
    );
}
