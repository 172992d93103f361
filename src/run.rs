//! `sluice run`: the daemon loop of trigger mode.
//!
//! connect → take the reader lock (or wait as a standby) → read a batch → deliver it →
//! store progress with its dead letters → repeat; sleep until a NOTIFY or `poll_interval` when
//! caught up. PostgreSQL going away restarts the loop from the stored checkpoint after a
//! backoff; Redis going away holds the batch (see [`crate::deliver`]). SIGTERM/SIGINT finish
//! the batch in flight, store it, and return.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use tokio::sync::watch;

use crate::checkpoint::{self, CHANGE_LOG};
use crate::config::{Config, SourceMode};
use crate::source::logical;
use crate::deliver::{backoff_for, deliver, sleep_or_shutdown};
use crate::error::{classify, Class, RunError};
use crate::pg::{self, Conn};
use crate::publish::Publisher;
use crate::route::Router;
use crate::source::change_log::ChangeLog;
use crate::health::{self, Phase};

/// How often idle progress (a newer snapshot with nothing in between) is written down.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// How long a caught-up reader waits after a NOTIFY before it reads, so that a round takes
/// the writes of a few ms, not of one transaction: each round costs the same four round trips
/// (bounds, read, publish, checkpoint) whatever it holds. At 5,000 writes/s, 0 / 2 / 5 ms
/// cost 28.8 / 19.5 / 15.3 µs of CPU per event for a p99 of 4.0 / 8.3 / 10.1 ms.
const LINGER: Duration = Duration::from_millis(5);
/// How often processed change_log rows past `retention` are pruned (more often when the
/// retention itself is shorter), and once at every connect.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs until `shutdown` turns true; returns an error only for fatal failures.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let router = Router::new(&config);
    let publisher = Publisher::new(&config.redis)?;
    let metrics = crate::exporter::install(&config);
    let _http = crate::http::start(&config, metrics.clone()).await.map_err(|e| RunError::Other(e.to_string()))?;
    let upkeep = crate::exporter::spawn_upkeep(metrics);
    let monitor = tokio::spawn(crate::monitor::run(config.clone(), shutdown.clone()));
    let result = supervise(&config, &router, &publisher, &mut shutdown).await;
    publisher.close().await;
    monitor.abort();
    upkeep.abort();
    match &result {
        Ok(()) => tracing::info!("sluice stopped"),
        Err(e) => save_fatal_error(&config, e).await,
    }
    result
}

/// Stores the error the daemon stops on, for `sluice status`, if PostgreSQL answers quickly.
async fn save_fatal_error(config: &Config, e: &RunError) {
    health::global().record_error(e.to_string());
    let name = match config.source.mode {
        SourceMode::Trigger => CHANGE_LOG,
        SourceMode::Logical => config.source.slot.as_str(),
    };
    if let Ok(conn) = pg::connect(&config.postgres.url, Duration::from_secs(3)).await {
        let _ = tokio::time::timeout(Duration::from_secs(3), checkpoint::save_error(&conn.client, name)).await;
    }
}

/// Runs sessions, reconnecting with backoff after transient failures.
async fn supervise(config: &Config, router: &Router, publisher: &Publisher, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
    if let Err(e) = publisher.connect_within(config.redis.command_timeout).await {
        return Err(RunError::Other(format!(
            "cannot reach Redis at {} within {:?}: {e}; check redis.url (or REDIS_URL) and that Redis runs",
            crate::redact::url(&config.redis.url),
            config.redis.command_timeout
        )));
    }
    health::global().set_up("redis", true);
    tracing::info!(postgres = %crate::redact::url(&config.postgres.url), redis = %crate::redact::url(&config.redis.url), mode = config.source.mode.as_str(), "sluice starting");
    let mut backoff = backoff_for(&config.delivery);
    let (mut pg_down, mut connected_once) = (false, false);
    loop {
        health::global().turned();
        let on_connected = &mut || {
            if pg_down {
                metrics::counter!(crate::telemetry::POSTGRES_RECONNECTS).increment(1);
            }
            health::global().set_up("postgres", true);
            health::global().set_phase(Phase::Streaming);
            backoff.reset();
            pg_down = false;
            connected_once = true;
        };
        let result = match config.source.mode {
            SourceMode::Trigger => session(config, router, publisher, shutdown, on_connected).await,
            SourceMode::Logical => logical::session(config, router, publisher, shutdown, on_connected).await,
        };
        let e = match result {
            Ok(()) | Err(RunError::ShutdownWhileRedisDown) => return Ok(()),
            Err(e) => e,
        };
        match classify(&e) {
            Class::Fatal { hint } if matches!(e, RunError::SlotLost(_)) => {
                health::global().set_phase(Phase::SlotLost);
                return Err(RunError::SlotLost(format!("{e}; {hint}")));
            }
            Class::Fatal { hint } => return Err(RunError::Other(format!("{e}; {hint}"))),
            Class::Transient if !connected_once => {
                return Err(RunError::Other(format!(
                    "cannot connect to PostgreSQL at {}: {e}; check postgres.url (or DATABASE_URL) and that the server runs",
                    crate::redact::url(&config.postgres.url)
                )))
            }
            Class::Transient => {
                health::global().set_up("postgres", false);
                health::global().record_error(format!("PostgreSQL unavailable: {e}"));
                health::global().set_phase(Phase::Starting);
                if !std::mem::replace(&mut pg_down, true) {
                    tracing::warn!(error = %e, "PostgreSQL is unavailable; reconnecting with backoff");
                }
            }
        }
        let wait = backoff.next_backoff().unwrap_or(config.delivery.max_backoff);
        if sleep_or_shutdown(wait, shutdown).await {
            return Ok(());
        }
    }
}

