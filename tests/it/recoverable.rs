//! Recoverable channels on real servers: every message numbered 1, 2, 3 … per channel with
//! its history entry holding the exact bytes; exactly once into Redis across `kill -9` and a
//! PostgreSQL crash, in both modes; a new epoch when Redis lost the channel; state per record;
//! `MOVED_OUT` when a row changes tenant; replays take no number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::common;
use crate::common::{wait_until, Env, Subscriber};
use fred::prelude::*;

const WAIT: Duration = Duration::from_secs(60);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
const TRIGGER: &str = "mode = \"trigger\"";

async fn redis(env: &Env) -> Client {
    let client =
        Builder::from_config(fred::types::config::Config::from_url(&env.redis.url()).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

/// A channel's history: (entry id, event bytes).
async fn history(client: &Client, channel: &str) -> Vec<(String, String)> {
    let entries: Vec<(String, HashMap<String, String>)> = client
        .xrange(format!("sluice:history:{{{channel}}}"), "-", "+", None)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(id, mut fields)| (id, fields.remove("event").unwrap_or_default()))
        .collect()
}

/// The messages of each channel, in arrival order, without the test's fence.
fn by_channel(sub: &Subscriber) -> BTreeMap<String, Vec<common::Msg>> {
    let mut out: BTreeMap<String, Vec<common::Msg>> = BTreeMap::new();
    for m in sub
        .all()
        .into_iter()
        .filter(|m| m.channel != "test:fence:0")
    {
        out.entry(m.channel.clone()).or_default().push(m);
    }
    out
}

/// Every channel's seqs are 1..=n in arrival order within one epoch, and no change arrived
/// twice; returns the number of messages.
fn assert_numbered_once(sub: &Subscriber) -> usize {
    let mut total = 0;
    for (channel, msgs) in by_channel(sub) {
        let seqs: Vec<u64> = msgs
            .iter()
            .map(|m| m.event["seq"].as_u64().expect("a seq"))
            .collect();
        let want: Vec<u64> = (1..=msgs.len() as u64).collect();
        assert_eq!(seqs, want, "{channel}: seqs in order, no gap, no repeat");
        let epochs: HashSet<&str> = msgs
            .iter()
            .map(|m| m.event["epoch"].as_str().unwrap())
            .collect();
        assert_eq!(epochs.len(), 1, "{channel}: one epoch");
        let ids: HashSet<&str> = msgs
            .iter()
            .map(|m| m.event["eventId"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            msgs.len(),
            "{channel}: no change published twice"
        );
        total += msgs.len();
    }
    total
}

async fn numbered_with_history(mode: &str) {
    let env = Env::start(mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::insert(&env, 1, 40);
    sub.wait_for(40, WAIT, || daemon.log()).await;
    assert_eq!(assert_numbered_once(&sub), 40);
    let client = redis(&env).await;
    for (channel, msgs) in by_channel(&sub) {
        let kept = history(&client, &channel).await;
        let ids: Vec<String> = (1..=msgs.len()).map(|n| format!("{n}-0")).collect();
        assert_eq!(
            kept.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            ids,
            "{channel}"
        );
        for ((_, event), m) in kept.iter().zip(&msgs) {
            assert_eq!(event, &m.raw, "the history holds the exact published bytes");
        }
        let meta: HashMap<String, String> = client
            .hgetall(format!("sluice:meta:{{{channel}}}"))
            .await
            .unwrap();
        assert_eq!(meta["seq"], msgs.len().to_string());
        assert_eq!(meta["epoch"], msgs[0].event["epoch"].as_str().unwrap());
        let ttl: i64 = client
            .pttl(format!("sluice:history:{{{channel}}}"))
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 24 * 3600 * 1000, "history expires: {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_numbered_per_channel_and_kept_in_history_in_trigger_mode() {
    numbered_with_history(TRIGGER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_numbered_per_channel_and_kept_in_history_in_logical_mode() {
    numbered_with_history(LOGICAL).await;
}

/// Rows written while the daemon is killed three times mid-stream: every change arrives once,
/// numbered without a gap.
async fn exactly_once_across_kill_9(mode: &str) {
    let env = Env::start(&format!("{mode}\nbatch_size = 50"));
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    for round in 0..3 {
        let (from, to) = (round * 1000 + 1, round * 1000 + 1000);
        common::insert(&env, from, to);
        let seen = sub.count();
        wait_until!(WAIT, || sub.count() > seen + 100, || daemon.log()).await;
        daemon.sigkill();
        daemon = env.daemon();
    }
    wait_until!(WAIT, || common::distinct(&sub) == 3000, || format!(
        "{} of 3000\n{}",
        common::distinct(&sub),
        daemon.log()
    ))
    .await;
    common::fenced(&env, &sub).await;
    assert_eq!(assert_numbered_once(&sub), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_publishes_nothing_twice_in_trigger_mode() {
    exactly_once_across_kill_9(TRIGGER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_publishes_nothing_twice_in_logical_mode() {
    exactly_once_across_kill_9(LOGICAL).await;
}

/// A PostgreSQL crash sends the slot back to its last persisted position, far behind what was
/// confirmed: what Redis already took is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_publishes_nothing_twice_in_logical_mode() {
    let env = Env::start(&format!("{LOGICAL}\n[delivery]\nmax_backoff = \"1s\""));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::insert(&env, 1, 2000);
    sub.wait_for(2000, WAIT, || daemon.log()).await;
    env.pg.kill().unwrap();
    env.pg.restart().unwrap();
    common::insert(&env, 2001, 2500);
    wait_until!(WAIT, || common::distinct(&sub) == 2500, || daemon.log()).await;
    common::fenced(&env, &sub).await;
    assert_eq!(assert_numbered_once(&sub), 2500);
}

/// Redis restarted without its data: the channel starts a new epoch at seq 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_starts_a_new_epoch() {
    let mut env = Env::start(TRIGGER);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::insert(&env, 5, 5); // tenant-0
    let first = sub.wait_for(1, WAIT, || daemon.log()).await[0]
        .event
        .clone();
    assert_eq!(first["seq"], 1);
    env.redis.restart().unwrap();
    let sub = env.subscribe().await;
    common::insert(&env, 10, 10); // tenant-0 again
    let again = sub.wait_for(1, WAIT, || daemon.log()).await[0]
        .event
        .clone();
    assert_eq!(again["seq"], 1, "numbering starts again");
    assert_ne!(again["epoch"], first["epoch"], "in a new epoch");
    let client = redis(&env).await;
    assert_eq!(
        history(&client, "crm:tenant-0:credit-configs").await.len(),
        1,
        "the old history is gone"
    );
}

const STATE: &str = r#"
[[tables]]
table = "public.leads"
type = "leads"
tenant = "tenant_id"
app = { fixed = ["crm"] }
state = true
"#;

/// `state = true`: the latest message per record, a DELETE removes it; an UPDATE that moves
/// the row to another tenant tells the old channel `MOVED_OUT`.
async fn state_and_moves(mode: &str) {
    let env = Env::start_with(
        "CREATE TABLE leads (id text PRIMARY KEY, tenant_id text, name text); ALTER TABLE leads REPLICA IDENTITY FULL;",
        &format!("{mode}\n{STATE}"),
    );
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql("INSERT INTO leads VALUES ('l1', 't1', 'a'), ('l2', 't1', 'b'), ('l3', 't1', 'c')");
    env.sql("UPDATE leads SET name = 'a2' WHERE id = 'l1'");
    env.sql("DELETE FROM leads WHERE id = 'l2'");
    env.sql("UPDATE leads SET tenant_id = 't2' WHERE id = 'l3'");
    sub.wait_for(7, WAIT, || daemon.log()).await;
    let client = redis(&env).await;
    let state: HashMap<String, String> =
        client.hgetall("sluice:state:{crm:t1:leads}").await.unwrap();
    assert_eq!(
        state.keys().collect::<HashSet<_>>(),
        HashSet::from([&"l1".to_string()]),
        "{state:?}"
    );
    let l1: serde_json::Value = serde_json::from_str(&state["l1"]).unwrap();
    assert_eq!(
        (l1["data"]["name"].as_str(), l1["seq"].as_u64()),
        (Some("a2"), Some(4))
    );
    let moved = by_channel(&sub)["crm:t1:leads"]
        .last()
        .unwrap()
        .event
        .clone();
    assert_eq!(
        (moved["operation"].as_str(), moved["recordId"].as_str()),
        (Some("MOVED_OUT"), Some("l3"))
    );
    assert_eq!(moved["tenantId"], "t1");
    let t2: HashMap<String, String> = client.hgetall("sluice:state:{crm:t2:leads}").await.unwrap();
    assert!(t2.contains_key("l3"), "{t2:?}");
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_moved_out_in_trigger_mode() {
    state_and_moves(TRIGGER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_moved_out_in_logical_mode() {
    state_and_moves(LOGICAL).await;
}

/// `history.max_len` bounds each stream; an operator's replay carries `replay` and no `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_and_replays_take_no_number() {
    let env = Env::start(&format!("{TRIGGER}\n[history]\nmax_len = 100"));
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    common::insert(&env, 1, 1500); // 300 per tenant
    sub.wait_for(1500, WAIT, || daemon.log()).await;
    let client = redis(&env).await;
    let kept = history(&client, "crm:tenant-0:credit-configs").await;
    assert!(
        kept.len() >= 100 && kept.len() < 300,
        "trimmed to about 100: {}",
        kept.len()
    );
    assert_eq!(kept.last().unwrap().0, "300-0");
    assert!(daemon.terminate().expect("stops").success());
    let before = sub.count();
    let out = env.sluice(&["replay", "change-log", "--from", "1", "--to", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = sub
        .wait_for(before + 5, WAIT, || {
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .await;
    for m in &msgs[before..] {
        assert_eq!(m.event["replay"], "change_log");
        assert!(m.event.get("seq").is_none(), "{}", m.raw);
    }
    assert_eq!(
        history(&client, "crm:tenant-0:credit-configs")
            .await
            .last()
            .unwrap()
            .0,
        "300-0"
    );
}

/// A standby that takes over after `kill -9` of the active daemon goes on numbering where the
/// active one stopped: the channel's meta lives in Redis, not in the process.
async fn takeover_keeps_numbering(mode: &str) {
    let env = Env::start(mode);
    let sub = env.subscribe().await;
    let mut active = env.daemon();
    common::insert(&env, 1, 500);
    sub.wait_for(500, WAIT, || active.log()).await;
    let standby = env.daemon_with(&env.config);
    wait_until!(WAIT, || standby.log().contains("standby"), || standby.log()).await;
    common::insert(&env, 501, 2000);
    wait_until!(WAIT, || sub.count() > 600, || active.log()).await;
    active.sigkill();
    common::insert(&env, 2001, 2500);
    wait_until!(WAIT, || common::distinct(&sub) == 2500, || format!(
        "{} of 2500\n{}",
        common::distinct(&sub),
        standby.log()
    ))
    .await;
    common::fenced(&env, &sub).await;
    assert_eq!(assert_numbered_once(&sub), 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_taking_over_goes_on_numbering_in_trigger_mode() {
    takeover_keeps_numbering(TRIGGER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_taking_over_goes_on_numbering_in_logical_mode() {
    takeover_keeps_numbering(LOGICAL).await;
}
