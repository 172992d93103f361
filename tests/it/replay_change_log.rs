//! `sluice replay change-log` on real servers: a time window delivers exactly its changes with
//! their original ids, in trigger mode and in logical mode with `keep_history`; filters narrow
//! it; a replay killed half way and run again loses nothing.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{fenced, insert, Env, Msg, Subscriber};

const WAIT: Duration = Duration::from_secs(60);

/// Event ids of what arrived, by how often.
fn ids(messages: &[Msg]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for m in messages {
        *out.entry(m.event["eventId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

fn now(env: &Env) -> String {
    env.sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .trim()
    .to_string()
}

fn replay(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["replay", "change-log"];
    all.extend_from_slice(args);
    let out = env.sluice(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replay {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Writes three batches of 20 rows (`k1..`, `k101..`, `k201..`) with a time mark between
/// them, waits until the daemon published all 60, and returns the marks and the live events
/// of the middle batch.
async fn three_batches(env: &Env, live: &Subscriber) -> (String, String, Vec<Msg>) {
    insert(env, 1, 20);
    live.wait_for(20, WAIT, String::new).await;
    let t1 = now(env);
    insert(env, 101, 120);
    live.wait_for(40, WAIT, String::new).await;
    let t2 = now(env);
    insert(env, 201, 220);
    let all = live.wait_for(60, WAIT, String::new).await;
    let key = |m: &Msg| {
        m.event["data"]["config_id"].as_str().unwrap()[1..]
            .parse::<i64>()
            .unwrap()
    };
    let middle = all
        .into_iter()
        .filter(|m| (101..=120).contains(&key(m)))
        .collect();
    (t1, t2, middle)
}

/// The replayed window equals the middle batch: same ids, each once, marked as a replay.
async fn assert_window_replayed(env: &Env) {
    let live = env.subscribe().await;
    let (t1, t2, middle) = three_batches(env, &live).await;
    assert_eq!(middle.len(), 20);
    let dry = replay(env, &["--from", &t1, "--to", &t2, "--dry-run"]);
    assert!(
        dry.starts_with("would replay 20 events, 0 skipped (20 changes"),
        "{dry}"
    );
    let sub = env.subscribe().await;
    let summary = replay(env, &["--from", &t1, "--to", &t2, "--rate", "0"]);
    assert!(
        summary.starts_with("replayed 20 events, 0 skipped"),
        "{summary}"
    );
    let got = sub.wait_for(20, WAIT, String::new).await;
    let expected: HashMap<String, usize> = ids(&middle);
    assert_eq!(
        ids(&fenced(env, &sub).await),
        expected,
        "the window's events, each once, with their original ids"
    );
    for m in &got {
        assert_eq!(m.event["replay"], "change_log", "{}", m.raw);
        let first = middle
            .iter()
            .find(|l| l.event["eventId"] == m.event["eventId"])
            .unwrap();
        assert_eq!(
            (&m.channel, &m.event["data"]),
            (&first.channel, &first.event["data"])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_window_is_replayed_with_its_original_ids_in_trigger_mode() {
    let env = Env::start("");
    let _daemon = env.daemon();
    assert_window_replayed(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_keeps_a_history_that_replays_with_the_streamed_ids() {
    let env = Env::start("mode = \"logical\"\nkeep_history = true");
    let _daemon = env.daemon();
    assert_window_replayed(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_app_and_table_filters_narrow_a_replay() {
    let env = Env::start("");
    let daemon = env.daemon();
    let live = env.subscribe().await;
    insert(&env, 1, 10);
    env.sql("INSERT INTO users (user_id, tenant_id, email) SELECT g, 'tenant-' || (g % 2), 'u' || g || '@x' FROM generate_series(1, 4) g");
    live.wait_for(10 + 8, WAIT, || daemon.log()).await;

    let sub = env.subscribe().await;
    replay(
        &env,
        &["--from", "1", "--tenant", "tenant-1", "--rate", "0"],
    );
    let got = fenced(&env, &sub).await;
    let tenants: Vec<&str> = got
        .iter()
        .map(|m| m.event["tenantId"].as_str().unwrap())
        .collect();
    // credit configurations k1 and k6, users 1 and 3 to two apps each
    assert_eq!(got.len(), 2 + 4, "{tenants:?}");
    assert!(tenants.iter().all(|t| *t == "tenant-1"), "{tenants:?}");

    // The dry run counts what the replay then publishes: --app is decided by routing.
    let dry = replay(
        &env,
        &[
            "--from",
            "1",
            "--app",
            "hrms",
            "--table",
            "users",
            "--dry-run",
        ],
    );
    assert!(
        dry.starts_with("would replay 4 events, 0 skipped (4 changes"),
        "{dry}"
    );
    let dry = replay(&env, &["--from", "1", "--app", "hrms", "--dry-run"]);
    assert!(dry.starts_with("would replay 4 events"), "{dry}");
    let sub = env.subscribe().await;
    let summary = replay(
        &env,
        &[
            "--from", "1", "--app", "hrms", "--table", "users", "--rate", "0",
        ],
    );
    let got = fenced(&env, &sub).await;
    let channels: Vec<&str> = got.iter().map(|m| m.channel.as_str()).collect();
    assert_eq!(got.len(), 4, "{channels:?}");
    assert!(
        channels
            .iter()
            .all(|c| c.starts_with("hrms:") && c.ends_with(":users")),
        "{channels:?}"
    );
    assert!(
        summary.starts_with("replayed 4 events, 0 skipped"),
        "{summary}"
    );

    let out = env.sluice(&["replay", "change-log", "--from", "1", "--app", "payroll"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_half_way_and_run_again_loses_nothing() {
    let env = Env::start("");
    let daemon = env.daemon();
    let live = env.subscribe().await;
    insert(&env, 1, 3000);
    let first = live.wait_for(3000, WAIT, || daemon.log()).await;

    let sub = env.subscribe().await;
    let mut slow = env
        .command()
        .args(["replay", "change-log", "--from", "1", "--rate", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sub.wait_for(500, WAIT, String::new).await;
    slow.kill().unwrap();
    slow.wait().unwrap();
    let partial = sub.count();
    assert!(
        partial < 3000,
        "the first replay finished before it was killed ({partial} events)"
    );

    replay(&env, &["--from", "1", "--rate", "0"]);
    let got = ids(&fenced(&env, &sub).await);
    let missing: Vec<String> = ids(&first)
        .into_keys()
        .filter(|id| !got.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never replayed, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}
