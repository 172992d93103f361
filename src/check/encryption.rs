//! `check`: whether each server connection is encrypted and how much of the certificate was
//! verified, because "it connects" says nothing about who answered. Redis is checked through
//! the daemon's own publisher connection, so the check sees exactly what `run` will see.

use std::time::Duration;

use tokio_postgres::Client;

use super::{fail, ok, warn, Finding};
use crate::config::{HistoryConfig, RedisConfig};
use crate::pg;
use crate::publish::{History, PublishError, Publisher};
use crate::tls::postgres::{split, SslMode};
use crate::tls::Verify;

/// What PostgreSQL says about this session's TLS, next to what `sslmode` asked for.
pub async fn postgres(client: &Client, url: &str) -> Finding {
    let Ok((_, tls)) = split(url) else {
        return fail("postgres.url: bad TLS settings");
    };
    let sql = "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let (ssl, version): (bool, String) = match client.query_one(sql, &[]).await {
        Ok(r) => (r.get(0), r.get(1)),
        Err(e) => return fail(format!("postgres TLS state: {}", pg::describe(&e))),
    };
    let mode = tls.mode.as_str();
    if !ssl {
        let why = if tls.mode == SslMode::Disable {
            "sslmode=disable"
        } else {
            "sslmode=prefer, and the server offers no TLS"
        };
        return ok(format!("postgres: plain, not encrypted ({why})"));
    }
    let verified = match tls.verify() {
        Verify::Full => "certificate and host name verified",
        Verify::Chain => "certificate chain verified, host name not checked",
        Verify::Nothing => {
            "certificate not verified; sslmode=verify-full with sslrootcert also proves who answers"
        }
    };
    ok(format!(
        "postgres: TLS {version} (sslmode={mode}: {verified})"
    ))
}

/// Connects the way the daemon does (TLS, AUTH, SELECT, PING) and says how.
/// Redis reachable as a primary, with the rights the daemon needs: connecting as it does
/// queues (and discards) the commands of a channel's transaction, which Redis checks against
/// the user's ACL as it queues them (a single server; see `publish::recoverable::PROBE`).
/// A user that may not close a connection given up on (`CLIENT KILL`) gets a warning.
pub async fn redis(config: &RedisConfig, history: &HistoryConfig) -> Vec<Finding> {
    let url = crate::redact::url(&config.url);
    let publisher = match Publisher::new(config) {
        Ok(p) => p.recoverable(History::new(history)),
        Err(e) => return vec![fail(format!("redis {url}: {e}"))],
    };
    let limit = config.command_timeout + Duration::from_millis(100);
    let answer = tokio::time::timeout(limit, async {
        publisher.connect().await?;
        let shards = publisher.shards().await?;
        Ok::<_, PublishError>((shards, publisher.may_fence().await?))
    })
    .await;
    publisher.close().await;
    let (shards, fence) = match answer {
        Ok(Ok(found)) => found,
        Ok(Err(e)) if e.to_string().contains("TLS ") => return vec![fail(format!("redis {url}: {e}"))],
        Ok(Err(e)) => return vec![fail(format!("redis {url}: {e}; check redis.url (or REDIS_URL) and that Redis runs"))],
        Err(_) => return vec![fail(format!("redis {url}: no answer within {:?}; check redis.url (or REDIS_URL) and that Redis runs", config.command_timeout))],
    };
    let mut out = vec![reachable(config, &url, &shards)];
    if !fence {
        out.push(warn(format!(
            "redis {url}: the user may not run CLIENT KILL, so a connection Sluice gave up on is not closed before it goes on: a batch delayed on a broken network path could run after its retry and start a new epoch; allow the user +client|kill"
        )));
    }
    out
}

/// The Redis line of a reachable server or cluster.
fn reachable(config: &RedisConfig, url: &str, shards: &[(String, String)]) -> Finding {
    if shards.is_empty() {
        return ok(format!(
            "redis {url}: a primary that lets Sluice run its channel transactions, {}",
            redis_transport(config)
        ));
    }
    let list: Vec<String> = shards
        .iter()
        .map(|(node, slots)| format!("{node} slots {slots}"))
        .collect();
    ok(format!(
        "redis cluster {url}: {} masters ({}), all 16384 slots served, cluster_state ok on each, {}",
        shards.len(),
        list.join("; "),
        redis_transport(config)
    ))
}

fn redis_transport(config: &RedisConfig) -> String {
    if !config.url.starts_with("rediss") {
        return "plain, not encrypted (rediss:// would use TLS)".into();
    }
    match &config.ca_file {
        Some(path) => format!(
            "TLS (certificate and host name verified against redis.ca_file {})",
            path.display()
        ),
        None => "TLS (certificate and host name verified against the system's trust store)".into(),
    }
}
