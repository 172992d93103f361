//! `sluice backfill` end to end, in both modes: every row once as SNAPSHOT with `to_jsonb` data,
//! never older than a concurrent UPDATE of the same row, the filters, resuming, `--dry-run`,
//! and the operator errors.

use std::collections::{HashMap, HashSet};
use std::process::Output;
use std::time::Duration;

use crate::common::{insert, wait_until, Daemon, Env, Msg, Subscriber};
use serde_json::Value;

const TRIGGER: &str = "";
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
const WAIT: Duration = Duration::from_secs(60);

/// `<name>::trigger` and `<name>::logical`: the test `name(mode)` in each mode.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn trigger() {
                super::$name(super::TRIGGER).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn logical() {
                super::$name(super::LOGICAL).await
            }
        }
    )*};
}

in_both_modes!(
    every_row_once_as_snapshot_with_to_jsonb_data,
    a_snapshot_never_overtakes_a_concurrent_update,
    tenant_where_and_after_restrict_the_rows,
    dry_run_writes_nothing,
    tables_without_a_route_or_a_key_are_refused,
    an_interrupted_backfill_resumes_where_it_stopped,
    a_postgres_crash_mid_backfill_is_retried,
);

/// Servers, config and setup for `mode`, a subscriber, and the daemon streaming.
async fn start(mode: &str) -> (Env, Subscriber, Daemon) {
    let env = Env::start(mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    if mode == LOGICAL {
        daemon.wait_for_log("streaming from the slot").await;
    }
    (env, sub, daemon)
}

fn mode_name(mode: &str) -> &'static str {
    if mode == LOGICAL {
        "logical"
    } else {
        "trigger"
    }
}

/// Runs `sluice backfill ARGS` to its end.
fn backfill(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["backfill"];
    all.extend_from_slice(args);
    tokio::task::block_in_place(|| env.sluice(&all))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "backfill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapshots(sub: &Subscriber) -> Vec<Msg> {
    sub.all()
        .into_iter()
        .filter(|m| m.event["operation"] == "SNAPSHOT")
        .collect()
}

/// Every row of `table` as `to_jsonb`, by its key's text.
fn rows(env: &Env, table: &str, key: &str) -> HashMap<String, Value> {
    let json = env.sql(&format!(
        "SELECT coalesce(json_object_agg({key}::text, to_jsonb(t)), '{{}}') FROM {table} t"
    ));
    serde_json::from_str(json.trim()).unwrap()
}

/// Commits a marker row and waits for its event: everything committed before it is published.
async fn settle(env: &Env, sub: &Subscriber, daemon: &Daemon) {
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('marker', 'marker', 'crm.marker')");
    let seen = || sub.all().iter().any(|m| m.event["recordId"] == "marker");
    wait_until!(WAIT, seen, || daemon.log()).await;
}

