//! The pipeline: the one loop both capture modes share. A source (`crate::source`) reads
//! batches of changes and hands them over a bounded channel; the pipeline routes each batch,
//! publishes it to Redis ([`crate::deliver`]), stores its dead letters and the progress it
//! makes ([`Store`]), and, in logical mode, hands the confirmed position back to the source.
//!
//! # When progress may be confirmed, and why
//!
//! The stored progress (the slot's confirmed position, or the snapshot in `sluice.checkpoint`)
//! is the only record of how far Sluice got: after a crash or a restart the source reads again
//! everything after it, and nothing before it. So it may move past a change only once nothing
//! more needs to happen for that change:
//!
//! * **Redis acknowledged the publish of every event the change produced**, or the event was
//!   written to `sluice.dead_letter`. Redis being unreachable is no event's fault: the batch is
//!   retried with backoff, nothing is reported done, and the channel to the source stays full,
//!   so the source stops reading (it keeps its connection alive) and holds the changes.
//! * **Dead letters are stored before or with the progress that passes them**: in one
//!   statement in trigger mode (`checkpoint::commit`), before the acknowledgement in logical
//!   mode. A crash in between reads the batch again rather than losing its dead letters.
//! * **Batches are stored in the order they were read**, one at a time, so progress never
//!   skips a batch that is still in flight; it never moves backwards either.
//! * **Logical mode's history** (`source.keep_history`) is written after Redis acknowledged a
//!   batch and before its position is acknowledged, so a replay source never misses a change
//!   that was published.
//! * **A batch is published only from stored progress**: in trigger mode the publisher
//!   recognises what Redis already took by the checkpoint the batch was read from (its
//!   `origin`), so idle progress read past since the last stored checkpoint is stored before
//!   the next batch is published. Otherwise a crash would read that batch again from an older
//!   checkpoint, under another origin, and publish it twice.
//! * **A transaction is confirmed by its Commit only** (the source's batches carry the end LSN
//!   of their last Commit, or nothing when they end inside one).
//!
//! Shutdown (or the source stopping) ends the loop after the batch in flight: it is published
//! and stored if Redis answers; if Redis is away it is left unconfirmed and read again at the
//! next start. A crash anywhere re-publishes at most what was in flight, with the same
//! `eventId`s.

mod store;

use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use store::{ChangeLogStore, SlotStore, Store};

use crate::config::DeliveryConfig;
use crate::deliver::deliver;
use crate::health::Health;
use crate::pg::PgError;
use crate::publish::Publisher;
use crate::route::Router;
use crate::source::Batch;

/// How often the loop does its upkeep while no batch comes (idle progress, pruning, the last
/// error), and turns for `/healthz`.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("storing progress: {0}")]
    Checkpoint(PgError),
    #[error("writing the replay history: {0}")]
    History(PgError),
}

/// The shared stages of one session.
pub struct Pipeline<'a> {
    pub router: &'a Router,
    pub publisher: &'a Publisher,
    pub policy: &'a DeliveryConfig,
    pub health: &'a Health,
    pub store: Store,
}

impl Pipeline<'_> {
    /// Delivers batches until the source ends or `stop` turns true (`Ok`), or storing fails.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        self.store.upkeep(self.health).await?;
        let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
        upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.turned();
            if *stop.borrow() {
                return self.store.finish().await;
            }
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                changed = stop.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return self.store.finish().await,
                },
                _ = upkeep.tick() => {
                    self.store.upkeep(self.health).await?;
                    continue;
                }
            };
            let Some(batch) = batch else {
                return self.store.finish().await;
            };
            if !self.deliver(batch, &mut stop).await? {
                return Ok(());
            }
        }
    }

    /// One batch, published and stored; `false` when it was stopped while Redis was away.
    async fn deliver(
        &mut self,
        batch: Batch,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, PipelineError> {
        if batch.changes.is_empty() {
            self.store.idle(batch.progress).await?;
            return Ok(true);
        }
        // The batch's origin must be what a restart reads from: idle progress is stored first.
        self.store.settle(self.health).await?;
        metrics::histogram!(crate::telemetry::BATCH_SIZE).record(batch.changes.len() as f64);
        tracing::debug!(changes = batch.changes.len(), "batch read; publishing");
        let Some(done) = deliver(
            self.router,
            self.publisher,
            &batch.changes,
            batch.origin.as_deref(),
            self.policy,
            self.health,
            stop,
        )
        .await
        else {
            return Ok(false);
        };
        if let Some(first) = done.dead.first() {
            tracing::warn!(
                count = done.dead.len(),
                first_reason = first.reason.as_str(),
                "events dead-lettered"
            );
        }
        tracing::debug!(
            changes = batch.changes.len(),
            published = done.published,
            "batch delivered"
        );
        self.store
            .commit(batch, &done.dead, self.router, self.health)
            .await?;
        Ok(true)
    }
}
