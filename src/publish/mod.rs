//! Publishing events to Redis: one connection, one write per batch, no round trip per event.
//!
//! A batch is encoded as one pipeline of `PUBLISH channel payload` commands, each followed by a
//! `DEL` of the event's cache keys (so invalidation rides the same round trip), written to the
//! socket at once; the replies are then read in order. Each tells an event's fate: delivered
//! (with its receiver count) or rejected by Redis. Redis being unreachable or slow is not an
//! event's fault: the whole batch fails with [`PublishError::Unavailable`], the connection is
//! dropped, and the caller retries the batch, so nothing is marked done meanwhile.
//!
//! A Redis demoted to a replica (`REPLICAOF`) still accepts `PUBLISH`, but only its own
//! subscribers hear it, and it refuses the `DEL`s of cache keys with `READONLY`. So every
//! connection asks `ROLE` when it opens and again at the head of every batch (in the same
//! write, no extra round trip): a replica makes the batch [`Unavailable::Replica`], held and
//! retried like an outage until a primary answers. A `READONLY` reply counts the same way,
//! never as the event's rejection.
//!
//! Why not fred for this path: fred 10 flushes the socket after every command of a pipeline
//! (its router sees no queued command behind each one), which measured one `writev` and one
//! wake-up per event, 200,004 of them for 200,000 events. fred still serves `tail` and the
//! URL parsing.
//!
//! `rediss://` is TLS on rustls for both (see [`crate::tls`]): the certificate must chain to
//! `redis.ca_file`, or to the system's trust store without one, and name the URL's host.
//! There is no switch to skip that check: a self-signed server is trusted by naming its CA.

mod cluster;
mod conn;
mod fence;
mod recoverable;
#[doc(hidden)] // public for benches/resp_encode only
pub mod resp;
mod subscribe;
mod topology;

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy, ServerConfig, TlsConnector};
use rustls::ClientConfig;
use std::sync::Arc;
use tokio::sync::Mutex;

