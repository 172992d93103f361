//! The operator's recovery commands: look at and clear the dead-letter table, re-publish what a
//! consumer missed, and backfill a table for a new consumer, all while `run` keeps streaming.
//!
//! | command | module | how it reaches Redis |
//! |---|---|---|
//! | `dead-letters list\|show\|purge` | [`dead_letters`] | it does not |
//! | `replay dead-letters` | [`replay_dead`] | publishes itself, then marks the rows resolved |
//! | `replay change-log` | [`replay_log`] | publishes itself, events marked `"replay"` |
//! | `backfill` | [`backfill`] | writes `SNAPSHOT` rows into the stream; `run` publishes them |
//!
//! Re-publishing is paced ([`pace`]): a subscriber whose pub/sub output buffer passes Redis'
//! limit (32 MB by default) is disconnected, and a replay at full pipeline speed gets there.
//! Long commands report progress ([`progress`]) and end with one summary line.

pub mod backfill;
pub mod dead_letters;
pub mod filter;
pub mod pace;
pub mod progress;
pub mod replay_dead;
pub mod replay_log;

use crate::config::Config;
use crate::pg;

/// Connects for an operator command, or says in one sentence why it cannot.
pub async fn connect(config: &Config) -> Result<pg::Conn, String> {
    pg::connect(&config.postgres.url, config.postgres.connect_timeout)
        .await
        .map_err(|e| {
            format!(
                "cannot connect to PostgreSQL at {}: {e}; check postgres.url (or DATABASE_URL)",
                crate::redact::url(&config.postgres.url)
            )
        })
}

/// A publisher for a re-publishing command, connected; or one sentence saying why not.
pub async fn publisher(config: &Config) -> Result<crate::publish::Publisher, String> {
    let publisher =
        crate::publish::Publisher::new(&config.redis).map_err(|e| format!("redis.url: {e}"))?;
    if let Err(e) = publisher
        .connect_within(std::time::Duration::from_secs(5))
        .await
    {
        return Err(format!(
            "cannot reach Redis at {}: {e}; check redis.url (or REDIS_URL) and that Redis is running",
            crate::redact::url(&config.redis.url)
        ));
    }
    Ok(publisher)
}
