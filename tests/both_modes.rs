//! The same rows captured in trigger mode and in logical mode give the same events: `data`
//! equal (to `to_jsonb(row)`) for every type the issue lists.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{wait_until, Env};
use serde_json::Value;

const TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy', 'so "so"');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE typed (
    id int PRIMARY KEY, tenant_id text NOT NULL, code text NOT NULL,
    i2 int2, i4 int4, i8 int8, num numeric, num2 numeric(10,2), f4 float4, f8 float8, b bool,
    t text, vc varchar(10), ch char(5), u uuid, j json, jb jsonb, d date, tm time, tmtz timetz,
    ts timestamp, tstz timestamptz, iv interval, by bytea, m mood, p posint,
    ai int[], at text[], a2 int[][], ats timestamptz[], anum numeric[], ajb jsonb[]
);
"#;

const ROWS: &str = r#"
SET TimeZone = 'America/New_York';
INSERT INTO typed VALUES
 (1, 't1', 'crm.a', 1, 2, 9007199254740993, 12345678901234567890.123456789, 3.00, 1.5, 0.1, true,
  'he said "hi"\n', 'abc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}',
  '2026-01-02', '03:04:05.123456', '03:04:05+02', '2026-01-02 03:04:05.5', '2026-01-02 03:04:05.123456+05:30',
  '1 year 2 mons 3 days 04:05:06.5', '\x0102ff', 'so "so"', 7,
  '{1,NULL,3}', '{"a b","c,d","e\"f",NULL,"NULL"}', '{{1,2},{3,4}}', '{"2026-01-02 03:04:05+00",NULL}', '{1.10,NaN}', ARRAY['{"x": 1}'::jsonb]),
 (2, 't1', 'crm.a', -32768, -2147483648, -9223372036854775808, 'NaN', -0.01, 'NaN', 'Infinity', false,
  '', 'ü', 'x', NULL, '[]', 'null', '0044-03-15 BC', '24:00:00', '00:00:00-11:30', 'infinity', '-infinity',
  '-1 days -00:00:01', '', 'sad', 1, '{}', '{}', NULL, '{}', '{}', '{}'),
 (3, 't1', 'crm.a', NULL, NULL, NULL, NULL, NULL, '-Infinity', 1e100, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn table_config(mode: &str) -> String {
    format!(
        "mode = \"{mode}\"\nheartbeat_interval = \"1s\"\n[[tables]]\ntable = \"public.typed\"\ntype = \"typed\"\ntenant = \"tenant_id\"\napp = {{ operation_code = \"code\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_and_logical_modes_publish_the_same_data() {
    let env = Env::start_with(TYPES, &table_config("trigger"));
    let logical = env.second_config(&table_config("logical"));
    let sub = env.subscribe().await;
    let trigger_daemon = env.daemon();
    let logical_daemon = env.daemon_with(&logical);
    wait_until(
        Duration::from_secs(30),
        || logical_daemon.log().contains("streaming from the slot"),
        || logical_daemon.log(),
    )
    .await;
    env.sql(ROWS);
    let msgs = sub
        .wait_for(6, Duration::from_secs(30), || {
            format!("{}\n{}", trigger_daemon.log(), logical_daemon.log())
        })
        .await;
    let mut by_mode: HashMap<(String, String), Value> = HashMap::new();
    for m in &msgs {
        let key = (
            m.event["source"]["mode"].as_str().unwrap().to_string(),
            m.event["recordId"].as_str().unwrap().to_string(),
        );
        by_mode.insert(key, m.event["data"].clone());
    }
    for id in ["1", "2", "3"] {
        let trigger = &by_mode[&("trigger".to_string(), id.to_string())];
        let logical = &by_mode[&("logical".to_string(), id.to_string())];
        let want: Value = serde_json::from_str(
            env.sql(&format!("SELECT to_jsonb(x) FROM typed x WHERE id = {id}"))
                .trim(),
        )
        .unwrap();
        assert_eq!(trigger, &want, "trigger mode, row {id}");
        for (column, value) in want.as_object().unwrap() {
            assert_eq!(
                &logical[column], value,
                "logical mode, row {id}, column {column}"
            );
        }
        assert_eq!(
            logical.as_object().unwrap().len(),
            want.as_object().unwrap().len(),
            "row {id}"
        );
    }
    let raw = |mode: &str| {
        msgs.iter()
            .find(|m| m.event["source"]["mode"] == mode && m.event["recordId"] == "1")
            .unwrap()
            .raw
            .clone()
    };
    for exact in ["12345678901234567890.123456789", "9007199254740993", "3.00"] {
        assert!(
            raw("trigger").contains(exact) && raw("logical").contains(exact),
            "{exact} kept exactly"
        );
    }
}
