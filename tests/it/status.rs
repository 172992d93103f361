//! `sluice status` on real servers, in both modes: what it reads from PostgreSQL with the
//! daemon down (position, lag, pending changes, dead letters by reason, the last error), what
//! the running daemon adds over HTTP (its phase), `--json`, and the one-line failures.

use std::time::Duration;

use crate::common;
use crate::common::{insert, wait_until, Env};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";

/// The keys `status --json` always prints, whatever the mode.
const KEYS: [&str; 12] = [
    "mode",
    "slot",
    "position",
    "position_updated_at",
    "active_pid",
    "lag_bytes",
    "retained_wal_bytes",
    "pending",
    "oldest_pending_age_seconds",
    "dead_letters",
    "last_error",
    "daemon",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Points the config's `[http] listen` at the address `daemon` serves on, so `sluice status`
/// asks that daemon. The daemon itself was started on `127.0.0.1:0` (the system picks a port
/// no other process holds) and has read its config already.
fn listen_where_the_daemon_serves(env: &Env, daemon: &common::Daemon) -> String {
    let addr = format!("127.0.0.1:{}", daemon.http_port());
    let config = std::fs::read_to_string(&env.config).unwrap();
    let mut lines: Vec<String> = config.lines().map(String::from).collect();
    match lines.iter().position(|l| l.trim() == "[http]") {
        Some(at) => {
            let listen = lines[at + 1..]
                .iter()
                .take_while(|l| !l.starts_with('['))
                .position(|l| l.trim_start().starts_with("listen"));
            match listen {
                Some(i) => lines[at + 1 + i] = format!("listen = \"{addr}\""),
                None => lines.insert(at + 1, format!("listen = \"{addr}\"")),
            }
        }
        None => lines.extend(["[http]".to_string(), format!("listen = \"{addr}\"")]),
    }
    std::fs::write(&env.config, lines.join("\n") + "\n").unwrap();
    addr
}

/// `status` (human), which must succeed.
fn status(env: &Env) -> String {
    let out = env.sluice(&["status"]);
    assert!(out.status.success(), "status failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `status --json`, which must succeed and print one object with every key.
fn status_json(env: &Env) -> Value {
    let out = env.sluice(&["status", "--json"]);
    assert!(
        out.status.success(),
        "status --json failed: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    for key in KEYS {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    v
}

/// The value of the `key:` line.
fn line<'a>(report: &'a str, key: &str) -> &'a str {
    let found = report.lines().find(|l| l.starts_with(&format!("{key}:")));
    found.unwrap_or_else(|| panic!("no {key} line in\n{report}"))[key.len() + 1..].trim_start()
}

/// Every value starts in the same column.
fn assert_aligned(report: &str) {
    let columns: Vec<usize> = report
        .lines()
        .map(|l| {
            l.find(':').unwrap() + 1 + l[l.find(':').unwrap() + 1..].find(|c| c != ' ').unwrap()
        })
        .collect();
    assert!(
        columns.windows(2).all(|w| w[0] == w[1]),
        "not aligned:\n{report}"
    );
}

/// Waits until the daemon answers `/status` through `sluice status` in phase streaming.
async fn wait_streaming(env: &Env, daemon: &common::Daemon) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let streaming = || {
        *last.borrow_mut() = status_json(env);
        last.borrow()["daemon"]["phase"] == "streaming"
    };
    wait_until!(WAIT, streaming, || {
        format!("{}\n{}", last.borrow(), daemon.log())
    })
    .await;
    last.into_inner()
}

/// Rows for `credit_configurations`: one published, then unroutable, invalid and missing tenants.
fn write_poison(env: &Env) {
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES \
         ('ok', 't1', 'crm.a'), ('sale', 't1', 'sales.deal'), ('space', 'a b', 'crm.a'), ('none', NULL, 'crm.a')",
    );
}