use crate::config::{RedisConfig, RedisMode};
use crate::route::Event;
use crate::tls;
use conn::{primary, Conn, Wait};
pub use recoverable::History;
pub use subscribe::{Push, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid redis.url: {0}")]
    BadUrl(fred::error::Error),
    #[error("redis.url: give one server (redis://host:port), or a cluster's seed nodes (redis+cluster://host:port,host:port)")]
    NotSingleServer,
    #[error("this needs a Redis Cluster (redis+cluster://)")]
    NotCluster,
    #[error("redis.url: a Redis Cluster has only database 0; remove the /{0} from the URL")]
    ClusterDatabase(u8),
    #[error("redis TLS settings: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("Redis is unavailable: {0}")]
    Unavailable(#[from] Unavailable),
}

/// Why Redis cannot take a batch now: the batch is held and retried.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("{addr}: {text}")]
    Io { addr: String, text: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis closed the connection")]
    Closed,
    #[error("Redis answered out of protocol: {0}")]
    Protocol(#[from] resp::ProtocolError),
    #[error("Redis refused the connection setup: {0}")]
    SetupRefused(String),
    #[error("it is a replica (read-only); waiting for a primary")]
    Replica,
    #[error("it refused a write as a replica: {0}")]
    ReadOnly(String),
    #[error("shard {node} (slots {slots}): {source}")]
    Shard {
        node: String,
        slots: String,
        source: Box<Unavailable>,
    },
    #[error("no seed node answered CLUSTER SLOTS: {0}")]
    NoTopology(String),
    #[error("the cluster is down or incomplete: {0}")]
    ClusterDown(String),
    #[error("the cluster kept redirecting the batch (slots moving); retrying")]
    Unsettled,
    #[error("{got} of the {want} replicas redis.wait_replicas asks for confirmed the batch")]
    NotReplicated { got: i64, want: u32 },
}

/// What Redis said about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged; the number of subscribers that received it.
    Sent { receivers: i64 },
    /// Redis answered with an error for this event.
    Rejected(String),
    /// Redis already had it (published before a crash or a retry): not published again.
    Duplicate,
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

impl Target {
    /// The same credentials and TLS settings, another node.
    fn at(&self, (host, port): &topology::Addr) -> Target {
        Target {
            host: host.clone(),
            port: *port,
            ..self.clone()
        }
    }
}

/// One Redis server, or a Redis Cluster's masters.
enum Backend {
    Single(Target, Mutex<Single>),
    Cluster(cluster::Cluster),
}

/// A single server's connection, and what a new one must close first (see [`fence`]).
#[derive(Default)]
struct Single {
    conn: Option<Conn>,
    fences: fence::Fences<()>,
}

/// The Redis side of the daemon.
pub struct Publisher {
    backend: Backend,
    timeout: Duration,
    /// `redis.wait_replicas`: `WAIT` for this many replicas after each batch.
    wait: Option<Wait>,
    /// The daemon's recoverable channels (see [`recoverable`]); `None` for the operator's
    /// replays, which publish plainly and take no `seq`.
    history: Option<History>,
}

impl Publisher {
    /// Parses the URL; connects lazily, so the daemon can start (and hold changes) while Redis
    /// is down.
    pub fn new(config: &RedisConfig) -> Result<Publisher, PublishError> {
        let (parsed, tls) = parse_url(config)?;
        let seeds: Vec<topology::Addr> = match &parsed.server {
            ServerConfig::Centralized { server } => vec![(server.host.to_string(), server.port)],
            ServerConfig::Clustered { hosts, .. } => {
                hosts.iter().map(|s| (s.host.to_string(), s.port)).collect()
            }
            _ => return Err(PublishError::NotSingleServer),
        };
        let target = Target {
            host: seeds[0].0.clone(),
            port: seeds[0].1,
            username: parsed.username.clone(),
            password: parsed.password.clone(),
            database: parsed.database,
            tls,
        };
        let backend = if matches!(parsed.server, ServerConfig::Clustered { .. }) {
            if let Some(db) = parsed.database.filter(|&d| d != 0) {
                return Err(PublishError::ClusterDatabase(db));
            }
            Backend::Cluster(cluster::Cluster::new(seeds, target))
        } else {
            Backend::Single(target, Mutex::new(Single::default()))
        };
        Ok(Publisher {
            backend,
            timeout: config.command_timeout,
            wait: Wait::new(config.wait_replicas, config.command_timeout),
            history: None,
        })
    }

    /// Whether this publishes to a Redis Cluster (with `SPUBLISH`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// Publishes on recoverable channels: numbered, kept in history, exactly once.
    pub fn recoverable(mut self, history: History) -> Publisher {
        self.history = Some(history);
        self
    }

    /// Connects now (TLS, AUTH, SELECT, PING), reporting why not: for `check` and `tail`.
    pub async fn connect(&self) -> Result<(), PublishError> {
        match &self.backend {
            Backend::Single(..) => self.connection().await.map(drop),
            Backend::Cluster(c) => {
                let open = c.connect_all();
                tokio::time::timeout(self.timeout, open)
                    .await
                    .map_err(|_| Unavailable::Timeout(self.timeout))??;
                Ok(())
            }
        }
    }

    /// Whether the Redis user may close a connection given up on (the `fence` module), on every
    /// server [`Publisher::connect`] reached: for `check`.
    pub async fn may_fence(&self) -> Result<bool, PublishError> {
        match &self.backend {
            Backend::Single(..) => {
                let mut guard = self.connection().await?;
                let conn = guard.conn.as_mut().expect("connected above");
                Ok(conn.may_fence().await?)
            }
            Backend::Cluster(c) => Ok(c.may_fence().await?),
        }
    }

    /// A cluster's masters and the slots each serves (`check`); empty for a single server.
    pub async fn shards(&self) -> Result<Vec<(String, String)>, PublishError> {
        match &self.backend {
            Backend::Single(..) => Ok(Vec::new()),
            Backend::Cluster(c) => Ok(c.shards().await?),
        }
    }

    /// Tries to connect for up to `timeout`; the last failure if Redis is still unreachable
    /// (a TLS certificate problem, say).
    pub async fn connect_within(&self, timeout: Duration) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let failure = match self.connect().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + Duration::from_millis(100) > deadline {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connection(&self) -> Result<tokio::sync::MutexGuard<'_, Single>, PublishError> {
        let Backend::Single(target, single) = &self.backend else {
            unreachable!("a single server's connection")
        };
        let mut guard = single.lock().await;
        if guard.conn.is_none() {
            let fence = guard.fences.to_close(&());
            let open = Conn::open(target, true, self.history.is_some(), fence);
            let conn = tokio::time::timeout(self.timeout, open)
                .await
                .map_err(|_| Unavailable::Timeout(self.timeout))??;
            guard.fences.closed(&());
            guard.conn = Some(conn);
        }
        Ok(guard)
    }

    /// Publishes a batch as one pipeline. `Ok` holds one [`Delivery`] per event, in order.
    /// `origin` names where a re-read of this batch would start (trigger mode's checkpoint;
    /// see [`recoverable`]).
    pub async fn publish(
        &self,
        events: &[Event],
        origin: Option<&str>,
    ) -> Result<Vec<Delivery>, PublishError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Backend::Cluster(c) = &self.backend {
            let trip = c.publish(
                events,
                self.history.as_ref(),
                origin.unwrap_or(""),
                self.wait,
            );
            // bound first: the timed-out trip holds the cluster's lock until it is dropped
            let result = tokio::time::timeout(self.timeout, trip).await;
            return match result {
                Ok(result) => Ok(result?),
                Err(_) => {
                    c.forget().await;
                    Err(Unavailable::Timeout(self.timeout).into())
                }
            };
        }
        let mut guard = self.connection().await?;
        let Single { conn, fences } = &mut *guard;
        let conn = conn.as_mut().expect("connected above");
        fences.sending(&(), conn.me.as_ref());
        let trip = async {
            let deliveries = match &self.history {
                Some(history) => {
                    conn.round_trip_recoverable(events, history, origin.unwrap_or(""))
                        .await?
                }
                None => conn.round_trip(events).await?,
            };
            if let Some(wait) = self.wait {
                wait.replicated(conn).await?;
            }
            Ok(deliveries)
        };
        let result = match tokio::time::timeout(self.timeout, trip).await {
            Ok(result) => result,
            Err(_) => Err(Unavailable::Timeout(self.timeout)),
        };
        match result {
            Ok(_) => guard.fences.answered(&()),
            Err(_) => {
                guard.fences.failed(&());
                guard.conn = None;
            }
        }
        Ok(result?)
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Single(_, single) => single.lock().await.conn = None,
            Backend::Cluster(c) => c.forget().await,
        }
    }
}

