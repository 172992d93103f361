//! What the channel transactions add to recoverable channels, on real servers: Sluice numbers
//! messages from the meta it last wrote, so a Redis that lost a channel's meta while the
//! connection stayed up (a `FLUSHALL`) must still start a new epoch; and `check` tells a Redis
//! user that may not run the transaction.

use std::time::Duration;

use std::collections::HashMap;

use crate::common;
use crate::common::{redis_command, wait_until, Env};
use fred::prelude::*;
use sluice::testkit::Proxy;

const WAIT: Duration = Duration::from_secs(60);

/// The epoch in `sluice:meta:{<ch>}` and the entry ids in the channel's history.
async fn meta_and_history(env: &Env, channel: &str) -> (Option<String>, Vec<String>) {
    let config = fred::types::config::Config::from_url(&env.redis.url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let epoch: Option<String> = client
        .hget(format!("sluice:meta:{{{channel}}}"), "epoch")
        .await
        .unwrap();
    let entries: Vec<(String, HashMap<String, String>)> = client
        .xrange(format!("sluice:history:{{{channel}}}"), "-", "+", None)
        .await
        .unwrap();
    (epoch, entries.into_iter().map(|(id, _)| id).collect())
}

/// Adds the Redis user `name` (password `pw`) with every right but what `minus` takes away.
fn redis_user(env: &Env, name: &str, minus: &str) {
    let args = [
        "ACL", "SETUSER", name, "on", ">pw", "~*", "&*", "+@all", minus,
    ];
    assert!(redis_command(env.redis.port(), &args).starts_with("+OK"));
}

/// As [`redis_user`], and points the config's Redis URL at that user.
fn connect_as(env: &Env, name: &str, minus: &str) {
    redis_user(env, name, minus);
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "redis://127.0.0.1:",
        &format!("redis://{name}:pw@127.0.0.1:"),
    );
    std::fs::write(&env.config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_while_connected_starts_a_new_epoch_holding_the_batch() {
    let env = Env::start("mode = \"trigger\"");
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::insert(&env, 5, 5); // tenant-0
    let first = sub.wait_for(1, WAIT, || daemon.log()).await[0]
        .event
        .clone();
    assert_eq!(first["seq"], 1);
    let flushed = redis_command(env.redis.port(), &["FLUSHALL"]);
    assert!(flushed.starts_with("+OK"), "{flushed}");
    common::insert(&env, 10, 10); // tenant-0 again, on the same connection
    let channel = "crm:tenant-0:credit-configs";
    let all = sub.wait_for(2, WAIT, || daemon.log()).await;
    let last = all.last().unwrap().event.clone();
    assert_ne!(last["epoch"], first["epoch"], "a new epoch: {all:?}");
    assert_eq!(last["seq"], 1, "numbering starts again");
    assert_eq!(last["recordId"], all[1].event["recordId"]);
    let (epoch, ids) = meta_and_history(&env, channel).await;
    assert_eq!(epoch.as_deref(), last["epoch"].as_str());
    assert_eq!(ids, ["1-0"], "history holds the batch in the new epoch");
    assert_eq!(
        daemon.log_count("the channel's meta changed behind Sluice"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_redis_user_that_may_not_run_transactions() {
    let env = Env::start("mode = \"trigger\"");
    connect_as(&env, "limited", "-multi");
    let out = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("redis "))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains("'multi'"),
        "{report}"
    );
}

/// `check` warns (and passes) when the Redis user may not close a connection given up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_a_redis_user_without_client_kill() {
    let env = Env::start("mode = \"trigger\"");
    let warning = |env: &Env| {
        let out = env.sluice(&["check"]);
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{report}");
        report
            .lines()
            .find(|l| l.contains("CLIENT KILL"))
            .map(str::to_string)
    };
    assert_eq!(warning(&env), None, "the default user may");
    connect_as(&env, "nokill", "-client|kill");
    let line = warning(&env).unwrap_or_default();
    assert!(
        line.starts_with("WARN") && line.contains("+client|kill"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_meta_redis_cannot_read_dead_letters_that_channel_only() {
    let env = Env::start("mode = \"trigger\"");
    let port = env.redis.port();
    let meta = "sluice:meta:{crm:tenant-0:credit-configs}";
    assert!(redis_command(port, &["SET", meta, "not a hash"]).starts_with("+OK"));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::insert(&env, 0, 3); // tenant-0 .. tenant-3
    let msgs = sub.wait_for(3, WAIT, || daemon.log()).await;
    assert!(msgs
        .iter()
        .all(|m| m.channel != "crm:tenant-0:credit-configs"));
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    let row = env.sql("SELECT reason || '|' || channel || '|' || error FROM sluice.dead_letter");
    assert!(
        row.starts_with(
            "publish_rejected|crm:tenant-0:credit-configs|reading the channel meta: WRONGTYPE"
        ),
        "{row}"
    );
}

/// Points the config at Redis through a new [`Proxy`], as `user` (a `user:pw@` prefix for the
/// URL, or ""), with a 1 s command timeout.
fn via_proxy(env: &Env, user: &str) -> Proxy {
    let proxy = Proxy::start(env.redis.port()).unwrap();
    env.set_redis_timeout("1s");
    let text = std::fs::read_to_string(&env.config).unwrap();
    let direct = format!("redis://127.0.0.1:{}\"", env.redis.port());
    let proxied = format!("redis://{user}127.0.0.1:{}\"", proxy.port());
    std::fs::write(&env.config, text.replace(&direct, &proxied)).unwrap();
    proxy
}

/// Runs a channel through a batch given up on while its bytes were held on a broken path
/// (delivered once the path heals, as TCP retransmits them), with Redis as `user` (a
/// `user:pw@` prefix for the URL, or ""): seq 1, then seq 2 held and sent again, seq 3, the
/// path heals, seq 4. Returns the daemon and the channel's epoch before the hold.
async fn through_a_held_batch(env: &Env, user: &str) -> (common::Daemon, Option<String>) {
    let proxy = via_proxy(env, user);
    let daemon = env.daemon();
    let entries = async || meta_and_history(env, HELD).await.1.len();
    common::insert(env, 5, 5); // tenant-0: seq 1
    wait_until!(WAIT, async || entries().await == 1, || daemon.log()).await;
    let (epoch, _) = meta_and_history(env, HELD).await;
    proxy.hold(true);
    common::insert(env, 10, 10); // its batch goes out on the held connection
    const RESUMED: &str = "Redis is reachable again; publishing resumed";
    wait_until!(WAIT, || daemon.log_count(RESUMED) == 1, || daemon.log()).await;
    wait_until!(WAIT, async || entries().await == 2, || daemon.log()).await;
    common::insert(env, 15, 15); // seq 3, past what the held batch wrote
    wait_until!(WAIT, async || entries().await == 3, || daemon.log()).await;
    proxy.hold(false); // the path heals: the held batch reaches Redis now
    common::insert(env, 20, 20);
    let published = || daemon.log_count("batch delivered") >= 4;
    wait_until!(WAIT, published, || daemon.log()).await;
    (daemon, epoch)
}

const HELD: &str = "crm:tenant-0:credit-configs";

/// The held batch must never run after its retry: its transaction would set the channel's
/// meta back, and the next batch would find it changed and start a new epoch. Sluice closes
/// the connection it gave up on (`CLIENT KILL ID`) before it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_on_a_broken_path_never_runs_after_a_later_try() {
    let env = Env::start("mode = \"trigger\"");
    let (daemon, epoch) = through_a_held_batch(&env, "").await;
    let (now, ids) = meta_and_history(&env, HELD).await;
    assert_eq!(now, epoch, "the same epoch\n{}", daemon.log());
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0"], "{}", daemon.log());
    assert_eq!(
        daemon.log_count("the channel's meta changed behind Sluice"),
        0,
        "{}",
        daemon.log()
    );
}

/// A Redis user that may not run `CLIENT KILL` is told so once, and Sluice goes on unfenced:
/// the late batch sets the meta back, and the next batch starts a new epoch holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_kill_the_daemon_warns_once_and_goes_on() {
    let env = Env::start("mode = \"trigger\"");
    redis_user(&env, "nokill", "-client|kill");
    let (daemon, epoch) = through_a_held_batch(&env, "nokill:pw@").await;
    assert_eq!(
        daemon.log_count("cannot close the Redis connection given up on"),
        1,
        "{}",
        daemon.log()
    );
    let (now, ids) = meta_and_history(&env, HELD).await;
    assert_ne!(now, epoch, "unfenced, the late batch forced a new epoch");
    assert_eq!(ids, ["1-0"], "the new epoch holds the last batch");
}

/// The connection given up on is closed by its id and its address together: a Redis restarted
/// meanwhile numbers its clients from 1 again, and the other clients that took the old ids
/// must keep their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_spares_a_client_that_took_the_old_id_after_a_restart() {
    use std::io::{BufRead, BufReader, Write};
    let mut env = Env::start("mode = \"trigger\"");
    let proxy = via_proxy(&env, "");
    let daemon = env.daemon();
    common::insert(&env, 5, 5);
    let delivered = || daemon.log_count("batch delivered");
    wait_until!(WAIT, || delivered() >= 1, || daemon.log()).await;
    proxy.blackhole(true);
    common::insert(&env, 10, 10); // given up on: its connection is to be closed
    const RETRY: &str = "Redis still unavailable; publish retry scheduled";
    wait_until!(WAIT, || daemon.log_count(RETRY) >= 1, || daemon.log()).await;
    env.redis.restart().unwrap();
    // forty clients take ids 1..=40 of the new Redis, the given-up connection's among them
    let mut others: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", env.redis.port())).unwrap())
        .collect();
    proxy.blackhole(false);
    wait_until!(WAIT, || delivered() >= 2, || daemon.log()).await;
    for (i, other) in others.iter_mut().enumerate() {
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        let alive = other.write_all(b"PING\r\n").is_ok()
            && BufReader::new(&*other).read_line(&mut line).is_ok();
        assert_eq!(line, "+PONG\r\n", "client {} (alive: {alive})", i + 1);
    }
}