fn set_last_error(env: &Env, row: &str) {
    env.sql(&format!(
        "UPDATE sluice.checkpoint SET last_error = E'Redis unavailable:\\nconnection refused', last_error_at = '2026-11-22T10:00:00Z' WHERE name = '{row}'"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_status_up_and_down() {
    let env = Env::start("");
    let mut daemon = env.daemon();
    let addr = listen_where_the_daemon_serves(&env, &daemon);
    write_poison(&env);
    wait_until!(
        WAIT,
        || env.dead_letters().len() == 3 && env.pending() == 0,
        || daemon.log()
    )
    .await;
    let up = wait_streaming(&env, &daemon).await;
    assert!(
        up["active_pid"].is_i64(),
        "the daemon holds the reader lock: {up}"
    );
    assert_eq!(
        (
            up["daemon"]["reachable"].as_bool(),
            up["daemon"]["address"].as_str()
        ),
        (Some(true), Some(addr.as_str()))
    );
    assert_eq!(up["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        up["daemon"]["uptime_seconds"].is_u64() && up["daemon"]["ready"].is_string(),
        "{up}"
    );
    assert!(
        line(&status(&env), "daemon").starts_with("streaming, "),
        "{}",
        status(&env)
    );
    assert!(
        daemon.terminate().is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );

    insert(&env, 1, 3);
    set_last_error(&env, "change_log");
    let report = status(&env);
    assert_aligned(&report);
    assert_eq!(line(&report, "mode"), "trigger");
    assert!(
        line(&report, "position").starts_with("published through snapshot "),
        "{report}"
    );
    assert!(
        line(&report, "pending").starts_with("3 changes, the oldest written "),
        "{report}"
    );
    assert!(line(&report, "reader").starts_with("none"), "{report}");
    assert!(
        line(&report, "dead letters")
            .starts_with("3 open (invalid_tenant 1, missing_tenant 1, unroutable 1)"),
        "{report}"
    );
    assert_eq!(
        line(&report, "last error"),
        "2026-11-22T10:00:00Z Redis unavailable: connection refused"
    );
    assert_eq!(line(&report, "daemon"), format!("not reachable at {addr}"));

    let down = status_json(&env);
    assert_eq!(
        (
            down["mode"].as_str(),
            down["pending"].as_i64(),
            down["active_pid"].as_i64()
        ),
        (Some("trigger"), Some(3), None)
    );
    assert!(
        down["oldest_pending_age_seconds"]
            .as_f64()
            .is_some_and(|a| a >= 0.0),
        "{down}"
    );
    assert_eq!(
        down["dead_letters"],
        serde_json::json!({"open": 3, "by_reason": {"invalid_tenant": 1, "missing_tenant": 1, "unroutable": 1}})
    );
    assert_eq!(
        down["last_error"]["message"],
        "Redis unavailable:\nconnection refused"
    );
    assert!(
        down["slot"].is_null()
            && down["lag_bytes"].is_null()
            && down["position"].as_str().unwrap().starts_with("snapshot "),
        "{down}"
    );
    assert_eq!(
        (
            down["daemon"]["reachable"].as_bool(),
            down["daemon"]["phase"].as_str()
        ),
        (Some(false), None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_status_up_and_down() {
    let env = Env::start(LOGICAL);
    let mut daemon = env.daemon();
    let addr = listen_where_the_daemon_serves(&env, &daemon);
    let up = wait_streaming(&env, &daemon).await;
    assert!(
        up["active_pid"].is_i64() && up["slot"]["exists"] == true,
        "the daemon streams the slot: {up}"
    );
    write_poison(&env);
    wait_until!(WAIT, || env.dead_letters().len() == 3, || daemon.log()).await;
    assert!(
        daemon.terminate().is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );
    let active = || {
        env.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'sluice'")
            .trim()
            == "t"
    };
    wait_until!(WAIT, || !active(), || "the walsender kept the slot".into()).await;

    insert(&env, 1, 200);
    set_last_error(&env, "sluice");
    let down = status_json(&env);
    let confirmed =
        env.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice'");
    assert_eq!(down["position"].as_str(), Some(confirmed.trim()));
    let (lag, retained) = (
        down["lag_bytes"].as_i64().unwrap(),
        down["retained_wal_bytes"].as_i64().unwrap(),
    );
    assert!(
        lag > 0 && retained >= lag,
        "200 rows written since the last confirm: {down}"
    );
    assert_eq!(
        (
            down["slot"]["name"].as_str(),
            down["slot"]["wal_status"].as_str()
        ),
        (Some("sluice"), Some("reserved"))
    );
    assert!(
        down["active_pid"].is_null() && down["pending"].is_null(),
        "{down}"
    );
    assert_eq!(
        down["dead_letters"]["by_reason"],
        serde_json::json!({"invalid_tenant": 1, "missing_tenant": 1, "unroutable": 1})
    );
    assert_eq!(down["last_error"]["at"], "2026-11-22T10:00:00Z");
    assert_eq!(down["daemon"]["address"], addr.as_str());

    let report = status(&env);
    assert_aligned(&report);
    assert_eq!(
        line(&report, "slot"),
        "sluice, inactive: no daemon is streaming it"
    );
    assert!(
        line(&report, "position").starts_with(&format!("confirmed {}", confirmed.trim())),
        "{report}"
    );
    assert!(
        line(&report, "lag").ends_with(" of WAL not yet confirmed"),
        "{report}"
    );
    assert!(
        line(&report, "retained WAL").contains("(wal_status reserved; "),
        "{report}"
    );
    assert!(
        line(&report, "dead letters").starts_with("3 open"),
        "{report}"
    );

    env.sql("SELECT pg_drop_replication_slot('sluice')");
    assert!(line(&status(&env), "slot").starts_with("sluice is missing: run `sluice setup`"));
    assert_eq!(status_json(&env)["slot"]["exists"], false);
}

#[test]
fn unreadable_postgres_is_one_line_and_exit_1() {
    let env = Env::start("");
    env.sql("DROP SCHEMA sluice CASCADE");
    let out = env.sluice(&["status"]);
    let err = text(&out.stderr);
    assert_eq!(
        (out.status.code(), err.trim().lines().count()),
        (Some(1), 1),
        "{err}"
    );
    assert!(err.contains("run `sluice setup`"), "{err}");

    let port = sluice::testkit::free_port();
    let config = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&format!(":{}/", env.pg.port()), &format!(":{port}/"));
    std::fs::write(&env.config, config).unwrap();
    let out = env.sluice(&["status", "--json"]);
    let err = text(&out.stderr);
    assert_eq!(
        (out.status.code(), err.trim().lines().count()),
        (Some(1), 1),
        "{err}"
    );
    assert!(
        err.starts_with("error: cannot connect to PostgreSQL at ") && out.stdout.is_empty(),
        "{err}"
    );
}
