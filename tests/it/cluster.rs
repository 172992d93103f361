//! Redis Cluster on real servers: a 3-master cluster (with replicas for the failover case),
//! `sluice run` pointed at it with `redis+cluster://`, in both capture modes. Every change
//! must land once on its channel's shard, numbered 1, 2, 3 … per channel, while slots move
//! and while a master dies and its replica takes over.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::common;
use crate::common::{wait_until, ConfigText, Env, DB};
use fred::prelude::*;
use sluice::testkit::{Postgres, Redis, RedisCluster};

const WAIT: Duration = Duration::from_secs(90);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
const TRIGGER: &str = "mode = \"trigger\"";
const TENANTS: i64 = 50;

/// PostgreSQL set up for `mode`, its config pointing at `cluster`.
fn env_on(cluster: &RedisCluster, mode: &str) -> Env {
    env_with(cluster, mode, "")
}

/// As [`env_on`], with more `[redis]` settings.
fn env_with(cluster: &RedisCluster, mode: &str, settings: &str) -> Env {
    let pg = Postgres::start().expect("start postgres");
    let redis = Redis::start().expect("start redis");
    let (pg_url, cluster_url) = (pg.url_for(DB), cluster.url());
    Env::start_on(pg, redis, |_| {
        ConfigText::new(&pg_url, &cluster_url)
            .redis(&format!("command_timeout = \"2s\"\n{settings}"))
            .extra(mode)
            .text()
    })
}

/// Inserts credit configurations `k<from>`..`k<to>` over 50 tenants.
fn insert(env: &Env, from: i64, to: i64) {
    env.sql(&format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
         SELECT 'k' || g, 'tenant-' || (g % {TENANTS}), 'crm.leads.create' FROM generate_series({from}, {to}) g"
    ));
}

fn channel(tenant: i64) -> String {
    format!("crm:tenant-{tenant}:credit-configs")
}

async fn client(cluster: &RedisCluster) -> Client {
    let seeds = cluster.ports().iter().map(|&p| ("127.0.0.1", p)).collect();
    let config = fred::types::config::Config {
        server: fred::types::config::ServerConfig::new_clustered(seeds),
        ..Default::default()
    };
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(3))
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(3))
        .set_policy(fred::types::config::ReconnectPolicy::new_constant(0, 200))
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

/// Each channel's history events (parsed), in entry order, with their entry ids' seqs; asks
/// again while the cluster is failing over.
async fn histories(client: &Client) -> BTreeMap<String, Vec<(u64, serde_json::Value)>> {
    let read = RefCell::new(None);
    let answered = async || {
        let result = try_histories(client).await;
        if let Err(e) = &result {
            eprintln!("reading history: {e}");
        }
        let ok = result.is_ok();
        *read.borrow_mut() = Some(result);
        ok
    };
    wait_until!(WAIT, async || answered().await, || {
        format!(
            "reading history: {:?}",
            read.borrow().as_ref().map(|r| r.as_ref().err())
        )
    })
    .await;
    read.into_inner().unwrap().unwrap()
}

async fn try_histories(
    client: &Client,
) -> Result<BTreeMap<String, Vec<(u64, serde_json::Value)>>, Error> {
    let mut out = BTreeMap::new();
    for t in 0..TENANTS {
        let ch = channel(t);
        let entries: Vec<(String, HashMap<String, String>)> = client
            .xrange(format!("sluice:history:{{{ch}}}"), "-", "+", None)
            .await?;
        let events = entries
            .into_iter()
            .map(|(id, f)| {
                let seq = id.trim_end_matches("-0").parse().unwrap();
                (seq, serde_json::from_str(&f["event"]).unwrap())
            })
            .collect();
        out.insert(ch, events);
    }
    Ok(out)
}

async fn history_total(client: &Client) -> usize {
    histories(client).await.values().map(Vec::len).sum()
}

