//! The monitor: every couple of seconds, on connections of its own, it asks PostgreSQL how far
//! behind the source is and pings Redis, and writes what it learns into [`crate::health`] and
//! the gauges.
//!
//! Why a task of its own: the work loop learns that a server is gone only when it next talks
//! to it, which may be much later when no change flows, and it may legitimately be blocked
//! (Redis backoff, a standby waiting). `/readyz` must still turn 503 within seconds of either
//! server going away, and back to 200 on recovery; the lag and retention gauges must stay
//! current while nothing is published. Its own connections mean a probe never waits behind a
//! batch, and the stream never waits behind a probe.
//!
//! It also guards the WAL in logical mode: a slot that falls behind makes PostgreSQL keep WAL
//! until the disk fills, or, with `max_slot_wal_keep_size`, until the slot is invalidated and
//! changes are lost for good. Past `source.max_retained_wal` the daemon reports not ready (and
//! logs once); nearing `max_slot_wal_keep_size` it warns once; recovery is logged once. So it
//! does while `synchronized_standby_slots` holds the failover slot back
//! (`source::logical::failover`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, Error as SqlError};

use crate::config::{Config, RedisConfig, SourceMode};
use crate::health::Health;
use crate::pg::{self, Conn};
use crate::publish::Publisher;
use crate::shutdown::sleep_or_shutdown;
use crate::telemetry as m;

/// How often the monitor looks.
const EVERY: Duration = Duration::from_secs(2);
/// The longest one look at a server may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// `sluice_pending_changes` counts up to this many rows, so a large backlog stays cheap to poll.
const PENDING_CAP: i64 = 1_000_000;

const SLOT: &str = "WITH w AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END AS lsn) \
    SELECT pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::int8, pg_wal_lsn_diff(w.lsn, s.restart_lsn)::int8, s.safe_wal_size, \
           pg_size_bytes(current_setting('max_slot_wal_keep_size')) \
    FROM pg_replication_slots s, w WHERE s.slot_name = $1";
const PENDING: &str = "SELECT count(*) FROM (SELECT 1 FROM sluice.pending_changes LIMIT 1000000) p";

/// Runs until `shutdown` turns true.
pub async fn run(config: Config, health: Arc<Health>, mut shutdown: watch::Receiver<bool>) {
    let mut redis = RedisWatch {
        config: config.redis.clone(),
        up: None,
        health: health.clone(),
    };
    redis.config.command_timeout = redis.config.command_timeout.min(PROBE_TIMEOUT);
    let guard = WalGuard::new(config.source.max_retained_wal);
    let mut postgres = PostgresWatch {
        guard,
        config,
        conn: None,
        health,
    };
    loop {
        tokio::join!(postgres.look(), redis.look());
        if sleep_or_shutdown(EVERY, &mut shutdown).await {
            return;
        }
    }
}

struct PostgresWatch {
    config: Config,
    conn: Option<Conn>,
    guard: WalGuard,
    health: Arc<Health>,
}

