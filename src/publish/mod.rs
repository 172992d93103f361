//! Publishing events to Redis: one connection, one write per batch, no round trip per event.
//!
//! A batch is encoded as one pipeline of `PUBLISH channel payload` commands, each followed by a
//! `DEL` of the event's cache keys (so invalidation rides the same round trip), written to the
//! socket at once; the replies are then read in order. Each tells an event's fate: delivered
//! (with its receiver count) or rejected by Redis. Redis being unreachable or slow is not an
//! event's fault: the whole batch fails with [`PublishError::Unavailable`], the connection is
//! dropped, and the caller retries the batch, so nothing is marked done meanwhile.
//!
//! Why not fred for this path: fred 10 flushes the socket after every command of a pipeline
//! (its router sees no queued command behind each one), which measured one `writev` and one
//! wake-up per event, 200,004 of them for 200,000 events. fred still serves `tail` and the
//! URL parsing.
//!
//! `rediss://` is TLS on rustls for both (see [`crate::tls`]): the certificate must chain to
//! `redis.ca_file`, or to the system's trust store without one, and name the URL's host.
//! There is no switch to skip that check: a self-signed server is trusted by naming its CA.

mod resp;

use std::time::Duration;

use bytes::BytesMut;
use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy, ServerConfig, TlsConnector};
use rustls::ClientConfig;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::config::RedisConfig;
use crate::route::Event;
use crate::tls::{self, Stream, Verify};
use resp::Reply;

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

/// Where and how to connect.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    database: Option<u8>,
    /// `rediss://`: the TLS settings.
    tls: Option<Arc<ClientConfig>>,
}

/// The Redis side of the daemon.
pub struct Publisher {
    target: Target,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    stream: Stream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Publisher {
    /// Parses the URL; connects lazily, so the daemon can start (and hold changes) while Redis
    /// is down.
    pub fn new(config: &RedisConfig) -> Result<Publisher, PublishError> {
        let (parsed, tls) = parse_url(config)?;
        let ServerConfig::Centralized { server } = &parsed.server else {
            return Err(PublishError::BadUrl(
                "only a single Redis server (redis://host:port) is supported".into(),
            ));
        };
        let target = Target {
            host: server.host.to_string(),
            port: server.port,
            username: parsed.username.clone(),
            password: parsed.password.clone(),
            database: parsed.database,
            tls,
        };
        Ok(Publisher {
            target,
            timeout: config.command_timeout,
            conn: Mutex::new(None),
        })
    }

    /// Connects now (TLS, AUTH, SELECT, PING), reporting why not: for `check` and `tail`.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.connection().await.map(drop)
    }

