//! `sluice tail [PATTERN]`: subscribes to a channel pattern and prints each event as it
//! arrives, one line per event: `channel payload`.
//!
//! It follows each channel's `seq`: a jump means messages were missed (a slow terminal, a
//! reconnect), and they are read back from the channel's history and printed in order before
//! the live one; a gap the history no longer covers, and a new epoch, are reported on stderr.
//! After Redis restarts, the subscription is made again. On a Redis Cluster, see [`sharded`].

mod sharded;

use std::collections::HashMap;
use std::io::Write;

use fred::prelude::*;

use crate::config::RedisConfig;
use crate::publish::{build_client, build_subscriber, Publisher};

/// How each event is printed: `channel payload`, or the payload alone (`--json`, one JSON
/// object per line, for `jq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// Where a channel stands: its epoch and the last seq printed.
type Seen = HashMap<String, (String, u64)>;

#[derive(serde::Deserialize)]
struct Numbered {
    seq: Option<u64>,
    epoch: Option<String>,
}

/// Prints messages until `stop` resolves.
pub async fn tail(
    config: &RedisConfig,
    pattern: &str,
    output: Output,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // One connection the daemon's way first: a TLS or AUTH problem is then one clear line,
    // where fred would only retry.
    let probe = Publisher::new(config).map_err(|e| e.to_string())?;
    probe.connect().await.map_err(|e| e.to_string())?;
    if probe.is_cluster() {
        let reader = build_client(config).map_err(|e| e.to_string())?;
        connect(&reader, config).await?;
        let result = sharded::tail(&probe, &reader, pattern, output, stop).await;
        let _ = reader.quit().await;
        return result;
    }
    probe.close().await;
    let subscriber = build_subscriber(config).map_err(|e| e.to_string())?;
    subscriber.update_perf_config(fred::types::config::PerformanceConfig {
        broadcast_channel_capacity: 1 << 14,
        ..subscriber.perf_config()
    });
    let reader = build_client(config).map_err(|e| e.to_string())?;
    connect(&subscriber, config).await?;
    connect(&reader, config).await?;
    let resubscribe = subscriber.manage_subscriptions();
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    subscriber
        .psubscribe(pattern)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("listening on {pattern} (Ctrl-C to stop)");
    let mut seen = Seen::new();
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => break,
            message = messages.recv() => match message {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("tail: the terminal fell {n} events behind; the next event of each channel fetches them from history");
                    continue;
                }
                Err(_) => break,
            },
            Ok(_) = reconnects.recv() => {
                // What was published while the subscription was down is in the histories.
                for (channel, (_, last)) in seen.iter_mut() {
                    if let Some(printed) = catch_up(&reader, channel, *last, None, output).await {
                        *last = printed;
                    }
                }
                continue;
            }
        };
        let payload = message
            .value
            .as_str()
            .map(|s| s.to_string())
            .unwrap_or_default();
        print_in_order(
            &reader,
            &mut seen,
            &message.channel.to_string(),
            &payload,
            output,
        )
        .await;
    }
    resubscribe.abort();
    let _ = subscriber.quit().await;
    let _ = reader.quit().await;
    Ok(())
}

async fn connect(client: &impl ClientLike, config: &RedisConfig) -> Result<(), String> {
    client.connect();
    let answered = tokio::time::timeout(config.command_timeout, client.wait_for_connect()).await;
    answered
        .map_err(|_| {
            format!(
                "Redis at {} did not answer within {:?}",
                crate::redact::url(&config.url),
                config.command_timeout
            )
        })?
        .map_err(|e| e.to_string())
}

/// Prints `payload`, first fetching from history what the channel's `seq` says was missed.
async fn print_in_order(
    reader: &Client,
    seen: &mut Seen,
    channel: &str,
    payload: &str,
    output: Output,
) {
    let Ok(Numbered {
        seq: Some(seq),
        epoch: Some(epoch),
    }) = serde_json::from_str::<Numbered>(payload)
    else {
        return print(output, channel, payload); // a replay, or a publisher without numbers
    };
    match seen.get(channel) {
        Some((known, last)) if *known == epoch && seq <= *last => return, // printed already
        Some((known, last)) if *known == epoch && seq > last + 1 => {
            catch_up(reader, channel, *last, Some(seq), output).await;
        }
        Some((known, _)) if *known != epoch => {
            eprintln!("tail: {channel}: a new epoch {epoch} (Redis lost the channel's state); numbering starts again")
        }
        _ => {}
    }
    seen.insert(channel.to_string(), (epoch, seq));
    print(output, channel, payload);
}

/// Prints the history entries after `last` (and before `upto`, when given); the last seq
/// printed, if any.
async fn catch_up(
    reader: &Client,
    channel: &str,
    last: u64,
    upto: Option<u64>,
    output: Output,
) -> Option<u64> {
    let key = format!("sluice:history:{{{channel}}}");
    let end = upto.map_or("+".to_string(), |s| format!("{}-0", s - 1));
    let entries: Result<Vec<(String, HashMap<String, String>)>, _> = reader
        .xrange(key, format!("{}-0", last + 1), end, None)
        .await;
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("tail: {channel}: cannot read the history: {e}");
            return None;
        }
    };
    let seq_of = |id: &str| id.split('-').next()?.parse::<u64>().ok();
    if let Some(upto) = upto {
        if entries.first().and_then(|(id, _)| seq_of(id)) != Some(last + 1) {
            eprintln!(
                "tail: {channel}: seq {} to {} are no longer in the history; resync needed",
                last + 1,
                upto - 1
            );
        }
    }
    if !entries.is_empty() {
        eprintln!(
            "tail: {channel}: fetched {} missed events from history",
            entries.len()
        );
    }
    let printed = entries.last().and_then(|(id, _)| seq_of(id));
    for (_, mut fields) in entries {
        if let Some(event) = fields.remove("event") {
            print(output, channel, &event);
        }
    }
    printed
}

fn print(output: Output, channel: &str, payload: &str) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Text => writeln!(out, "{channel} {payload}"),
        Output::Json => writeln!(out, "{payload}"),
    };
    let _ = out.flush();
}
