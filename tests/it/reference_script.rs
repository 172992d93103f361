//! `clients/testing/channel.lua`, the channel protocol as one script that the SDKs' cluster
//! tests publish with, leaves in Redis exactly what the daemon's channel transactions leave:
//! the same batches (numbers, a duplicate batch, state writes and removals, trigger-mode ids)
//! go through `Publisher` into one Redis and through the script into another, and every
//! channel's history, state and meta must match byte for byte.

use std::collections::HashMap;
use std::sync::Arc;

use fred::prelude::*;
use sluice::config::{HistoryConfig, RedisConfig};
use sluice::publish::{Delivery, History, Publisher};
use sluice::route::Event;
use sluice::testkit::Redis;

const SCRIPT: &str = include_str!("../../clients/testing/channel.lua");
const ORIGIN: &str = "origin-1";

/// Event `i`: on channel `a` (state kept, records r0..r3, every fifth a removal, and the
/// last change of r0) or `b`.
fn event(i: usize) -> Event {
    let (channel, state) = if i % 3 == 2 {
        ("crm:t2:b", false)
    } else {
        ("crm:t1:a", true)
    };
    let record = format!("r{}", i % 4);
    Event {
        event_id: format!("cl:{i}"),
        channel: channel.into(),
        app: Arc::from("crm"),
        data_type: Arc::from(if state { "a" } else { "b" }),
        table: Arc::from("public.t"),
        tenant: "t1".into(),
        payload: format!(r#"{{"eventId":"cl:{i}","recordId":"{record}","n":{i}}}"#).into_bytes(),
        invalidate: Vec::new(),
        key: i.to_string(),
        record_id: Some(record),
        removes: i % 5 == 4 || i == 28,
        state,
    }
}

async fn client(redis: &Redis) -> Client {
    let config = fred::types::config::Config::from_url(&redis.url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

/// One script call per channel of `batch`, as the daemon sends one transaction.
async fn script(redis: &Client, batch: &[Event], epoch: &str, history: &HistoryConfig) {
    let mut channels: Vec<&str> = batch.iter().map(|e| e.channel.as_str()).collect();
    channels.dedup();
    channels.sort_unstable();
    channels.dedup();
    for ch in channels {
        let run: Vec<&Event> = batch.iter().filter(|e| e.channel == ch).collect();
        let keep = run.iter().any(|e| e.state);
        let mut keys = vec![
            format!("sluice:meta:{{{ch}}}"),
            format!("sluice:history:{{{ch}}}"),
        ];
        if keep {
            keys.push(format!("sluice:state:{{{ch}}}"));
        }
        let mut args: Vec<String> = vec![
            ch.into(),
            epoch.into(),
            history.max_len.to_string(),
            history.ttl.as_millis().to_string(),
            ORIGIN.into(),
            if keep { "1" } else { "0" }.into(),
        ];
        for e in run {
            args.push(e.key.clone());
            args.push(e.record_id.clone().unwrap_or_default());
            args.push(if e.removes { "1" } else { "0" }.into());
            args.push(String::from_utf8(e.payload.clone()).unwrap());
        }
        let mut eval = vec![SCRIPT.to_string(), keys.len().to_string()];
        eval.extend(keys);
        eval.extend(args);
        let _: Value = redis.custom(fred::cmd!("EVAL"), eval).await.unwrap();
    }
}

/// A channel's history (entry id, event), state and meta.
async fn keys_of(
    redis: &Client,
    ch: &str,
) -> (
    Vec<(String, String)>,
    HashMap<String, String>,
    HashMap<String, String>,
) {
    let entries: Vec<(String, HashMap<String, String>)> = redis
        .xrange(format!("sluice:history:{{{ch}}}"), "-", "+", None)
        .await
        .unwrap();
    let history = entries
        .into_iter()
        .map(|(id, mut f)| (id, f.remove("event").unwrap()))
        .collect();
    let state = redis
        .hgetall(format!("sluice:state:{{{ch}}}"))
        .await
        .unwrap();
    let meta = redis
        .hgetall(format!("sluice:meta:{{{ch}}}"))
        .await
        .unwrap();
    (history, state, meta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_script_leaves_what_the_daemon_leaves() {
    let (daemon_side, script_side) = (Redis::start().unwrap(), Redis::start().unwrap());
    let history = HistoryConfig::default();
    let config: RedisConfig = toml::from_str(&format!("url = \"{}\"", daemon_side.url())).unwrap();
    let publisher = Publisher::new(&config)
        .unwrap()
        .recoverable(History::new(&history));
    let events: Vec<Event> = (0..30).map(event).collect();
    // three batches, the second sent twice (a retry: nothing published again)
    let batches = [
        &events[..10],
        &events[10..20],
        &events[10..20],
        &events[20..],
    ];
    for batch in batches {
        let out = publisher.publish(batch, Some(ORIGIN)).await.unwrap();
        assert!(
            out.iter().all(|d| !matches!(d, Delivery::Rejected(_))),
            "{out:?}"
        );
    }
    let (daemon, reference) = (client(&daemon_side).await, client(&script_side).await);
    let epoch: String = daemon
        .hget("sluice:meta:{crm:t1:a}", "epoch")
        .await
        .unwrap();
    for batch in batches {
        script(&reference, batch, &epoch, &history).await;
    }
    for ch in ["crm:t1:a", "crm:t2:b"] {
        let (ours, theirs) = (keys_of(&daemon, ch).await, keys_of(&reference, ch).await);
        assert_eq!(
            ours.0.len(),
            if ch == "crm:t1:a" { 20 } else { 10 },
            "{ch}: each event once"
        );
        assert_eq!(ours, theirs, "{ch}");
    }
}
