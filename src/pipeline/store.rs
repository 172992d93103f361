//! Where a delivered batch's dead letters and progress go: trigger mode's checkpoint row (with
//! the retention of processed change_log rows), or logical mode's acknowledgement to the
//! source (with the dead letters and, optionally, the replay history stored first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Statement;

use super::PipelineError;
use crate::checkpoint;
use crate::dead_letter::DeadLetter;
use crate::health::Health;
use crate::pg::Conn;
use crate::route::Router;
use crate::source::change_log::{self, CHANGE_LOG};
use crate::source::{lsn, Batch, Progress};

/// How often idle progress (a newer snapshot with nothing in between) is written down.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// How often processed rows past `source.retention` are pruned (more often when the retention
/// itself is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The store of one session's mode.
pub enum Store {
    ChangeLog(ChangeLogStore),
    Slot(SlotStore),
}

/// Trigger mode: progress in `sluice.checkpoint`, on the session that holds the reader lock.
pub struct ChangeLogStore {
    conn: Arc<Conn>,
    update: Statement,
    retention: Duration,
    /// Progress stored last, and progress read past it with nothing to publish, not yet stored.
    stored: change_log::Progress,
    idle: Option<change_log::Progress>,
    stored_at: Instant,
    pruned_at: Option<Instant>,
}

/// Logical mode: dead letters and history in PostgreSQL, then the position back to the source.
pub struct SlotStore {
    conn: Arc<Conn>,
    slot: String,
    keep_history: bool,
    retention: Duration,
    acks: watch::Sender<u64>,
    pruned_at: Option<Instant>,
}

impl ChangeLogStore {
    pub async fn new(
        conn: Arc<Conn>,
        retention: Duration,
        stored: change_log::Progress,
    ) -> Result<ChangeLogStore, PipelineError> {
        let update = conn
            .bounded(checkpoint::prepare_update(&conn.client))
            .await
            .map_err(PipelineError::Checkpoint)?;
        Ok(ChangeLogStore {
            conn,
            update,
            retention,
            stored,
            idle: None,
            stored_at: Instant::now(),
            pruned_at: None,
        })
    }

    async fn store(
        &mut self,
        progress: change_log::Progress,
        dead: &[DeadLetter],
        health: &Health,
    ) -> Result<(), PipelineError> {
        let c = &self.conn;
        c.bounded(checkpoint::commit(
            &c.client,
            &self.update,
            CHANGE_LOG,
            &progress,
            dead,
        ))
        .await
        .map_err(PipelineError::Checkpoint)?;
        crate::telemetry::checkpointed();
        health.update(|f| f.position = Some(progress.position()));
        self.stored = progress;
        self.idle = None;
        self.stored_at = Instant::now();
        Ok(())
    }

    async fn prune(&mut self) -> Result<(), PipelineError> {
        let every = PRUNE_EVERY.min(self.retention.max(Duration::from_secs(1)));
        if self.pruned_at.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        self.pruned_at = Some(Instant::now());
        let c = &self.conn;
        let pruned = c
            .bounded(checkpoint::prune(&c.client, self.retention, &self.stored))
            .await
            .map_err(PipelineError::Checkpoint)?;
        if pruned > 0 {
            tracing::info!(rows = pruned, "pruned change_log rows past retention");
        }
        Ok(())
    }
}

impl SlotStore {
    pub fn new(
        conn: Arc<Conn>,
        slot: String,
        keep_history: bool,
        retention: Duration,
        acks: watch::Sender<u64>,
    ) -> SlotStore {
        SlotStore {
            conn,
            slot,
            keep_history,
            retention,
            acks,
            pruned_at: None,
        }
    }

    async fn store(
        &mut self,
        batch: &Batch,
        dead: &[DeadLetter],
        router: &Router,
    ) -> Result<(), PipelineError> {
        let c = &self.conn;
        if self.keep_history {
            crate::history::write(c, router, &batch.changes)
                .await
                .map_err(PipelineError::History)?;
        }
        let commit = match batch.progress {
            Progress::Slot(commit) => commit,
            Progress::ChangeLog(_) => None,
        };
        if !dead.is_empty() {
            let at = lsn::format(commit.unwrap_or(*self.acks.borrow()));
            c.bounded(checkpoint::commit_position(
                &c.client, &self.slot, &at, dead,
            ))
            .await
            .map_err(PipelineError::Checkpoint)?;
        }
        if let Some(end) = commit {
            self.acks
                .send_if_modified(|acked| std::mem::replace(acked, end.max(*acked)) != *acked);
        }
        Ok(())
    }

