//! `sluice tail [PATTERN]`: subscribes to a channel pattern and prints each event as it
//! arrives, one line per event: `channel payload`.

use std::io::Write;

use fred::prelude::*;

use crate::config::RedisConfig;
use crate::publish::{build_client, Publisher};

/// Prints messages until `stop` resolves.
pub async fn tail(
    config: &RedisConfig,
    pattern: &str,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    // One connection the daemon's way first: a TLS or AUTH problem is then one clear line,
    // where fred would only retry.
    let probe = Publisher::new(config).map_err(|e| e.to_string())?;
    probe.connect().await.map_err(|e| e.to_string())?;
    probe.close().await;
    let client = build_client(config).map_err(|e| e.to_string())?;
    client.update_perf_config(fred::types::config::PerformanceConfig {
        broadcast_channel_capacity: 1 << 14,
        ..client.perf_config()
    });
    client.connect();
    tokio::time::timeout(config.command_timeout, client.wait_for_connect())
        .await
        .map_err(|_| {
            format!(
                "Redis at {} did not answer within {:?}",
                crate::redact::url(&config.url),
                config.command_timeout
            )
        })?
        .map_err(|e| e.to_string())?;
    let mut messages = client.message_rx();
    client
        .psubscribe(pattern)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("listening on {pattern} (Ctrl-C to stop)");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            message = messages.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("tail: skipped {n} events: the terminal could not keep up");
                        continue;
                    }
                    Err(_) => break,
                };
                let payload = message.value.as_str().map(|s| s.to_string()).unwrap_or_default();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{} {}", message.channel, payload);
                let _ = out.flush();
            }
        }
    }
    let _ = client.quit().await;
    Ok(())
}