/// The record ids of the SNAPSHOT events of `table`, sorted, duplicates kept.
fn snapshot_ids(sub: &Subscriber, table: &str) -> Vec<String> {
    let mut ids: Vec<String> = snapshots(sub)
        .iter()
        .filter(|m| m.event["table"] == table)
        .map(|m| m.event["recordId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn every_row_once_as_snapshot_with_to_jsonb_data(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 30);
    env.sql("UPDATE credit_configurations SET credit_cost = 2.50, meta = '{\"tier\": [1, 2.0]}' WHERE config_id = 'k7'");
    env.sql("INSERT INTO users SELECT g, 'tenant-' || (g % 3), 'u' || g || '@example.com', NULL, '{a,\"b c\"}', '2026-01-02' FROM generate_series(1, 10) g");
    let out = ok(&backfill(
        &env,
        &[
            "--table",
            "public.credit_configurations",
            "--chunk",
            "7",
            "--rate",
            "0",
        ],
    ));
    assert!(out.contains("backfilled 30 rows of public.credit_configurations in 5 chunks; sluice run publishes them"), "{out}");
    ok(&backfill(&env, &["--table", "users", "--rate", "0"]));
    wait_until!(WAIT, || snapshots(&sub).len() >= 50, || {
        format!(
            "{} of 50 snapshots\n{}",
            snapshots(&sub).len(),
            daemon.log()
        )
    })
    .await;
    settle(&env, &sub, &daemon).await;

    let configs = rows(&env, "credit_configurations", "config_id");
    let users = rows(&env, "users", "user_id");
    let got = snapshots(&sub);
    assert_eq!(
        got.len(),
        30 + 10 * 2,
        "each row once (users fan out to crm and hrms)"
    );
    let ids: HashSet<(String, String)> = got
        .iter()
        .map(|m| {
            (
                m.event["eventId"].as_str().unwrap().into(),
                m.channel.clone(),
            )
        })
        .collect();
    assert_eq!(ids.len(), got.len(), "distinct event ids");
    for m in &got {
        let id = m.event["recordId"].as_str().unwrap();
        let row = if m.event["table"] == "public.users" {
            &users[id]
        } else {
            &configs[id]
        };
        assert_eq!(&m.event["data"], row, "{id}");
        let tenant = row["tenant_id"].as_str().unwrap();
        assert!(
            m.channel.ends_with(&format!(
                ":{tenant}:{}",
                m.event["dataType"].as_str().unwrap()
            )),
            "{}",
            m.channel
        );
        assert_eq!(m.event["source"]["mode"], mode_name(mode));
    }
    assert!(
        got.iter().any(|m| m.raw.contains(r#""credit_cost": 2.50"#)),
        "numbers stay exact"
    );
    let users_channels: HashSet<&str> = got
        .iter()
        .filter(|m| m.event["recordId"] == "3")
        .map(|m| m.channel.as_str())
        .collect();
    assert_eq!(
        users_channels,
        HashSet::from(["crm:tenant-0:users", "hrms:tenant-0:users"])
    );
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
}

/// Updates that bump `credit_cost` of single rows: half on 20 hot rows, half spread out.
async fn bump(env: &Env, task: u64, count: u64) -> u64 {
    let client = env.client().await;
    let update = client
        .prepare(
            "UPDATE credit_configurations SET credit_cost = credit_cost + 1 WHERE config_id = $1",
        )
        .await
        .unwrap();
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for i in 0..count {
        pace.tick().await;
        let g = if i % 2 == 0 {
            1 + (i / 2 + task) % 20
        } else {
            1 + (i * 7919 + task * 13) % 2000
        };
        assert_eq!(
            client.execute(&update, &[&format!("k{g}")]).await.unwrap(),
            1
        );
    }
    count
}

/// For each record, the last event a subscriber got (by arrival) and its position.
fn last_events(msgs: &[Msg]) -> HashMap<String, (usize, Value)> {
    let mut last = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        if let Some(id) = m.event["recordId"].as_str() {
            last.insert(id.to_string(), (i, m.event["data"].clone()));
        }
    }
    last
}

async fn a_snapshot_never_overtakes_a_concurrent_update(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 2000);
    sub.wait_for(2000, WAIT, || daemon.log()).await;
    let mut child = env
        .command()
        .args([
            "backfill",
            "--table",
            "credit_configurations",
            "--chunk",
            "50",
            "--rate",
            "8000",
        ])
        .spawn()
        .unwrap();
    let (a, b, c, d) = tokio::join!(
        bump(&env, 0, 250),
        bump(&env, 1, 250),
        bump(&env, 2, 250),
        bump(&env, 3, 250)
    );
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "backfill failed");
    let expected = 2000 + 2000 + (a + b + c + d) as usize;
    wait_until!(WAIT, || sub.count() >= expected, || format!(
        "{} of {expected}\n{}",
        sub.count(),
        daemon.log()
    ))
    .await;
    settle(&env, &sub, &daemon).await;

    let msgs = sub.all();
    let count = |op: &str| msgs.iter().filter(|m| m.event["operation"] == op).count();
    assert_eq!((count("SNAPSHOT"), count("UPDATE")), (2000, 1000));
    let at: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.event["operation"] == "SNAPSHOT")
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (at[0], at[at.len() - 1]);
    let raced = msgs[first..last]
        .iter()
        .filter(|m| m.event["operation"] == "UPDATE")
        .count();
    assert!(raced > 0, "the updates ran while the backfill did");
    let finals = rows(&env, "credit_configurations", "config_id");
    let seen = last_events(&msgs);
    for (id, row) in finals.iter().filter(|(id, _)| *id != "marker") {
        let (i, data) = &seen[id];
        assert_eq!(
            data, row,
            "{id}: the last event ({}, #{i}) is older than the row",
            msgs[*i].event["operation"]
        );
    }
    eprintln!("{raced} updates published between the first and the last snapshot");
}