/// fred's view of `redis.url`, and the TLS settings for `rediss://`. fred is handed a plain
/// `redis://` URL and our TLS settings, so it never builds a client config of its own.
/// `redis+cluster://host:port,host:port` (or `redis.mode = "cluster"`) names a cluster's
/// seed nodes.
fn parse_url(
    config: &RedisConfig,
) -> Result<(FredConfig, Option<Arc<ClientConfig>>), PublishError> {
    let url = &config.url;
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (tls, cluster_scheme) = match scheme {
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        _ => (false, false),
    };
    let cluster = cluster_scheme || config.mode == RedisMode::Cluster;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let tail_at = hosts.find(['/', '?']).unwrap_or(hosts.len());
    let (hosts, tail) = hosts.split_at(tail_at);
    let hosts: Vec<&str> = hosts.split(',').collect();
    let plain = match scheme {
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            format!("redis://{auth}{}{tail}", hosts[0])
        }
        _ => url.clone(),
    };
    let mut parsed = FredConfig::from_url(&plain).map_err(PublishError::BadUrl)?;
    if cluster {
        let mut seeds = Vec::new();
        for host in &hosts {
            let one =
                FredConfig::from_url(&format!("redis://{host}")).map_err(PublishError::BadUrl)?;
            if let ServerConfig::Centralized { server } = one.server {
                seeds.push((server.host.to_string(), server.port));
            }
        }
        parsed.server = ServerConfig::new_clustered(seeds);
    } else if hosts.len() > 1 {
        return Err(PublishError::NotSingleServer);
    }
    let tls = match tls {
        true => Some(tls::client_config(&config.tls_settings())?),
        false => None,
    };
    Ok((parsed, tls))
}

/// A client that reconnects forever with capped exponential backoff and times commands out.
pub fn build_client(redis: &RedisConfig) -> Result<Client, PublishError> {
    builder(redis)?.build().map_err(PublishError::BadUrl)
}

/// A subscriber that reconnects the same way and subscribes again after each reconnect.
pub fn build_subscriber(
    redis: &RedisConfig,
) -> Result<fred::clients::SubscriberClient, PublishError> {
    builder(redis)?
        .build_subscriber_client()
        .map_err(PublishError::BadUrl)
}

fn builder(redis: &RedisConfig) -> Result<Builder, PublishError> {
    let command_timeout = redis.command_timeout;
    let (mut config, tls) = parse_url(redis)?;
    config.tls = tls.map(|c| TlsConnector::Rustls(c.into()).into());
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|p| p.default_command_timeout = command_timeout)
        .with_connection_config(|c| {
            c.connection_timeout = command_timeout;
            c.internal_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    Ok(builder)
}
