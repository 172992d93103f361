//! The same rows captured in trigger mode and in logical mode give the same events: `data`
//! equal (to `to_jsonb(row)`) for every type the issue lists.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{fenced, wait_until, Daemon, Env, Msg};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

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

fn table_config(mode: &str, table: &str) -> String {
    format!(
        "mode = \"{mode}\"\nheartbeat_interval = \"1s\"\n[[tables]]\ntable = \"public.{table}\"\ntype = \"{table}\"\ntenant = \"tenant_id\"\napp = {{ operation_code = \"code\" }}\n"
    )
}

/// Creates `schema`, runs a trigger-mode and a logical-mode daemon on `table`, writes `rows`
/// and checks that both publish `data` equal to `to_jsonb(row)` for every row of `ids`.
/// Returns the events.
async fn both_modes_publish_to_jsonb(
    schema: &str,
    table: &str,
    rows: &str,
    ids: &[&str],
) -> Vec<Msg> {
    let env = Env::start_with(schema, &table_config("trigger", table));
    let logical = env.second_config(&table_config("logical", table));
    let sub = env.subscribe().await;
    let trigger_daemon = env.daemon();
    let logical_daemon = env.daemon_with(&logical);
    logical_daemon.wait_for_log("streaming from the slot").await;
    env.sql(rows);
    let msgs = sub
        .wait_for(2 * ids.len(), Duration::from_secs(30), || {
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
    for id in ids {
        let trigger = &by_mode[&("trigger".to_string(), id.to_string())];
        let logical = &by_mode[&("logical".to_string(), id.to_string())];
        let want: Value = serde_json::from_str(
            env.sql(&format!(
                "SELECT to_jsonb(x) FROM {table} x WHERE id = {id}"
            ))
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
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_and_logical_modes_publish_the_same_data() {
    let msgs = both_modes_publish_to_jsonb(TYPES, "typed", ROWS, &["1", "2", "3"]).await;
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

/// `int2vector` and `oidvector` print as space-separated lists; `to_jsonb` gives arrays.
const VECTORS: &str =
    "CREATE TABLE vectors (id int PRIMARY KEY, tenant_id text NOT NULL, code text NOT NULL, \
    v int2vector, ov oidvector, av int2vector[], aov oidvector[]);";

const VECTOR_ROWS: &str = "INSERT INTO vectors VALUES \
    (1, 't1', 'crm.a', '1 2 3', '23 25', ARRAY['1 2'::int2vector, '', '-32768'], \
     ARRAY['1 4294967295'::oidvector]), \
    (2, 't1', 'crm.a', '', '', '{}', '{}'), \
    (3, 't1', 'crm.a', NULL, NULL, ARRAY[NULL::int2vector], NULL);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_are_published_as_arrays() {
    both_modes_publish_to_jsonb(VECTORS, "vectors", VECTOR_ROWS, &["1", "2", "3"]).await;
}

/// `box` separates array elements with `;` (its `typdelim`), and a box itself holds commas.
const BOXES: &str = "CREATE DOMAIN dbox AS box; \
    CREATE TABLE boxes (id int PRIMARY KEY, tenant_id text NOT NULL, code text NOT NULL, \
    bx box[], bx2 box[][], dbx dbox[], pts point[], segs lseg[]);";

const BOX_ROWS: &str = "INSERT INTO boxes VALUES \
    (1, 't1', 'crm.a', ARRAY[box '((1,2),(3,4))', box '((5.5,6),(-7,8))', NULL], \
     ARRAY[ARRAY[box '((1,2),(3,4))', box '((0,0),(1,1))'], ARRAY[box '((1,2),(3,4))', NULL]], \
     ARRAY['((1,1),(0,0))'::dbox], ARRAY[point '(1,2)', NULL], ARRAY[lseg '[(1,2),(3,4)]']), \
    (2, 't1', 'crm.a', '{}', '{}', '{}', '{}', '{}'), \
    (3, 't1', 'crm.a', NULL, NULL, NULL, NULL, NULL);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_of_box_are_split_on_its_own_delimiter() {
    both_modes_publish_to_jsonb(BOXES, "boxes", BOX_ROWS, &["1", "2", "3"]).await;
}

/// Composite values, nested, in arrays, behind domains, with a dropped attribute.
const COMPOSITES: &str = r#"
CREATE TYPE pair AS (f1 int, f2 text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE nest AS (p pair, ps pair[], gone int, ts timestamptz, n numeric, j jsonb,
    tags text[], ok bool, bx box[], pi posint, "odd ""key"", here" text);
ALTER TYPE nest DROP ATTRIBUTE gone;
CREATE DOMAIN dpair AS pair;
CREATE TYPE nothing AS ();
CREATE TABLE composites (id int PRIMARY KEY, tenant_id text NOT NULL, code text NOT NULL,
    p pair, ap pair[], nested nest, nests nest[], dp dpair, adp dpair[], e nothing);
"#;

const COMPOSITE_ROWS: &str = r#"
SET TimeZone = 'America/New_York';
INSERT INTO composites VALUES
 (1, 't1', 'crm.a', '(1,foo)',
  ARRAY['(1,foo)'::pair, '(2,"a,b")', NULL, '(,)', '(3,NULL)', '(4,"")'],
  ROW(ROW(3, E'x "y" \\z'), ARRAY[ROW(4, ''), ROW(NULL, '(,)')]::pair[],
      '2026-01-02 03:04:05.5+05:30', 1e3,
      '{"b": 1, "a": [1, 2.50]}', '{"a b",NULL,"{}"}', true, ARRAY[box '((1,2),(3,4))'], 7, 'v'),
  ARRAY[ROW(ROW(5, 'in'), NULL, NULL, 'NaN', 'null', '{}', false, '{}', NULL, NULL)::nest, NULL],
  '(5,bar)', ARRAY['(6,baz)'::dpair, NULL], ROW()),
 (2, 't1', 'crm.a', ROW(NULL, E'a,b"c\\d(e) f\n\tü€😀'), '{}',
  ROW(ROW(NULL, NULL), '{}', NULL, NULL, NULL, '{}', NULL, NULL, NULL, E'  lead,(")\\'),
  '{}', ROW(NULL, ''), ARRAY[NULL::dpair], NULL),
 (3, 't1', 'crm.a', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_values_are_published_as_objects() {
    both_modes_publish_to_jsonb(COMPOSITES, "composites", COMPOSITE_ROWS, &["1", "2", "3"]).await;
}

/// An `int2vector` value once stopped logical mode, at every start again (it was read as an
/// array literal). Rows before and after one arrive, it is published, not dead-lettered, and
/// the daemon keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int2vector_column_does_not_stop_the_logical_stream() {
    let env = Env::start_with(VECTORS, &table_config("logical", "vectors"));
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    daemon.wait_for_log("streaming from the slot").await;
    for (id, v) in [(1, "NULL"), (2, "'1 2 3'"), (3, "NULL")] {
        env.sql(&format!(
            "INSERT INTO vectors (id, tenant_id, code, v) VALUES ({id}, 't1', 'crm.a', {v})"
        ));
    }
    let msgs = sub
        .wait_for(3, Duration::from_secs(30), || daemon.log())
        .await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(msgs[1].event["data"]["v"], serde_json::json!([1, 2, 3]));
    assert_eq!(env.dead_letters(), []);
    assert!(
        daemon.wait_exit(Duration::from_millis(1)).is_none(),
        "the daemon exited: {}",
        daemon.log()
    );
}

/// A composite type altered while the daemon streams: PostgreSQL sends no new Relation
/// message, so the session reads the type's new values with its old attributes. Those changes
/// are dead-lettered and the stream goes on; the next session looks the type up afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_altered_mid_stream_is_dead_lettered_until_the_next_session() {
    let schema = "CREATE TYPE pair AS (f1 int, f2 text); CREATE TABLE altered \
        (id int PRIMARY KEY, tenant_id text NOT NULL, code text NOT NULL, p pair);";
    let env = Env::start_with(schema, &table_config("logical", "altered"));
    let sub = env.subscribe().await;
    let insert = |id: i32, p: &str| {
        env.sql(&format!(
            "INSERT INTO altered VALUES ({id}, 't1', 'crm.a', '{p}')"
        ));
    };
    let streaming = |d: &Daemon| d.log_count("streaming from the slot") > 0;
    let p_of = |id: &str| {
        let msgs = sub.all();
        let m = msgs.iter().find(|m| m.event["recordId"] == id);
        m.map(|m| m.event["data"]["p"].clone())
    };
    let mut daemon = env.daemon();
    wait_until!(WAIT, || streaming(&daemon), || daemon.log()).await;
    insert(1, "(1,a)");
    // Row 1 has been read (and the type looked up) before the ALTER: read after it, it would
    // be the row that does not match.
    wait_until!(WAIT, || p_of("1").is_some(), || daemon.log()).await;
    env.sql("ALTER TYPE pair ADD ATTRIBUTE f3 int");
    insert(2, "(2,b,3)");
    insert(3, "(3,c,4)");
    let dead = || env.dead_letters();
    wait_until!(WAIT, || dead().len() == 2, || format!(
        "{:?}\n{}",
        dead(),
        daemon.log()
    ))
    .await;
    assert!(
        dead()
            .iter()
            .all(|(reason, ..)| reason == "unconvertible_value"),
        "{:?}",
        dead()
    );
    fenced(&env, &sub).await;
    assert_eq!(p_of("1"), Some(json!({"f1": 1, "f2": "a"})));
    assert_eq!(
        (p_of("2"), p_of("3")),
        (None, None),
        "nothing published with the old attributes"
    );
    daemon.terminate();
    let daemon = env.daemon();
    wait_until!(WAIT, || streaming(&daemon), || daemon.log()).await;
    insert(4, "(4,d,5)");
    wait_until!(WAIT, || p_of("4").is_some(), || daemon.log()).await;
    assert_eq!(p_of("4"), Some(json!({"f1": 4, "f2": "d", "f3": 5})));
}
