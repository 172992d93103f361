//! `sluice tail` as a consumer that recovers by itself: stopped long enough for Redis to cut
//! it off (its pub/sub output buffer limit), it comes back, subscribes again, notices the jump
//! in `seq`, fetches what it missed from the channel's history, and prints every event once,
//! in order.

use std::cell::Cell;
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::tail::Tail;
use crate::common::wait;
use crate::common::{redis_command, wait_until, Env};
use sluice::testkit::Redis;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_cut_off_as_a_slow_consumer_fetches_what_it_missed_from_history() {
    let env = Env::start("mode = \"trigger\"");
    let daemon = env.daemon();
    let tail = Tail::start(&env, &["crm:*"]);
    wait_until!(WAIT, || tail.errors().contains("listening on"), || tail
        .errors())
    .await;
    common::insert(&env, 1, 5);
    wait_until!(WAIT, || tail.count() == 5, || tail.errors()).await;

    // Stopped, the tail reads nothing; past 64 kB queued Redis drops it, as it drops any
    // subscriber that cannot keep up.
    let reply = redis_command(
        env.redis.port(),
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 64kb 64kb 0",
        ],
    );
    assert!(reply.starts_with("+OK"), "{reply}");
    tail.signal("-STOP");
    common::insert(&env, 6, 3000);
    wait_until!(WAIT, || env.pending() == 0, || daemon.log()).await;
    tail.signal("-CONT");
    // Whether the tail missed events depends on when it got back: keep writing until it has
    // printed every one, each new event showing a gap on its channel if there is one.
    let written = Cell::new(3000);
    let printed = || tail.count() >= written.get();
    let all_printed = async || {
        if printed() {
            return true;
        }
        written.set(written.get() + 1);
        let n = written.get() as i64;
        common::insert(&env, n, n);
        wait::within(Duration::from_secs(1), wait::awaitable(printed)).await;
        false
    };
    wait_until!(WAIT, async || all_printed().await, || format!(
        "{} of {} printed\n{}",
        tail.count(),
        written.get(),
        tail.errors()
    ))
    .await;
    let written = written.get();
    for (channel, seqs) in tail.seqs() {
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "{channel}: every event once, in order");
    }
    assert_eq!(tail.count(), written);
    assert!(
        !tail.errors().contains("resync needed"),
        "{}",
        tail.errors()
    );
    assert!(
        tail.errors().contains("missed events from history"),
        "a gap was fetched: {}",
        tail.errors()
    );
}

/// `tail --json`: one event per line, each line a JSON object, nothing else on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_json_prints_one_event_object_per_line() {
    let env = Env::start("mode = \"trigger\"");
    let daemon = env.daemon();
    let tail = Tail::start(&env, &["--json"]);
    wait_until!(WAIT, || tail.errors().contains("listening on"), || tail
        .errors())
    .await;
    common::insert(&env, 1, 3);
    wait_until!(WAIT, || tail.count() == 3, || format!(
        "{}\n{}",
        tail.errors(),
        daemon.log()
    ))
    .await;
    for line in tail.lines().iter() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            (event["seq"].as_u64(), event["operation"].as_str()),
            (Some(1), Some("INSERT")),
            "{line}"
        );
    }
}

/// `sluice tail` with no config file: the Redis URL from REDIS_URL or --redis-url is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_needs_only_a_redis_url_and_no_config_file() {
    let redis = Redis::start().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let bare = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.current_dir(empty.path())
            .env_remove("SLUICE_CONFIG")
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL");
        c
    };
    let from_env = Tail::spawn(
        bare()
            .env("REDIS_URL", redis.url())
            .args(["tail", "--json"]),
    );
    let from_flag = Tail::spawn(bare().args(["tail", "--redis-url", &redis.url(), "a:*"]));
    let from_sluice_env = Tail::spawn(
        bare()
            .env("SLUICE_REDIS_URL", redis.url())
            .args(["tail", "--json"]),
    );
    for tail in [&from_env, &from_flag, &from_sluice_env] {
        wait_until!(WAIT, || tail.errors().contains("listening on"), || tail
            .errors())
        .await;
    }
    let event = r#"{"eventId":"cl:1","app":"a"}"#;
    redis_command(redis.port(), &["PUBLISH", "a:t1:things", event]);
    for tail in [&from_env, &from_flag, &from_sluice_env] {
        wait_until!(WAIT, || tail.count() == 1, || tail.errors()).await;
    }
    assert_eq!(from_env.lines()[0], event);
    assert_eq!(from_sluice_env.lines()[0], event);
    assert_eq!(from_flag.lines()[0], format!("a:t1:things {event}"));

    let out = bare().arg("tail").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no config file") && err.contains("--redis-url"),
        "{err}"
    );
}