async fn tenant_where_and_after_restrict_the_rows(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 60);
    env.sql("INSERT INTO users SELECT g, 't' || (g % 2), 'u' || g || '@example.com' FROM generate_series(1, 100) g");
    let out = ok(&backfill(
        &env,
        &[
            "--table",
            "credit_configurations",
            "--tenant",
            "tenant-2",
            "--where",
            "config_id LIKE 'k1%'",
            "--rate",
            "0",
        ],
    ));
    assert!(out.contains("backfilled 2 rows"), "{out}");
    ok(&backfill(
        &env,
        &[
            "--table", "users", "--after", "42", "--chunk", "10", "--rate", "0",
        ],
    ));
    settle(&env, &sub, &daemon).await;

    assert_eq!(
        snapshot_ids(&sub, "public.credit_configurations"),
        ["k12", "k17"],
        "tenant-2 and k1%: 12 and 17"
    );
    let after: Vec<String> = (43..=100)
        .flat_map(|g| [g.to_string(), g.to_string()])
        .collect();
    assert_eq!(
        snapshot_ids(&sub, "public.users"),
        sorted(after),
        "keys compare as numbers: 100 is after 42, 5 is not"
    );
}

async fn dry_run_writes_nothing(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 30);
    let log_rows = || {
        env.sql("SELECT count(*) FROM pg_class WHERE relname = 'change_log'")
            .trim()
            == "1"
    };
    let change_log = || {
        if log_rows() {
            env.sql("SELECT count(*) FROM sluice.change_log")
        } else {
            String::new()
        }
    };
    let before = change_log();
    let out = ok(&backfill(
        &env,
        &[
            "--table",
            "credit_configurations",
            "--tenant",
            "tenant-1",
            "--chunk",
            "4",
            "--dry-run",
        ],
    ));
    assert!(
        out.contains("would backfill 6 rows of public.credit_configurations in 2 chunks of 4"),
        "{out}"
    );
    assert_eq!(change_log(), before);
    settle(&env, &sub, &daemon).await;
    assert!(snapshots(&sub).is_empty(), "{:?}", snapshots(&sub));
}

fn one_line_error(out: &Output, wanted: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(wanted), "{err}");
}

async fn tables_without_a_route_or_a_key_are_refused(mode: &str) {
    let extra = format!(
        "{mode}\n[[tables]]\ntable = \"public.nokey\"\ntype = \"nokey\"\ntenant = \"tenant_id\"\napp = {{ fixed = [\"crm\"] }}"
    );
    let env = Env::start_with(
        "CREATE TABLE orphans (id int PRIMARY KEY); CREATE TABLE nokey (tenant_id text)",
        &extra,
    );
    one_line_error(
        &backfill(&env, &["--table", "orphans"]),
        "table public.orphans has no route in the config: add a [[tables]] entry",
    );
    one_line_error(
        &backfill(&env, &["--table", "nokey"]),
        "table public.nokey has no primary key",
    );
    one_line_error(
        &backfill(&env, &["--table", "users", "--after", "1,2"]),
        "--after \"1,2\" has 2 part(s) but the key of public.users is (user_id)",
    );
}

/// A slow backfill of k1..k400 in the background, once the first snapshots arrived.
async fn slow_backfill(env: &Env, sub: &Subscriber, daemon: &Daemon) -> std::process::Child {
    let child = env
        .command()
        .args([
            "backfill",
            "--table",
            "credit_configurations",
            "--chunk",
            "10",
            "--rate",
            "200",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until!(WAIT, || snapshots(sub).len() >= 30, || daemon.log()).await;
    child
}

async fn an_interrupted_backfill_resumes_where_it_stopped(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 400);
    let child = slow_backfill(&env, &sub, &daemon).await;
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let key = err
        .split("interrupted; resume with --after ")
        .nth(1)
        .unwrap_or_else(|| panic!("no resume hint: {err}"))
        .trim();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("backfilled "),
        "the summary still comes"
    );
    ok(&backfill(
        &env,
        &[
            "--table",
            "credit_configurations",
            "--after",
            key,
            "--rate",
            "0",
        ],
    ));
    settle(&env, &sub, &daemon).await;
    let all: Vec<String> = (1..=400).map(|g| format!("k{g}")).collect();
    assert_eq!(
        snapshot_ids(&sub, "public.credit_configurations"),
        sorted(all),
        "each row once, none skipped"
    );
}

async fn a_postgres_crash_mid_backfill_is_retried(mode: &str) {
    let (env, sub, daemon) = start(mode).await;
    insert(&env, 1, 400);
    let child = slow_backfill(&env, &sub, &daemon).await;
    env.pg.kill().unwrap();
    env.pg.restart().unwrap();
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backfill chunk failed; retrying"));
    settle(&env, &sub, &daemon).await;
    let mut ids = snapshot_ids(&sub, "public.credit_configurations");
    ids.dedup(); // a chunk whose commit went unanswered is written again: at least once
    assert_eq!(ids, sorted((1..=400).map(|g| format!("k{g}")).collect()));
}