impl PostgresWatch {
    async fn look(&mut self) {
        let down = match tokio::time::timeout(PROBE_TIMEOUT, self.query()).await {
            Ok(Ok(())) => None,
            // the server answered, with an error: it is up (the work loop reports the error)
            Ok(Err(Failure::Sql(e))) if e.as_db_error().is_some() => {
                tracing::debug!(error = %pg::describe(&e), "monitor query failed");
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        match down {
            None => self.health.set_up("postgres", true),
            Some(why) => {
                tracing::debug!(error = %why, "monitor cannot reach PostgreSQL");
                self.conn = None;
                self.health.set_down("postgres", why);
            }
        }
    }

    async fn query(&mut self) -> Result<(), Failure> {
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            let timeout = self.config.postgres.connect_timeout.min(PROBE_TIMEOUT);
            let conn = pg::connect(&self.config.postgres.url, timeout).await?;
            // no parallel workers for a count of a few rows (see change_log::READER_SETTINGS)
            conn.client
                .batch_execute("SET max_parallel_workers_per_gather = 0")
                .await?;
            self.conn = Some(conn);
        }
        let client = &self.conn.as_ref().expect("connected above").client;
        match self.config.source.mode {
            SourceMode::Logical => {
                slot(
                    client,
                    &self.config.source.slot,
                    &mut self.guard,
                    &self.health,
                )
                .await?
            }
            SourceMode::Trigger => pending(client, &self.health).await?,
        }
        Ok(())
    }
}

/// Lag and retained WAL of the slot `name`, and the guard's verdict on them.
async fn slot(
    client: &Client,
    name: &str,
    guard: &mut WalGuard,
    health: &Health,
) -> Result<(), SqlError> {
    let Some(row) = client.query_opt(SLOT, &[&name]).await? else {
        return Ok(()); // missing: the work loop stops with the reason
    };
    let bytes = |i: usize| row.get::<_, Option<i64>>(i).map(|v| v.max(0) as u64);
    let (lag, retained, safe) = (bytes(0), bytes(1), row.get::<_, Option<i64>>(2));
    let keep = row
        .get::<_, Option<i64>>(3)
        .and_then(|v| u64::try_from(v).ok());
    for (gauge, value) in [
        (m::SOURCE_LAG_BYTES, lag),
        (m::SLOT_RETAINED_WAL_BYTES, retained),
    ] {
        if let Some(v) = value {
            metrics::gauge!(gauge).set(v as f64);
        }
    }
    if let Some(safe) = safe {
        metrics::gauge!(m::SLOT_SAFE_WAL_BYTES).set(safe as f64);
    }
    health.update(|f| {
        f.lag_bytes = lag;
        f.retained_wal_bytes = retained;
    });
    if let Some(retained) = retained {
        guard.observe(retained, keep, name, health);
    }
    let stall = crate::source::logical::failover::standby_stall(client, name).await?;
    if health.set_stall(stall.clone()) {
        match stall {
            Some(why) => tracing::warn!("{why}; reporting not ready"),
            None => tracing::info!(
                "logical decoding is no longer held back by synchronized_standby_slots"
            ),
        }
    }
    Ok(())
}

/// Redis as a PING on a connection of its own, opened and closed each time, so a dead
/// connection is never mistaken for a live one.
struct RedisWatch {
    /// `redis` with a short command timeout.
    config: RedisConfig,
    /// What the last ping said, to log changes once.
    up: Option<bool>,
    health: Arc<Health>,
}

impl RedisWatch {
    async fn look(&mut self) {
        // one attempt, bounded by the short command timeout: a refused connection is down, and
        // so is a replica (its role is asked at connect)
        let probe = match Publisher::new(&self.config) {
            Ok(publisher) => publisher.connect().await,
            Err(e) => Err(e),
        };
        let up = probe.is_ok();
        match &probe {
            Ok(()) => self.health.set_up("redis", true),
            Err(e) => self.health.set_down("redis", e.to_string()),
        }
        match (self.up.replace(up), &probe) {
            (Some(true), Err(e)) => {
                tracing::warn!(error = %e, "Redis fails the health check; reporting not ready")
            }
            (Some(false), Ok(())) => tracing::info!("Redis answers the health check again"),
            _ => {}
        }
    }
}

async fn pending(client: &Client, health: &Health) -> Result<(), SqlError> {
    let count: i64 = client.query_one(PENDING, &[]).await?.get(0);
    debug_assert!(count <= PENDING_CAP);
    metrics::gauge!(m::PENDING_CHANGES).set(count as f64);
    health.update(|f| f.pending = Some(count as u64));
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Connect(#[from] pg::PgError),
    #[error("{}", pg::describe(.0))]
    Sql(#[from] SqlError),
}

/// The WAL-retention guard's memory: what was last said, so each change is logged once.
#[derive(Debug)]
struct WalGuard {
    /// `source.max_retained_wal`; 0 disables the guard.
    limit: u64,
    over: bool,
    near_keep_size: bool,
}

impl WalGuard {
    fn new(limit: u64) -> WalGuard {
        WalGuard {
            limit,
            over: false,
            near_keep_size: false,
        }
    }

    /// Judges `retained` bytes against the limit and PostgreSQL's `max_slot_wal_keep_size`
    /// (`keep`; `None` when unlimited), updates readiness, and logs what changed.
    fn observe(&mut self, retained: u64, keep: Option<u64>, slot: &str, health: &Health) {
        let (over, near) = self.judge(retained, keep);
        if let Some(over) = over {
            health.set_wal_over(over);
            if over {
                tracing::warn!(slot, retained, limit = self.limit, "the slot retains more WAL than source.max_retained_wal; reporting not ready until it catches up");
            } else {
                tracing::info!(
                    slot,
                    retained,
                    limit = self.limit,
                    "retained WAL is back under source.max_retained_wal"
                );
            }
        }
        match near {
            Some(true) => tracing::warn!(slot, retained, max_slot_wal_keep_size = keep, "retained WAL is at 80% of max_slot_wal_keep_size: past it PostgreSQL invalidates the slot and changes are lost"),
            Some(false) => tracing::info!(slot, retained, "retained WAL is back under 80% of max_slot_wal_keep_size"),
            None => {}
        }
    }

    /// The new states of (over the limit, near the keep size), each `Some` only when it changed.
    fn judge(&mut self, retained: u64, keep: Option<u64>) -> (Option<bool>, Option<bool>) {
        let over = self.limit > 0 && retained > self.limit;
        let near = keep.is_some_and(|k| k > 0 && u128::from(retained) * 10 >= u128::from(k) * 8);
        let changed =
            |old: &mut bool, new: bool| (std::mem::replace(old, new) != new).then_some(new);
        (
            changed(&mut self.over, over),
            changed(&mut self.near_keep_size, near),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::WalGuard;

    #[test]
    fn the_guard_reports_each_crossing_once() {
        let mut g = WalGuard::new(1000);
        assert_eq!(g.judge(500, None), (None, None));
        assert_eq!(g.judge(1001, None), (Some(true), None));
        assert_eq!(g.judge(5000, None), (None, None), "said once");
        assert_eq!(
            g.judge(1000, None),
            (Some(false), None),
            "the limit itself is allowed"
        );
        assert_eq!(g.judge(10, None), (None, None));
    }

    #[test]
    fn the_guard_warns_near_max_slot_wal_keep_size() {
        let mut g = WalGuard::new(0);
        assert_eq!(
            g.judge(u64::MAX, None),
            (None, None),
            "0 disables the limit; no keep size, no warning"
        );
        assert_eq!(g.judge(799, Some(1000)), (None, None));
        assert_eq!(g.judge(800, Some(1000)), (None, Some(true)));
        assert_eq!(g.judge(900, Some(1000)), (None, None));
        assert_eq!(g.judge(100, Some(1000)), (None, Some(false)));
    }
}