    /// Tries to connect for up to `timeout`; `false` if Redis is still unreachable.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.connect_within(timeout).await.is_ok()
    }

    /// Tries to connect for up to `timeout`; the last failure if Redis is still unreachable
    /// (a TLS certificate problem, say).
    pub async fn connect_within(&self, timeout: Duration) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let failure = match self.connection().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + Duration::from_millis(100) > deadline {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connection(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Conn>>, PublishError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let conn = tokio::time::timeout(self.timeout, Conn::open(&self.target))
                .await
                .map_err(|_| {
                    PublishError::Unavailable(format!("no connection within {:?}", self.timeout))
                })??;
            *guard = Some(conn);
        }
        Ok(guard)
    }

    /// Publishes a batch as one pipeline. `Ok` holds one [`Delivery`] per event, in order.
    pub async fn publish(&self, events: &[Event]) -> Result<Vec<Delivery>, PublishError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut guard = self.connection().await?;
        let conn = guard.as_mut().expect("connected above");
        match tokio::time::timeout(self.timeout, conn.round_trip(events)).await {
            Ok(Ok(deliveries)) => Ok(deliveries),
            Ok(Err(e)) => {
                *guard = None;
                Err(PublishError::Unavailable(e))
            }
            Err(_) => {
                *guard = None;
                Err(PublishError::Unavailable(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    pub async fn close(&self) {
        *self.conn.lock().await = None;
    }
}

impl Conn {
    async fn open(t: &Target) -> Result<Conn, PublishError> {
        let unavailable = |e: std::io::Error| {
            PublishError::Unavailable(format!("{}:{}: {}", t.host, t.port, io_text(&e)))
        };
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(unavailable)?;
        tcp.set_nodelay(true).map_err(unavailable)?;
        let stream: Stream = match &t.tls {
            Some(config) => tls::handshake(config.clone(), &t.host, tcp)
                .await
                .map_err(unavailable)?,
            None => Box::new(tcp),
        };
        let mut conn = Conn {
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            write: Vec::with_capacity(64 * 1024),
        };
        let mut setup: Vec<Vec<&[u8]>> = Vec::new();
        match (&t.username, &t.password) {
            (Some(user), Some(pass)) => setup.push(vec![b"AUTH", user.as_bytes(), pass.as_bytes()]),
            (None, Some(pass)) => setup.push(vec![b"AUTH", pass.as_bytes()]),
            _ => {}
        }
        let db = t.database.map(|d| d.to_string());
        if let Some(db) = &db {
            setup.push(vec![b"SELECT", db.as_bytes()]);
        }
        setup.push(vec![b"PING"]);
        for args in &setup {
            resp::command(&mut conn.write, args);
        }
        for reply in conn
            .exchange(setup.len())
            .await
            .map_err(PublishError::Unavailable)?
        {
            if let Reply::Error(e) = reply {
                return Err(PublishError::Unavailable(format!(
                    "Redis refused the connection setup: {e}"
                )));
            }
        }
        Ok(conn)
    }

    /// Encodes the batch, writes it at once, and reads every reply.
    async fn round_trip(&mut self, events: &[Event]) -> Result<Vec<Delivery>, String> {
        let mut expected = 0;
        for e in events {
            resp::command(
                &mut self.write,
                &[b"PUBLISH", e.channel.as_bytes(), &e.payload],
            );
            expected += 1;
            if !e.invalidate.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"DEL"];
                args.extend(e.invalidate.iter().map(|k| k.as_bytes()));
                resp::command(&mut self.write, &args);
                expected += 1;
            }
        }
        let mut replies = self.exchange(expected).await?.into_iter();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let published = replies.next().ok_or("short reply")?;
            let deleted = if e.invalidate.is_empty() {
                None
            } else {
                replies.next()
            };
            out.push(delivery(published, deleted));
        }
        Ok(out)
    }

    /// Writes what is buffered and reads `n` replies.
    async fn exchange(&mut self, n: usize) -> Result<Vec<Reply>, String> {
        let written = self.stream.write_all(&self.write).await;
        self.write.clear();
        written.map_err(|e| io_text(&e))?;
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            match resp::take_reply(&mut self.read)? {
                Some(r) => replies.push(r),
                None => {
                    if self
                        .stream
                        .read_buf(&mut self.read)
                        .await
                        .map_err(|e| io_text(&e))?
                        == 0
                    {
                        return Err("Redis closed the connection".into());
                    }
                }
            }
        }
        Ok(replies)
    }
}

/// An I/O failure in one line; a TLS one (a client certificate the server wants, say) with its fix.
fn io_text(e: &std::io::Error) -> String {
    tls::explain(e, tls::Server::Redis).unwrap_or_else(|| e.to_string())
}

/// One event's replies: an error reply rejects it.
fn delivery(published: Reply, deleted: Option<Reply>) -> Delivery {
    match (published, deleted) {
        (Reply::Error(e), _) => Delivery::Rejected(format!("PUBLISH: {e}")),
        (_, Some(Reply::Error(e))) => Delivery::Rejected(format!("DEL of cache keys: {e}")),
        (Reply::Integer(receivers), _) => Delivery::Sent { receivers },
        _ => Delivery::Sent { receivers: 0 },
    }
}

/// fred's view of `redis.url`, and the TLS settings for `rediss://`. fred is handed a plain
/// `redis://` URL and our TLS settings, so it never builds a client config of its own.
fn parse_url(
    config: &RedisConfig,
) -> Result<(FredConfig, Option<Arc<ClientConfig>>), PublishError> {
    let plain = config
        .url
        .strip_prefix("rediss://")
        .map(|rest| format!("redis://{rest}"));
    let parsed = FredConfig::from_url(plain.as_deref().unwrap_or(&config.url))
        .map_err(|e| PublishError::BadUrl(e.to_string()))?;
    let tls = match plain {
        Some(_) => Some(
            tls::client_config(&tls_settings(config))
                .map_err(|e| PublishError::BadUrl(e.to_string()))?,
        ),
        None => None,
    };
    Ok((parsed, tls))
}

/// The TLS files `[redis]` names (used for `rediss://`).
pub fn tls_settings(config: &RedisConfig) -> tls::Settings<'_> {
    let identity = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => Some(tls::Identity {
            cert,
            cert_key: "redis.cert_file",
            key,
            key_key: "redis.key_file",
        }),
        _ => None,
    };
    tls::Settings {
        verify: Verify::Full,
        ca_file: config.ca_file.as_deref(),
        ca_key: "redis.ca_file",
        identity,
    }
}

/// A client that reconnects forever with capped exponential backoff and times commands out.
pub fn build_client(redis: &RedisConfig) -> Result<Client, PublishError> {
    let command_timeout = redis.command_timeout;
    let (mut config, tls) = parse_url(redis)?;
    config.tls = tls.map(|c| TlsConnector::Rustls(c.into()).into());
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
