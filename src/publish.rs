//! Publishing events to Redis: one client, one pipeline per batch, no round trip per event.
//!
//! A batch is sent as one pipeline of `PUBLISH channel payload` commands, each followed by a
//! `DEL` of the event's cache keys (so invalidation rides the same round trip). The answer tells
//! each event's fate: delivered (with its receiver count) or rejected by Redis. Redis being
//! unreachable or slow is not an event's fault: the whole batch fails with
//! [`PublishError::Unavailable`] and the caller retries it, so nothing is marked done meanwhile.

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy};

use crate::config::RedisConfig;
use crate::route::Event;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid redis.url: {0}")]
    BadUrl(String),
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
}

/// What Redis said about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged; the number of subscribers that received it.
    Sent { receivers: i64 },
    /// Redis answered with an error for this event.
    Rejected(String),
}

/// The Redis side of the daemon.
pub struct Publisher {
    client: Client,
}

impl Publisher {
    /// Builds the client and starts connecting in the background; never waits for Redis, so
    /// the daemon can start (and hold changes) while Redis is down.
    pub fn new(config: &RedisConfig) -> Result<Publisher, PublishError> {
        let client = build_client(&config.url, config.command_timeout)?;
        client.connect();
        Ok(Publisher { client })
    }

    /// Waits up to `timeout` for a connection; `false` if Redis is still unreachable.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.client.wait_for_connect()).await, Ok(Ok(())))
    }

    /// Publishes a batch as one pipeline. `Ok` holds one [`Delivery`] per event, in order.
    pub async fn publish(&self, events: &[Event]) -> Result<Vec<Delivery>, PublishError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for e in events {
            queue(pipeline.publish::<(), _, _>(e.channel.as_str(), e.payload.as_slice()).await)?;
            if !e.invalidate.is_empty() {
                queue(pipeline.del::<(), _>(e.invalidate.clone()).await)?;
            }
        }
        let results: Vec<Result<Value, Error>> = pipeline.try_all().await;
        let mut results = results.into_iter();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let published = results.next().ok_or_else(|| PublishError::Unavailable("short reply".into()))?;
            let deleted = if e.invalidate.is_empty() { None } else { results.next() };
            out.push(delivery(published, deleted)?);
        }
        Ok(out)
    }

    pub async fn close(&self) {
        let _ = self.client.quit().await;
    }
}

fn queue<T>(queued: Result<T, Error>) -> Result<(), PublishError> {
    queued.map(|_| ()).map_err(|e| PublishError::Unavailable(e.to_string()))
}

/// Sorts one event's replies: connection trouble fails the batch, an error reply rejects it.
fn delivery(published: Result<Value, Error>, deleted: Option<Result<Value, Error>>) -> Result<Delivery, PublishError> {
    let receivers = match published {
        Ok(v) => v.as_i64().unwrap_or(0),
        Err(e) if is_unavailable(&e) => return Err(PublishError::Unavailable(e.to_string())),
        Err(e) => return Ok(Delivery::Rejected(format!("PUBLISH: {e}"))),
    };
    match deleted {
        Some(Err(e)) if is_unavailable(&e) => Err(PublishError::Unavailable(e.to_string())),
        Some(Err(e)) => Ok(Delivery::Rejected(format!("DEL of cache keys: {e}"))),
        _ => Ok(Delivery::Sent { receivers }),
    }
}

/// Errors that mean "Redis is not there right now", as opposed to "Redis refused this command".
pub fn is_unavailable(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Protocol
    ) || e.details().starts_with("LOADING")
        || e.details().starts_with("BUSY")
        || e.details().starts_with("MASTERDOWN")
}

/// A client that reconnects forever with capped exponential backoff and times commands out.
pub fn build_client(url: &str, command_timeout: Duration) -> Result<Client, PublishError> {
    let mut config = FredConfig::from_url(url).map_err(|e| PublishError::BadUrl(e.to_string()))?;
    config.fail_fast = false;
    Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = command_timeout)
        .with_connection_config(|c| {
            c.connection_timeout = command_timeout;
            c.internal_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| PublishError::BadUrl(e.to_string()))
}
