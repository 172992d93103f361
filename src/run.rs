//! `sluice run`: the daemon. It serves its probes from the first moment, then runs sessions
//! until shutdown: a session connects to PostgreSQL, opens the configured source (waiting as a
//! standby while another daemon holds the slot or the reader lock), and runs it beside the
//! [`crate::pipeline`], the source in a task of its own so it keeps its connection alive while
//! the pipeline waits on Redis.
//!
//! A session that fails for a transient reason (a server away, slow, restarting; the stream
//! silent) ends, `/readyz` says why, and a new session starts after a backoff: the daemon never
//! exits because a server is down, not even at start. Only what retrying cannot fix (the
//! credentials, a missing schema, a lost slot, the config) stops it, with a hint. SIGTERM
//! finishes the batch in flight, stores it, and returns.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::checkpoint;
use crate::config::{Config, SourceMode};
use crate::error::{classify, Class, RunError};
use crate::health::{Health, Phase};
use crate::pg::{self, Conn};
use crate::pipeline::{ChangeLogStore, Pipeline, SlotStore, Store};
use crate::publish::{History, Publisher};
use crate::route::Router;
use crate::shutdown::sleep_or_shutdown;
use crate::source::change_log::ChangeLogSource;
use crate::source::change_log::CHANGE_LOG;
use crate::source::{logical, Batch, SourceError};

/// Batches read ahead of the one being delivered: the source reads the next while the
/// pipeline publishes this one, and stops reading when both wait.
const READ_AHEAD: usize = 1;

/// Runs until `shutdown` turns true; returns an error only for fatal failures.
pub async fn run(
    config: Config,
    router: Router,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let publisher = Publisher::new(&config.redis)?.recoverable(History::new(&config.history));
    let metrics = crate::exporter::install(&config);
    let _http = crate::http::start(&config, metrics.clone(), health.clone()).await?;
    let upkeep = crate::exporter::spawn_upkeep(metrics);
    let monitor = tokio::spawn(crate::monitor::run(
        config.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        postgres = %crate::redact::url(&config.postgres.url),
        redis = %crate::redact::url(&config.redis.url),
        mode = config.source.mode.as_str(),
        "sluice starting"
    );
    let daemon = Daemon {
        config: &config,
        router: &router,
        publisher: &publisher,
        health: &health,
    };
    let result = daemon.supervise(shutdown).await;
    publisher.close().await;
    monitor.abort();
    upkeep.abort();
    match &result {
        Ok(()) => tracing::info!("sluice stopped"),
        Err(e) => save_fatal_error(&config, &health, e).await,
    }
    result
}

/// Stores the error the daemon stops on, for `sluice status`, if PostgreSQL answers quickly.
async fn save_fatal_error(config: &Config, health: &Health, e: &RunError) {
    health.record_error(e.to_string());
    let name = match config.source.mode {
        SourceMode::Trigger => CHANGE_LOG,
        SourceMode::Logical => config.source.slot.as_str(),
    };
    let timeout = std::time::Duration::from_secs(3);
    if let Ok(conn) = pg::connect_daemon(&config.postgres.url, timeout, timeout).await {
        let _ = conn
            .bounded(checkpoint::save_error(&conn.client, health, name))
            .await;
    }
}

/// What every session shares.
struct Daemon<'a> {
    config: &'a Config,
    router: &'a Router,
    publisher: &'a Publisher,
    health: &'a Arc<Health>,
}

