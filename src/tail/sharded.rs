//! `sluice tail` on a Redis Cluster: sharded pub/sub has no pattern subscription, so the
//! channels are found by their `sluice:meta:{<ch>}` keys (every master scanned at start and
//! every [`DISCOVER_EVERY`]), and each is `SSUBSCRIBE`d on the master of its slot.
//!
//! A slot that moves ends its channels' subscriptions with a `sunsubscribe` push; a master
//! that fails closes the connection. Either way every subscription is made again where the
//! slots are now, and each channel prints what it missed from its history first, so nothing
//! is lost across a reshard or a failover. A channel found after the start prints its history
//! from the beginning.

use std::collections::BTreeSet;
use std::time::Duration;

use fred::prelude::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{catch_up, print_in_order, Output, Seen};
use crate::publish::{Publisher, Push};

/// How often the masters are scanned for new channels.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Why a round of subscriptions ended.
enum Ended {
    Stop,
    /// Subscribe again (a slot moved, a node failed, new channels).
    Regroup(String),
}

pub async fn tail(
    publisher: &Publisher,
    reader: &Client,
    pattern: &str,
    output: Output,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let mut seen = Seen::new();
    let mut channels = discover(reader, pattern).await?;
    for channel in &channels {
        if let Some(at) = position(reader, channel).await {
            seen.insert(channel.clone(), at);
        }
    }
    eprintln!(
        "listening on {pattern}: {} channels on the cluster's shards, new ones found every {}s (Ctrl-C to stop)",
        channels.len(),
        DISCOVER_EVERY.as_secs()
    );
    tokio::pin!(stop);
    loop {
        let round = subscribed(publisher, reader, pattern, output, &mut seen, &mut channels);
        let ended = tokio::select! {
            _ = &mut stop => Ended::Stop,
            ended = round => ended,
        };
        match ended {
            Ended::Stop => return Ok(()),
            Ended::Regroup(why) if why.is_empty() => {}
            Ended::Regroup(why) => {
                eprintln!("tail: {why}; subscribing again where the slots are now");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Subscribes every known channel on its master, catches each up from history, then prints
/// live messages until something calls for a regroup.
async fn subscribed(
    publisher: &Publisher,
    reader: &Client,
    pattern: &str,
    output: Output,
    seen: &mut Seen,
    channels: &mut BTreeSet<String>,
) -> Ended {
    let (tx, mut rx) = mpsc::channel::<Result<Push, String>>(4096);
    let mut tasks = JoinSet::new();
    let groups = match publisher.owners(channels.iter()).await {
        Ok(groups) => groups,
        Err(e) => return Ended::Regroup(e.to_string()),
    };
    for (node, list) in groups {
        let mut sub = match publisher.ssubscribe(&node, &list).await {
            Ok(sub) => sub,
            Err(e) => return Ended::Regroup(format!("{node}: {e}")),
        };
        let tx = tx.clone();
        tasks.spawn(async move {
            loop {
                let push = sub.next().await.map_err(|e| format!("{}: {e}", sub.node));
                let failed = push.is_err();
                if tx.send(push).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    for (channel, (_, last)) in seen.iter_mut() {
        if let Some(printed) = catch_up(reader, channel, *last, None, output).await {
            *last = printed;
        }
    }
    let mut tick = tokio::time::interval(DISCOVER_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            push = rx.recv() => match push {
                Some(Ok(Push::Message { channel, payload })) => {
                    let payload = String::from_utf8_lossy(&payload);
                    print_in_order(reader, seen, &channel, &payload, output).await;
                }
                Some(Ok(Push::Unsubscribed(channel))) => {
                    return Ended::Regroup(format!("Redis ended the subscription of {channel} (its slot moved)"))
                }
                Some(Ok(Push::Other)) => {}
                Some(Ok(Push::Refused(e))) => return Ended::Regroup(format!("Redis refused a subscription: {e}")),
                Some(Err(e)) => return Ended::Regroup(e),
                None => return Ended::Regroup("every subscription ended".into()),
            },
            _ = tick.tick() => {
                if let Ok(found) = discover(reader, pattern).await {
                    let new: Vec<String> = found.difference(channels).cloned().collect();
                    if !new.is_empty() {
                        for channel in new {
                            // new since the start: print it from its first message
                            let epoch = position(reader, &channel).await.map(|(e, _)| e).unwrap_or_default();
                            seen.insert(channel.clone(), (epoch, 0));
                            channels.insert(channel);
                        }
                        return Ended::Regroup(String::new());
                    }
                }
            }
        }
    }
}

/// The channels whose meta key matches `pattern`, on every master.
async fn discover(reader: &Client, pattern: &str) -> Result<BTreeSet<String>, String> {
    let mut keys =
        reader.scan_cluster_buffered(format!("sluice:meta:{{{pattern}}}"), Some(1000), None);
    let mut out = BTreeSet::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| format!("cannot scan the cluster for channels: {e}"))?;
        let name = key.as_str().unwrap_or_default();
        if let Some(channel) = name
            .strip_prefix("sluice:meta:{")
            .and_then(|k| k.strip_suffix('}'))
        {
            out.insert(channel.to_string());
        }
    }
    Ok(out)
}

/// A channel's epoch and last seq, from its meta.
async fn position(reader: &Client, channel: &str) -> Option<(String, u64)> {
    let key = format!("sluice:meta:{{{channel}}}");
    let (epoch, seq): (Option<String>, Option<u64>) =
        reader.hmget(key, vec!["epoch", "seq"]).await.ok()?;
    Some((epoch?, seq.unwrap_or(0)))
}
