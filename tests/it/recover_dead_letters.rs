//! The dead-letter commands on real servers: poison events parked while the rest flow,
//! `dead-letters list|show|purge`, and `replay dead-letters` after the cause is fixed (a
//! larger payload limit, a new app prefix, a Redis ACL), killed half way, or interrupted
//! while Redis is down.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{wait_until, Daemon, Env, Msg, Subscriber};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Small enough that a row with a 2 KB `meta` is too large, big enough for the others.
const SMALL_PAYLOADS: &str = "[delivery]\nmax_payload_bytes = 800";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; its stdout and stderr.
fn ok(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.sluice(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// Runs a command that must fail with one line of error and status `code`.
fn fails(env: &Env, args: &[&str], code: i32) -> String {
    let out: Output = env.sluice(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn scalar(env: &Env, sql: &str) -> String {
    env.sql(sql).trim().to_string()
}

fn count(env: &Env, condition: &str) -> i64 {
    scalar(
        env,
        &format!("SELECT count(*) FROM sluice.dead_letter WHERE {condition}"),
    )
    .parse()
    .unwrap()
}

/// Credit configurations routed to crm, tenant t1; `big` ones carry a 2 KB `meta`.
fn write_rows(env: &Env, rows: &[(&str, &str, &str)], big: &[&str]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(id, tenant, code)| {
            let meta = if big.contains(id) {
                "jsonb_build_object('blob', repeat('x', 2000))"
            } else {
                "NULL"
            };
            format!("('{id}', {tenant}, '{code}', {meta})")
        })
        .collect();
    env.sql(&format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, meta) VALUES {}",
        values.join(", ")
    ));
}

/// Rewrites the config file: every `(from, to)` replaced once.
fn edit_config(env: &Env, edits: &[(&str, &str)]) {
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    for (from, to) in edits {
        assert!(config.contains(from), "{from} not in\n{config}");
        config = config.replacen(from, to, 1);
    }
    std::fs::write(&env.config, config).unwrap();
}

/// The fixes for this file's poison: larger payloads allowed, and `sales.` codes made crm's.
fn fix_the_causes(env: &Env) {
    edit_config(
        env,
        &[
            ("max_payload_bytes = 800", "max_payload_bytes = 100000"),
            (
                "crm = { prefixes = [\"crm.\", ",
                "crm = { prefixes = [\"crm.\", \"sales.\", ",
            ),
        ],
    );
}

/// Writes a fresh row through the daemon and waits for its event. Redis hands a subscriber
/// its messages in the order it executed the publishes, so whatever Redis acknowledged before
/// (a finished or killed replay) has arrived by then too.
async fn settle(env: &Env, sub: &Subscriber, daemon: &Daemon, id: &str) {
    write_rows(env, &[(id, "'t1'", "crm.sentinel")], &[]);
    wait_until!(
        WAIT,
        || sub.all().iter().any(|m| m.event["recordId"] == id),
        || daemon.log()
    )
    .await;
}

/// The messages received, by eventId.
fn by_event(sub: &Subscriber) -> HashMap<String, Vec<Msg>> {
    let mut map: HashMap<String, Vec<Msg>> = HashMap::new();
    for m in sub.all() {
        map.entry(m.event["eventId"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(m);
    }
    map
}

/// Open dead letters' ids and event ids, by reason.
fn open_by_reason(env: &Env) -> HashMap<String, Vec<(i64, String)>> {
    let rows = scalar(env, "SELECT coalesce(json_agg(json_build_array(reason, id, event_id) ORDER BY id), '[]') FROM sluice.dead_letter WHERE resolved_at IS NULL");
    let mut map: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for (reason, id, event) in serde_json::from_str::<Vec<(String, i64, String)>>(&rows).unwrap() {
        map.entry(reason).or_default().push((id, event));
    }
    map
}

/// `sluice <args>` in the background, its stderr in a file.
fn spawn(env: &Env, args: &[&str]) -> (Child, PathBuf) {
    let log = env
        .dir
        .path()
        .join(format!("{}.log", args.join("-").replace(['/', ' '], "_")));
    let child = env
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_parked_while_later_ones_flow_and_list_show_purge_handle_them() {
    let env = Env::start(SMALL_PAYLOADS);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    write_rows(
        &env,
        &[
            ("n1", "'t1'", "crm.a"),
            ("big", "'t1'", "crm.a"),
            ("colon", "'a:b'", "crm.a"),
            ("esc", "E'\\x1b[31mred\\nx'", "crm.a"),
        ],
        &["big"],
    );
    write_rows(
        &env,
        &[("n2", "'t1'", "crm.a"), ("n3", "'t2'", "crm.b")],
        &[],
    );
    let msgs = sub.wait_for(3, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 3, || format!(
        "{:?}\n{}",
        env.dead_letters(),
        daemon.log()
    ))
    .await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "the poison holds nothing back");
    lists(&env);
    shows(&env);
    purges(&env);
}

/// `list`: newest first, cleaned, filtered, as JSON lines, with a count on stderr.
fn lists(env: &Env) {
    let (table, summary) = ok(env, &["dead-letters", "list"]);
    assert_eq!(summary.trim(), "3 open dead letters (showing 3)");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a title line and a line per dead letter: {table}"
    );
    assert!(
        lines[0].starts_with("id") && lines[0].contains("reason") && lines[0].ends_with("error"),
        "{table}"
    );
    assert!(
        lines[1].contains("?[31mred?x") && lines[1].contains("invalid_tenant"),
        "newest first, cleaned: {table}"
    );
    assert!(
        lines[3].contains("payload_too_large") && lines[3].contains("payload is 2"),
        "{table}"
    );
    assert!(
        !table.contains('\x1b'),
        "no escape sequence reaches the terminal"
    );

    let (only, summary) = ok(env, &["dead-letters", "list", "--reason", "invalid_tenant"]);
    assert_eq!(
        (only.lines().count(), summary.trim()),
        (3, "2 open dead letters (showing 2)")
    );
    let (json, _) = ok(env, &["dead-letters", "list", "--tenant", "a:b", "--json"]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(
        (rows[0]["reason"].as_str(), rows[0]["tenant_id"].as_str()),
        (Some("invalid_tenant"), Some("a:b"))
    );
    assert_eq!(
        (
            rows[0]["payload"]["recordId"].as_str(),
            rows[0]["attempts"].as_i64()
        ),
        (Some("colon"), Some(1))
    );
    let (one, summary) = ok(
        env,
        &[
            "dead-letters",
            "list",
            "--json",
            "--limit",
            "1",
            "--table",
            "credit_configurations",
        ],
    );
    assert_eq!(
        (one.lines().count(), summary.trim()),
        (1, "3 open dead letters (showing 1)")
    );
    let (_, none) = ok(env, &["dead-letters", "list", "--app", "hrms"]);
    assert_eq!(none.trim(), "no open dead letters");
    assert!(
        fails(env, &["dead-letters", "list", "--reason", "bogus"], 1)
            .contains("is not a dead-letter reason")
    );
}

/// `show`: every column, then the payload pretty-printed; an unknown id is one line of error.
fn shows(env: &Env) {
    let big = &open_by_reason(env)["payload_too_large"][0];
    let (shown, _) = ok(env, &["dead-letters", "show", &big.0.to_string()]);
    assert!(
        shown.contains("reason           payload_too_large")
            && shown.contains(&format!("event_id         {}", big.1)),
        "{shown}"
    );
    assert!(
        shown.contains("resolved_at      -") && shown.contains("payload:\n{\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\"recordId\": \"big\"") && shown.contains("\"blob\": \"xxxx"),
        "pretty-printed: {shown}"
    );
    assert!(fails(env, &["dead-letters", "show", "999999"], 1)
        .starts_with("error: no dead letter has id 999999"));
}

/// `purge`: resolved ones without --before, any state before a time; filters apply.
fn purges(env: &Env) {
    env.sql("UPDATE sluice.dead_letter SET resolved_at = now() WHERE tenant_id = 'a:b'");
    assert_eq!(
        ok(env, &["dead-letters", "purge", "--dry-run"]).0.trim(),
        "would purge 1 dead letters"
    );
    assert_eq!(count(env, "true"), 3, "a dry run deletes nothing");
    assert_eq!(
        ok(env, &["dead-letters", "purge"]).0.trim(),
        "purged 1 dead letters"
    );
    assert_eq!(
        (count(env, "true"), count(env, "tenant_id = 'a:b'")),
        (2, 0),
        "only the resolved one went"
    );
    assert_eq!(
        ok(env, &["dead-letters", "purge"]).0.trim(),
        "purged 0 dead letters",
        "open ones stay without --before"
    );
    assert_eq!(
        ok(env, &["dead-letters", "purge", "--before", "1h"])
            .0
            .trim(),
        "purged 0 dead letters",
        "all are newer"
    );
    let future = ["dead-letters", "purge", "--before", "2999-01-01T00:00:00Z"];
    let refused = env.sluice(&[&future[..], &["--reason", "payload_too_large"]].concat());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("still open") && why.contains("--yes"),
        "{why}"
    );
    assert_eq!(
        count(env, "reason = 'payload_too_large'"),
        1,
        "open ones stay without --yes"
    );
    assert_eq!(
        ok(
            env,
            &[&future[..], &["--reason", "payload_too_large", "--yes"]].concat()
        )
        .0
        .trim(),
        "purged 1 dead letters"
    );
    assert_eq!(count(env, "reason = 'payload_too_large'"), 0);
    let out = env.sluice(&["dead-letters", "purge", "--before", "42"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an id is not a time: {}",
        text(&out.stderr)
    );
    assert_eq!(
        ok(env, &[&future[..], &["--yes"]].concat()).0.trim(),
        "purged 1 dead letters"
    );
    assert_eq!(
        ok(env, &["dead-letters", "list", "--all"]).1.trim(),
        "no dead letters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_fixing_the_cause_delivers_each_once_and_resolves_what_it_delivered() {
    let env = Env::start(SMALL_PAYLOADS);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let poison = [
        ("big1", "'t1'", "crm.a"),
        ("sale", "'t1'", "sales.deal.close"),
        ("colon", "'a:b'", "crm.a"),
        ("big2", "'t2'", "crm.b"),
    ];
    write_rows(&env, &poison, &["big1", "big2"]);
    write_rows(&env, &[("n1", "'t1'", "crm.a")], &[]);
    sub.wait_for(1, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 4, || format!(
        "{:?}\n{}",
        env.dead_letters(),
        daemon.log()
    ))
    .await;
    let parked = open_by_reason(&env);
    let (dry, _) = ok(&env, &["replay", "dead-letters", "--dry-run"]);
    assert!(dry.starts_with("would replay 4 dead letters"), "{dry}");
    assert!(
        dry.contains("  payload_too_large  2") && dry.contains("  unroutable         1"),
        "{dry}"
    );

    let holder = env.client().await;
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('sluice.replay_dead_letters', 0))",
            &[],
        )
        .await
        .unwrap();
    assert!(fails(&env, &["replay", "dead-letters"], 1)
        .contains("another `sluice replay dead-letters` is running"));
    drop(holder);

    fix_the_causes(&env);
    let (summary, _) = ok(&env, &["replay", "dead-letters"]);
    assert!(
        summary.starts_with("replayed 3 events, 1 skipped"),
        "{summary}"
    );
    settle(&env, &sub, &daemon, "after-replay").await;
    let events = by_event(&sub);
    let fixed: Vec<&(i64, String)> = parked["payload_too_large"]
        .iter()
        .chain(&parked["unroutable"])
        .collect();
    for (_, event_id) in &fixed {
        let got = events
            .get(event_id)
            .unwrap_or_else(|| panic!("{event_id} was not replayed"));
        assert_eq!(got.len(), 1, "exactly once: {got:?}");
        assert_eq!(
            (
                got[0].event["replay"].as_str(),
                got[0].event["app"].as_str()
            ),
            (Some("dead_letter"), Some("crm"))
        );
        assert!(got[0].channel.starts_with("crm:t"), "{}", got[0].channel);
    }
    assert_eq!(
        sub.count(),
        1 + 3 + 1,
        "the dry run and the refused run published nothing"
    );
    let open = parked["invalid_tenant"][0].0;
    assert!(
        !events.contains_key(&parked["invalid_tenant"][0].1),
        "an unsafe tenant is never published"
    );
    assert_eq!(scalar(&env, "SELECT count(*) FILTER (WHERE resolved_at IS NOT NULL) || '/' || count(*) FROM sluice.dead_letter"), "3/4");
    assert_eq!(
        count(
            &env,
            "resolved_at IS NOT NULL AND attempts = 2 AND last_attempt_at > created_at"
        ),
        3
    );
    assert_eq!(
        scalar(
            &env,
            &format!("SELECT reason || '|' || attempts FROM sluice.dead_letter WHERE id = {open}")
        ),
        "invalid_tenant|2"
    );

    let (again, _) = ok(&env, &["replay", "dead-letters"]);
    assert!(again.starts_with("replayed 0 events, 1 skipped"), "{again}");
    assert_eq!(
        scalar(
            &env,
            "SELECT attempts FROM sluice.dead_letter WHERE resolved_at IS NULL"
        ),
        "3"
    );
}

/// Sends one command to the test Redis with redis-cli; its reply.
fn redis_cli(env: &Env, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &env.redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_dead_letter_is_replayed_to_its_own_app_only() {
    let env = Env::start(
        "[delivery]\nmax_attempts = 2\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"",
    );
    let acl = [
        "ACL",
        "SETUSER",
        "publisher",
        "on",
        ">pw",
        "~*",
        "resetchannels",
        "&crm:*",
        "+@all",
    ];
    assert_eq!(redis_cli(&env, &acl).trim(), "OK");
    edit_config(
        &env,
        &[("redis://127.0.0.1:", "redis://publisher:pw@127.0.0.1:")],
    );
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql("INSERT INTO roles VALUES ('r1', 't1', 'Sales manager', '{crm.leads.create,hrms.leave.approve}')");
    sub.wait_for(1, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    assert_eq!(
        scalar(&env, "SELECT reason || '|' || app FROM sluice.dead_letter"),
        "publish_rejected|hrms"
    );

    assert_eq!(
        redis_cli(&env, &["ACL", "SETUSER", "publisher", "allchannels"]).trim(),
        "OK"
    );
    let (summary, _) = ok(&env, &["replay", "dead-letters", "--app", "hrms"]);
    assert!(
        summary.starts_with("replayed 1 events, 0 skipped"),
        "{summary}"
    );
    settle(&env, &sub, &daemon, "after-replay").await;
    let event_id = &scalar(&env, "SELECT event_id FROM sluice.dead_letter");
    let got: Vec<(String, Option<String>)> = by_event(&sub)[event_id]
        .iter()
        .map(|m| {
            (
                m.channel.clone(),
                m.event["replay"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("crm:t1:roles".to_string(), None),
            ("hrms:t1:roles".to_string(), Some("dead_letter".to_string()))
        ]
    );
    assert_eq!(count(&env, "resolved_at IS NOT NULL"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stopped_or_killed_half_way_completes_when_run_again() {
    let env = Env::start(SMALL_PAYLOADS);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
         SELECT 's' || g, 'tenant-' || (g % 5), 'sales.deal.close' FROM generate_series(1, 3000) g",
    );
    wait_until!(WAIT, || count(&env, "resolved_at IS NULL") == 3000, || {
        daemon.log()
    })
    .await;
    fix_the_causes(&env);

    let (mut replay, log) = spawn(&env, &["replay", "dead-letters", "--rate", "300"]);
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until!(WAIT, || sub.count() >= 200, stderr).await;
    Command::new("kill")
        .args(["-TERM", &replay.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(replay.wait().unwrap().code(), Some(1), "{}", stderr());
    assert!(
        stderr().contains("stopped before the end; run the same command again"),
        "{}",
        stderr()
    );
    let stopped = count(&env, "resolved_at IS NOT NULL");
    assert!(
        stopped > 0 && stopped < 3000,
        "stopped after the batch in flight: {stopped} resolved"
    );

    let before = sub.count();
    let (mut replay, log) = spawn(&env, &["replay", "dead-letters", "--rate", "300"]);
    wait_until!(WAIT, || sub.count() >= before + 300, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    let _ = replay.kill();
    let _ = replay.wait();
    settle(&env, &sub, &daemon, "after-kill").await;
    let received: HashSet<String> = by_event(&sub).into_keys().collect();
    let resolved = scalar(&env, "SELECT coalesce(string_agg(event_id, ','), '') FROM sluice.dead_letter WHERE resolved_at IS NOT NULL");
    let resolved: Vec<&str> = resolved.split(',').filter(|s| !s.is_empty()).collect();
    assert!(
        !resolved.is_empty() && resolved.len() < 3000,
        "killed half way: {} resolved",
        resolved.len()
    );
    assert!(
        resolved.iter().all(|e| received.contains(*e)),
        "a row is resolved only after Redis acknowledged its event"
    );

    let (summary, _) = ok(&env, &["replay", "dead-letters", "--rate", "0"]);
    assert!(
        summary.starts_with(&format!(
            "replayed {} events, 0 skipped",
            3000 - resolved.len()
        )),
        "{summary}"
    );
    settle(&env, &sub, &daemon, "after-rerun").await;
    let replayed: HashSet<String> = sub
        .all()
        .iter()
        .filter(|m| m.event["replay"] == "dead_letter")
        .map(|m| m.event["eventId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        replayed.len(),
        3000,
        "every parked event arrived at least once"
    );
    assert_eq!(count(&env, "resolved_at IS NULL"), 0);
    // more resolved rows than one purge statement deletes
    env.sql(
        "INSERT INTO sluice.dead_letter (event_id, table_name, payload, reason, resolved_at) \
         SELECT 'x:' || g, 'public.roles', '{}', 'unroutable', now() FROM generate_series(1, 22000) g",
    );
    assert_eq!(
        ok(&env, &["dead-letters", "purge"]).0.trim(),
        "purged 25000 dead letters"
    );
    assert_eq!(count(&env, "true"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waiting_for_redis_leaves_the_rows_open_when_interrupted() {
    let mut env = Env::start(SMALL_PAYLOADS);
    let daemon = env.daemon();
    write_rows(&env, &[("sale", "'t1'", "sales.deal.close")], &[]);
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    fix_the_causes(&env);
    env.redis.stop().unwrap();
    let (mut replay, log) = spawn(&env, &["replay", "dead-letters"]);
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until!(WAIT, || stderr().contains("Redis is unavailable"), stderr).await;
    Command::new("kill")
        .args(["-TERM", &replay.id().to_string()])
        .status()
        .unwrap();
    let status = replay.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", stderr());
    let last = stderr().lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: interrupted while Redis was unavailable"),
        "{}",
        stderr()
    );
    assert_eq!(
        scalar(
            &env,
            "SELECT attempts FROM sluice.dead_letter WHERE resolved_at IS NULL"
        ),
        "1",
        "left as it was"
    );
}