impl Daemon<'_> {
    /// Runs sessions, starting a new one with backoff after a transient failure.
    async fn supervise(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
        let mut backoff = Backoff::for_delivery(&self.config.delivery);
        let mut failing: Option<&'static str> = None;
        loop {
            self.health.turned();
            let mut on_connected = || {
                if failing.take() == Some("postgres") {
                    metrics::counter!(crate::telemetry::POSTGRES_RECONNECTS).increment(1);
                    tracing::info!("PostgreSQL is reachable again");
                }
                backoff.reset();
            };
            let result = self.session(&mut shutdown, &mut on_connected).await;
            let e = match result {
                Ok(()) if *shutdown.borrow() => return Ok(()),
                Ok(()) => continue,
                Err(e) => e,
            };
            if let Class::Fatal { hint } = classify(&e) {
                if e.is_slot_lost() {
                    self.health.set_phase(Phase::SlotLost);
                }
                tracing::error!(error = %e, hint, "stopping: retrying cannot fix this");
                return Err(e);
            }
            self.ride_out(&e, &mut failing);
            let wait = backoff.next_wait();
            if sleep_or_shutdown(wait, &mut shutdown).await {
                return Ok(());
            }
        }
    }

    /// Reports a transient failure: once as a warning, then quietly until it clears.
    fn ride_out(&self, e: &RunError, failing: &mut Option<&'static str>) {
        let server = e.server();
        self.health.set_down(server, e.to_string());
        if server == "postgres" && self.health.phase() != Phase::Starting {
            self.health.set_phase(Phase::Starting);
        }
        let name = if server == "redis" {
            "Redis"
        } else {
            "PostgreSQL"
        };
        self.health.record_error(format!("{name} unavailable: {e}"));
        if failing.replace(server) != Some(server) {
            tracing::warn!(error = %e, "{name} is unavailable; reconnecting with backoff");
        } else {
            tracing::debug!(error = %e, "{name} is still unavailable");
        }
    }

    /// One connection's worth of work: `Ok` when it ended without a failure (shutdown).
    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        on_connected: &mut (dyn FnMut() + Send),
    ) -> Result<(), RunError> {
        let c = &self.config.postgres;
        let conn = Arc::new(
            pg::connect_daemon(&c.url, c.connect_timeout, c.query_timeout)
                .await
                .map_err(RunError::Connect)?,
        );
        self.health.set_up("postgres", true);
        on_connected();
        let (out, batches) = mpsc::channel(READ_AHEAD);
        let (store, source) = match self.config.source.mode {
            SourceMode::Trigger => match self.open_change_log(&conn, out, shutdown).await? {
                Some(opened) => opened,
                None => return Ok(()),
            },
            SourceMode::Logical => match self.open_slot(&conn, out, shutdown).await? {
                Some(opened) => opened,
                None => return Ok(()),
            },
        };
        self.health.set_phase(Phase::Streaming);
        self.stream(store, source, batches, shutdown.clone()).await
    }

    async fn open_change_log(
        &self,
        conn: &Arc<Conn>,
        out: mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<(Store, SourceTask)>, RunError> {
        let s = &self.config.source;
        let Some(source) = ChangeLogSource::open(
            conn.clone(),
            s.batch_size,
            s.poll_interval,
            self.health.clone(),
            shutdown,
        )
        .await?
        else {
            return Ok(None);
        };
        let store =
            ChangeLogStore::new(conn.clone(), s.retention, source.progress().clone()).await?;
        let task = tokio::spawn(source.run(out, shutdown.clone()));
        Ok(Some((Store::ChangeLog(store), task)))
    }

    async fn open_slot(
        &self,
        conn: &Arc<Conn>,
        out: mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<(Store, SourceTask)>, RunError> {
        let Some(source) =
            logical::open(self.config, conn.clone(), self.health.clone(), shutdown).await?
        else {
            return Ok(None);
        };
        let (acks, acked) = watch::channel(source.position());
        let s = &self.config.source;
        let store = SlotStore::new(
            conn.clone(),
            s.slot.clone(),
            s.keep_history,
            s.retention,
            acks,
        );
        let task = tokio::spawn(source.run(out, acked, shutdown.clone()));
        Ok(Some((Store::Slot(store), task)))
    }

    /// Runs the pipeline until shutdown or either side fails; the source's failure stops the
    /// pipeline after its batch in flight (or at once while Redis is away), the pipeline's
    /// failure closes the channel, which stops the source.
    async fn stream(
        &self,
        store: Store,
        mut source: SourceTask,
        batches: mpsc::Receiver<Batch>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let (stop_tx, stop) = watch::channel(*shutdown.borrow());
        let pipeline = Pipeline {
            router: self.router,
            publisher: self.publisher,
            policy: &self.config.delivery,
            health: self.health,
            store,
        };
        let delivering = pipeline.run(batches, stop);
        tokio::pin!(delivering);
        let mut source_ended = None;
        let delivered = loop {
            tokio::select! {
                delivered = &mut delivering => break delivered,
                ended = &mut source, if source_ended.is_none() => {
                    source_ended = Some(ended);
                    let _ = stop_tx.send(true);
                }
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() {
                    let _ = stop_tx.send(true);
                }
            }
        };
        // The pipeline and its store are gone: the source sees its channel and acks close.
        let ended = match source_ended {
            Some(ended) => ended,
            None => source.await,
        };
        ended??;
        delivered?;
        Ok(())
    }
}

type SourceTask = tokio::task::JoinHandle<Result<(), SourceError>>;