/// Waits for `n` history entries, then checks every channel holds 1..=k in one epoch, each
/// change once, and `n` different changes in all.
async fn assert_all_once(client: &Client, n: usize, daemon: &common::Daemon) {
    let total = Cell::new(0);
    wait_until!(
        WAIT,
        async || {
            total.set(history_total(client).await);
            total.get() >= n
        },
        || format!(
            "{} of {n} changes in history\n{}",
            total.get(),
            daemon.log()
        )
    )
    .await;
    let mut ids = HashSet::new();
    for (ch, events) in histories(client).await {
        let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{ch}: contiguous"
        );
        for (seq, e) in &events {
            assert_eq!(
                e["seq"].as_u64(),
                Some(*seq),
                "{ch}: the entry holds its seq"
            );
            assert!(
                ids.insert(e["eventId"].as_str().unwrap().to_string()),
                "{ch}: {e} twice"
            );
        }
        let epochs: HashSet<&str> = events
            .iter()
            .map(|(_, e)| e["epoch"].as_str().unwrap())
            .collect();
        assert!(epochs.len() <= 1, "{ch}: one epoch, got {epochs:?}");
    }
    assert_eq!(ids.len(), n, "every change once\n{}", daemon.log());
}

async fn each_change_once_on_its_shard(mode: &str) {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let env = env_on(&cluster, mode);
    let redis = client(&cluster).await;
    let subscriber = Subscribers::start(&cluster).await;
    let daemon = env.daemon();
    insert(&env, 1, 10_000);
    assert_all_once(&redis, 10_000, &daemon).await;
    // every message reached a subscriber of its own shard, in seq order
    let got = || subscriber.counts();
    wait_until!(
        WAIT,
        || got().values().sum::<usize>() >= 10_000,
        || format!("{:?}", got())
    )
    .await;
    for t in 0..TENANTS {
        assert_eq!(got()[&channel(t)], 200, "{}", channel(t));
    }
    assert!(
        subscriber.in_order(),
        "each channel's messages arrive in seq order"
    );
}

#[tokio::test]
async fn logical_each_change_once_on_its_shard() {
    each_change_once_on_its_shard(LOGICAL).await;
}

#[tokio::test]
async fn trigger_each_change_once_on_its_shard() {
    each_change_once_on_its_shard(TRIGGER).await;
}