    async fn prune(&mut self) -> Result<(), PipelineError> {
        if !self.keep_history || self.pruned_at.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return Ok(());
        }
        self.pruned_at = Some(Instant::now());
        let pruned = crate::history::prune(&self.conn, self.retention)
            .await
            .map_err(PipelineError::History)?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned history older than source.retention");
        }
        Ok(())
    }
}

impl Store {
    fn conn(&self) -> &Conn {
        match self {
            Store::ChangeLog(s) => &s.conn,
            Store::Slot(s) => &s.conn,
        }
    }

    fn name(&self) -> &str {
        match self {
            Store::ChangeLog(_) => CHANGE_LOG,
            Store::Slot(s) => &s.slot,
        }
    }

    /// Stores a delivered batch's dead letters and progress.
    pub async fn commit(
        &mut self,
        batch: Batch,
        dead: &[DeadLetter],
        router: &Router,
        health: &Health,
    ) -> Result<(), PipelineError> {
        match self {
            Store::ChangeLog(s) => match batch.progress {
                Progress::ChangeLog(progress) => s.store(progress, dead, health).await?,
                Progress::Slot(_) => unreachable!("a trigger session reads no slot"),
            },
            Store::Slot(s) => s.store(&batch, dead, router).await?,
        }
        self.save_error(health).await
    }

    /// Progress with nothing to publish: kept, and stored every [`IDLE_CHECKPOINT_EVERY`].
    pub async fn idle(&mut self, progress: Progress) -> Result<(), PipelineError> {
        match (self, progress) {
            (Store::ChangeLog(s), Progress::ChangeLog(p)) => s.idle = Some(p),
            (Store::Slot(s), Progress::Slot(Some(end))) => {
                s.acks
                    .send_if_modified(|acked| std::mem::replace(acked, end.max(*acked)) != *acked);
            }
            _ => {}
        }
        Ok(())
    }

    /// Stores idle progress not stored yet, so that the next batch is published from the
    /// checkpoint a restart would read it from (see the module doc).
    pub async fn settle(&mut self, health: &Health) -> Result<(), PipelineError> {
        if let Store::ChangeLog(s) = self {
            if let Some(idle) = s.idle.take() {
                s.store(idle, &[], health).await?;
            }
        }
        Ok(())
    }

    /// What is due while batches are scarce: idle progress, pruning, the last error.
    pub async fn upkeep(&mut self, health: &Health) -> Result<(), PipelineError> {
        match self {
            Store::ChangeLog(s) => {
                if s.stored_at.elapsed() >= IDLE_CHECKPOINT_EVERY {
                    if let Some(idle) = s.idle.take() {
                        s.store(idle, &[], health).await?;
                    }
                }
                s.prune().await?;
            }
            Store::Slot(s) => s.prune().await?,
        }
        self.save_error(health).await
    }

    /// The loop ends: idle progress is stored (best effort: a failure only means it is read
    /// again).
    pub async fn finish(&mut self) -> Result<(), PipelineError> {
        if let Store::ChangeLog(s) = self {
            if let Some(idle) = s.idle.take() {
                let c = &s.conn;
                if c.bounded(checkpoint::commit(
                    &c.client,
                    &s.update,
                    CHANGE_LOG,
                    &idle,
                    &[],
                ))
                .await
                .is_ok()
                {
                    crate::telemetry::checkpointed();
                }
            }
        }
        Ok(())
    }

    async fn save_error(&self, health: &Health) -> Result<(), PipelineError> {
        let c = self.conn();
        c.bounded(checkpoint::save_error(&c.client, health, self.name()))
            .await
            .map_err(PipelineError::Checkpoint)
    }
}
