//! `schema/event.schema.json` is the one description of the event: the consumer SDKs check
//! their types against it, and this checks what the daemon publishes against it: every
//! operation, numbered as the channel script numbers it, and as replays publish it, from a
//! live daemon on real servers in both capture modes.

use std::time::Duration;

use crate::common::Env;

const WAIT: Duration = Duration::from_secs(30);

fn validator() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/event.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn assert_valid(validator: &jsonschema::Validator, raw: &str) {
    let event: serde_json::Value = serde_json::from_str(raw).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&event)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{raw}\n{errors:#?}");
}

async fn published_events_match_the_schema(mode: &str) {
    let env = Env::start_with("ALTER TABLE roles REPLICA IDENTITY FULL;", mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) VALUES ('c1', 't1', 'crm.a', 2.50, '{\"k\": [1, null]}');
         UPDATE credit_configurations SET credit_cost = 3 WHERE config_id = 'c1';
         INSERT INTO roles (role_id, tenant_id, role_name, permissions) VALUES ('r1', 't1', 'admin', '{crm.read,hrms.read}');
         UPDATE credit_configurations SET tenant_id = 't2' WHERE config_id = 'c1';
         DELETE FROM credit_configurations WHERE config_id = 'c1';
         INSERT INTO users (user_id, tenant_id, email) VALUES (7, 't1', 'a@b.c');",
    );
    // insert, update, 2 roles, moved: new + MOVED_OUT, delete, 2 users
    let msgs = sub.wait_for(9, WAIT, || daemon.log()).await;
    let validator = validator();
    for m in &msgs {
        assert_valid(&validator, &m.raw);
    }
    let operations: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m.event["operation"].as_str())
        .collect();
    for op in ["INSERT", "UPDATE", "DELETE", "MOVED_OUT"] {
        assert!(operations.contains(&op), "{operations:?}");
    }
    let out = env.sluice(&["backfill", "--table", "users"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = sub.wait_for(msgs.len() + 2, WAIT, || daemon.log()).await;
    for m in &snapshot[msgs.len()..] {
        assert_eq!(m.event["operation"], "SNAPSHOT");
        assert_valid(&validator, &m.raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_events_match_the_schema() {
    published_events_match_the_schema("mode = \"trigger\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_events_match_the_schema() {
    published_events_match_the_schema("mode = \"logical\"\nheartbeat_interval = \"1s\"").await;
}

#[test]
fn the_schema_rejects_what_the_contract_forbids() {
    let validator = validator();
    let good = r#"{"seq":1,"epoch":"e","eventId":"cl:1","operation":"INSERT","app":"crm","tenantId":"t1","dataType":"x","table":"public.t","recordId":"1","data":{},"timestamp":"2026-11-22T10:00:00.123456Z","source":{"mode":"trigger","id":1}}"#;
    assert_valid(&validator, good);
    for bad in [
        good.replace("\"t1\"", "\"t:1\""),        // an unsafe tenant
        good.replace("\"seq\":1,", ""),           // epoch without seq
        good.replace("\"INSERT\"", "\"UPSERT\""), // no such operation
        good.replace(",\"source\":{\"mode\":\"trigger\",\"id\":1}", ""), // no source
    ] {
        let event: serde_json::Value = serde_json::from_str(&bad).unwrap();
        assert!(!validator.is_valid(&event), "{bad}");
    }
}