/// Inserts 10k changes in 20 rounds from another thread; returns when all are committed.
fn insert_in_rounds(env: &Env) -> std::thread::JoinHandle<()> {
    let url = env.pg.url_for(DB);
    std::thread::spawn(move || {
        for round in 0..20 {
            let (from, to) = (round * 500 + 1, round * 500 + 500);
            psql(
                &url,
                &format!(
                    "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
                     SELECT 'k' || g, 'tenant-' || (g % {TENANTS}), 'crm.leads.create' \
                     FROM generate_series({from}, {to}) g"
                ),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Runs `sql` with psql from any thread.
fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn reshard_mid_stream(mode: &str) {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let env = env_on(&cluster, mode);
    let redis = client(&cluster).await;
    let daemon = env.daemon();
    let writer = insert_in_rounds(&env);
    let masters = cluster.masters().unwrap();
    let (from, to) = (masters[0].0, masters[1].0);
    let owned: usize = masters[0]
        .1
        .iter()
        .map(|(a, b)| usize::from(b - a) + 1)
        .sum();
    // all the slots of one master, a third, move while changes stream in
    wait_for_history(&redis, 1_000).await;
    cluster.reshard(from, to, owned).unwrap();
    writer.join().unwrap();
    assert_all_once(&redis, 10_000, &daemon).await;
    let now = cluster.masters().unwrap();
    assert!(
        now.iter().all(|(p, r)| *p != from || r.is_empty()),
        "the slots moved: {now:?}"
    );
}

async fn wait_for_history(redis: &Client, n: usize) {
    wait_until!(WAIT, async || history_total(redis).await >= n, || {
        format!("history never reached {n}")
    })
    .await;
}

#[tokio::test]
async fn logical_reshard_mid_stream_loses_and_repeats_nothing() {
    reshard_mid_stream(LOGICAL).await;
}

#[tokio::test]
async fn trigger_reshard_mid_stream_loses_and_repeats_nothing() {
    reshard_mid_stream(TRIGGER).await;
}

/// A master's replica falls behind (frozen), the master dies, and the replica takes over
/// without the batches it never copied. With `wait_replicas = 1` those batches were never
/// counted as published (WAIT got no answer), so they go out again to the new master: 0
/// missing. Without it, the master's acknowledgement alone moved the source past them.
async fn failover_mid_stream(mode: &str) {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let env = env_with(&cluster, mode, "wait_replicas = 1");
    let redis = client(&cluster).await;
    let daemon = env.daemon();
    let writer = insert_in_rounds(&env);
    wait_for_history(&redis, 1_000).await;
    let victim = cluster.masters().unwrap()[0].0;
    let replica = cluster.replicas_of(victim).unwrap()[0];
    cluster.pause(replica, true).unwrap();
    // batches for the victim's slots stay unconfirmed while its replica is frozen
    let held = || daemon.log_count("0 of the 1 replicas");
    wait_until!(WAIT, || held() > 0, || daemon.log()).await;
    cluster.kill(victim).unwrap();
    cluster.pause(replica, false).unwrap();
    writer.join().unwrap();
    let promoted = || {
        cluster
            .cli(replica, &["ROLE"])
            .unwrap_or_default()
            .starts_with("master")
    };
    wait_until!(WAIT, promoted, || format!("{replica} was never promoted")).await;
    cluster.wait_ok(WAIT).unwrap();
    // the old master comes back as the new one's replica, so WAIT 1 can be answered again
    cluster.restart(victim).unwrap();
    assert_all_once(&redis, 10_000, &daemon).await;
    assert!(
        daemon.log_count(&format!("shard 127.0.0.1:{victim}")) > 0,
        "the log names the shard\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn logical_master_failover_mid_stream_loses_nothing() {
    failover_mid_stream(LOGICAL).await;
}

#[tokio::test]
async fn trigger_master_failover_mid_stream_loses_nothing() {
    failover_mid_stream(TRIGGER).await;
}

/// One `SSUBSCRIBE` connection per master, each to the channels its slots hold.
struct Subscribers {
    seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<u64>>>>,
    _clients: Vec<fred::clients::SubscriberClient>,
}

impl Subscribers {
    async fn start(cluster: &RedisCluster) -> Subscribers {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Vec<u64>>::new()));
        let mut clients = Vec::new();
        for (port, ranges) in cluster.masters().unwrap() {
            let url = format!("redis://127.0.0.1:{port}");
            let sub = Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
                .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 17)
                .build_subscriber_client()
                .unwrap();
            sub.init().await.unwrap();
            let mine: Vec<String> = (0..TENANTS)
                .map(channel)
                .filter(|c| {
                    let s = sluice_slot(c);
                    ranges.iter().any(|(a, b)| (*a..=*b).contains(&s))
                })
                .collect();
            let mut rx = sub.message_rx();
            let seen2 = seen.clone();
            tokio::spawn(async move {
                while let Ok(m) = rx.recv().await {
                    let raw = m.value.as_string().unwrap_or_default();
                    let e: serde_json::Value = serde_json::from_str(&raw).unwrap();
                    let mut seen = seen2.lock().unwrap();
                    seen.entry(m.channel.to_string())
                        .or_default()
                        .push(e["seq"].as_u64().unwrap());
                }
            });
            for c in mine {
                sub.ssubscribe(c).await.unwrap();
            }
            clients.push(sub);
        }
        Subscribers {
            seen,
            _clients: clients,
        }
    }

    fn counts(&self) -> HashMap<String, usize> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(c, s)| (c.clone(), s.len()))
            .collect()
    }

    fn in_order(&self) -> bool {
        self.seen
            .lock()
            .unwrap()
            .values()
            .all(|s| s.windows(2).all(|w| w[1] == w[0] + 1))
    }
}

fn sluice_slot(channel: &str) -> u16 {
    fred::util::redis_keyslot(channel.as_bytes())
}

#[tokio::test]
async fn check_reports_every_master_and_a_failed_cluster() {
    let mut cluster = RedisCluster::start(3, 0).unwrap();
    let env = env_on(&cluster, TRIGGER);
    let out = env.sluice(&["check"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("3 masters") && text.contains("all 16384 slots served"),
        "{text}"
    );
    for port in cluster.ports() {
        assert!(
            text.contains(&format!("127.0.0.1:{port} slots ")),
            "{port}: {text}"
        );
    }
    // a master gone for good: its slots are not served, and check says so
    let victim = cluster.ports()[0];
    cluster.kill(victim).unwrap();
    let text = RefCell::new(String::new());
    let check_fails = || {
        let out = env.sluice(&["check"]);
        *text.borrow_mut() = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        !out.status.success() && text.borrow().contains("cluster")
    };
    wait_until!(WAIT, check_fails, || format!(
        "check kept passing: {}",
        text.borrow()
    ))
    .await;
}

/// `sluice tail` on the cluster finds channels created after it started (by their meta keys),
/// subscribes each on its shard, and across a reshard (Redis ends the moved channels'
/// subscriptions with a `sunsubscribe` push) prints every event once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_channels_across_a_reshard() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let env = env_on(&cluster, TRIGGER);
    let redis = client(&cluster).await;
    let daemon = env.daemon();
    let tail = common::tail::Tail::start(&env, &["crm:*"]);
    wait_until!(WAIT, || tail.errors().contains("listening on"), || tail
        .errors())
    .await;
    let writer = insert_in_rounds(&env);
    wait_for_history(&redis, 2_000).await;
    let masters = cluster.masters().unwrap();
    cluster.reshard(masters[0].0, masters[2].0, 5461).unwrap();
    writer.join().unwrap();
    assert_all_once(&redis, 10_000, &daemon).await;
    wait_until!(WAIT, || tail.count() >= 10_000, || {
        let e = tail.errors();
        format!(
            "{} printed\n{}",
            tail.count(),
            &e[e.len().saturating_sub(3000)..]
        )
    })
    .await;
    let mut ids = HashSet::new();
    for (ch, events) in tail.events() {
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{ch}: every seq once, in order"
        );
        ids.extend(
            events
                .iter()
                .map(|e| e["eventId"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(ids.len(), 10_000);
    assert!(
        tail.errors().contains("its slot moved"),
        "the sunsubscribe push was seen:\n{}",
        tail.errors()
    );
}

/// A slot left half migrated (MIGRATING on its master, IMPORTING on another, keys not moved
/// yet) does not stop its channels: the script names only the keys a channel has (no state
/// hash for a route without `state`), so the master that still holds them runs it instead of
/// answering TRYAGAIN until the slot has moved.
#[tokio::test]
async fn a_slot_in_migration_keeps_publishing() {
    let cluster = RedisCluster::start(3, 0).unwrap();
    let env = env_on(&cluster, TRIGGER);
    let redis = client(&cluster).await;
    let daemon = env.daemon();
    insert(&env, 1, 500);
    assert_all_once(&redis, 500, &daemon).await;
    let slot = sluice_slot(&channel(7));
    let masters = cluster.masters().unwrap();
    let owner = |s: u16| {
        masters
            .iter()
            .find(|(_, r)| r.iter().any(|(a, b)| (*a..=*b).contains(&s)))
            .unwrap()
            .0
    };
    let from = owner(slot);
    let to = masters.iter().map(|m| m.0).find(|&p| p != from).unwrap();
    let (from_id, to_id) = (cluster.node_id(from).unwrap(), cluster.node_id(to).unwrap());
    let slot_text = slot.to_string();
    cluster
        .cli(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
        )
        .unwrap();
    cluster
        .cli(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
        )
        .unwrap();
    insert(&env, 501, 1000);
    assert_all_once(&redis, 1000, &daemon).await;
}