/// One connection's worth of work: returns `Ok` on shutdown, `Err` when the session failed.
async fn session(
    config: &Config,
    router: &Router,
    publisher: &Publisher,
    shutdown: &mut watch::Receiver<bool>,
    on_connected: &mut (dyn FnMut() + Send),
) -> Result<(), RunError> {
    let conn = pg::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
    if !wait_for_lock(&conn, shutdown).await? {
        return Ok(());
    }
    ChangeLog::listen(&conn.client).await?;
    let mut source = ChangeLog::open(&conn.client, config.source.batch_size).await?;
    on_connected();
    checkpoint::save_error(&conn.client, CHANGE_LOG).await?;
    tracing::info!(position = %source.progress().position(), "connected to PostgreSQL; reading sluice.change_log");
    let update = checkpoint::prepare_update(&conn.client).await?;
    let mut state = LoopState { caught_up: false, dirty: false, stored_at: Instant::now(), pruned_at: None, update };
    let prune_every = PRUNE_EVERY.min(config.source.retention.max(Duration::from_secs(1)));
    loop {
        health::global().turned();
        if *shutdown.borrow() {
            return store_idle(&conn, &source, &mut state).await;
        }
        if state.caught_up && wait_for_change(&conn, config.source.poll_interval, shutdown).await {
            continue;
        }
        if !step(config, router, publisher, &conn, &mut source, &mut state, shutdown).await? {
            return Ok(());
        }
        if state.pruned_at.is_none_or(|at| at.elapsed() >= prune_every) {
            state.pruned_at = Some(Instant::now());
            let pruned = source.prune(&conn.client, config.source.retention).await?;
            if pruned > 0 {
                tracing::info!(rows = pruned, "pruned change_log rows past retention");
            }
        }
    }
}

struct LoopState {
    caught_up: bool,
    /// Progress moved in memory (idle rounds) but is not stored yet.
    dirty: bool,
    stored_at: Instant,
    pruned_at: Option<Instant>,
    /// The prepared checkpoint UPDATE of this connection.
    update: tokio_postgres::Statement,
}

/// Reads and delivers one batch. `Ok(false)`: shutdown while Redis was down, stop now.
async fn step(
    config: &Config,
    router: &Router,
    publisher: &Publisher,
    conn: &Conn,
    source: &mut ChangeLog,
    state: &mut LoopState,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, RunError> {
    let batch = source.next_batch(&conn.client).await?;
    state.caught_up = !batch.full;
    if batch.changes.is_empty() {
        state.dirty |= batch.next != *source.progress();
        source.advance(batch.next);
        if state.dirty && state.stored_at.elapsed() >= IDLE_CHECKPOINT_EVERY {
            store_idle(conn, source, state).await?;
        }
        return Ok(true);
    }
    metrics::histogram!(crate::telemetry::BATCH_SIZE).record(batch.changes.len() as f64);
    tracing::debug!(changes = batch.changes.len(), "batch read; publishing");
    let Some(done) = deliver(router, publisher, &batch.changes, &config.delivery, shutdown).await else {
        return Ok(false);
    };
    checkpoint::commit(&conn.client, &state.update, CHANGE_LOG, &batch.next, &done.dead).await?;
    crate::exporter::checkpointed();
    checkpoint::save_error(&conn.client, CHANGE_LOG).await?;
    if !done.dead.is_empty() {
        tracing::warn!(count = done.dead.len(), first_reason = done.dead[0].reason.as_str(), "events dead-lettered");
    }
    tracing::debug!(changes = batch.changes.len(), published = done.published, "batch delivered");
    source.advance(batch.next);
    health::global().update(|f| f.position = Some(source.progress().position()));
    state.dirty = false;
    state.stored_at = Instant::now();
    Ok(true)
}

async fn store_idle(conn: &Conn, source: &ChangeLog, state: &mut LoopState) -> Result<(), RunError> {
    if state.dirty {
        checkpoint::commit(&conn.client, &state.update, CHANGE_LOG, source.progress(), &[]).await?;
        crate::exporter::checkpointed();
        state.dirty = false;
        state.stored_at = Instant::now();
    }
    Ok(())
}

/// Waits for a NOTIFY (then [`LINGER`] more), the poll interval, or shutdown; `true` if it
/// was shutdown.
async fn wait_for_change(conn: &Conn, poll: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = conn.notified.notified() => {
            tokio::time::sleep(LINGER).await;
            false
        }
        _ = tokio::time::sleep(poll) => false,
        _ = shutdown.changed() => true,
    }
}

/// Takes the reader lock, waiting as a standby while another daemon holds it.
async fn wait_for_lock(conn: &Conn, shutdown: &mut watch::Receiver<bool>) -> Result<bool, RunError> {
    let mut announced = false;
    loop {
        if ChangeLog::try_lock(&conn.client).await? {
            if announced {
                tracing::info!("took over as the active reader");
            }
            return Ok(true);
        }
        health::global().turned();
        if !announced {
            health::global().set_phase(Phase::Standby);
            tracing::info!("standby: another sluice is reading this change_log; waiting to take over");
            announced = true;
        }
        if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
            return Ok(false);
        }
        if conn.is_closed() {
            return Err(RunError::ConnectionLost);
        }
    }
}
