//! The logical source's loop: reads the replication stream, turns it into batches, hands them
//! to the pipeline, and keeps the walsender informed (see the module doc of `logical` for the
//! rules on what may be confirmed).
//!
//! Reading and delivering are separate: a batch is handed over on a bounded channel and this
//! loop goes on reading the next one. When the pipeline is slow (Redis away, say), the channel
//! stays full and the loop stops reading, so memory stays bounded; it keeps sending standby
//! status updates with the last confirmed position meanwhile, often enough for the server's
//! `wal_sender_timeout`, because the walsender reads our replies even while its own sends are
//! blocked. Without them it would end the connection after `wal_sender_timeout` and an outage
//! of Redis would look like one of PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use super::convert::{self, Schema, Txn};
use super::snapshot;
use super::start::Started;
use crate::event::{Change, Operation};
use crate::health::Health;
use crate::pg::Conn;
use crate::source::lsn;
use crate::source::pgoutput::{Message, OldTuple, TupleData};
use crate::source::replication::{Frame, ReplicationConn, StandbyStatus};
use crate::source::{Batch, Progress, SourceError};

/// How long a Commit may wait for more changes to share its batch.
const LINGER: Duration = Duration::from_millis(2);
/// The least time between two standby status messages an acknowledgement sends: a trickle of
/// small transactions is acknowledged every few ms, and a status message each time cost a send
/// here and a wake-up of the walsender; a later confirmation covers the earlier ones.
const CONFIRM_EVERY: Duration = Duration::from_millis(20);
const HEARTBEAT_PREFIX: &str = "sluice.heartbeat";

/// What the loop needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_size: usize,
    pub status_interval: Duration,
    pub heartbeat_interval: Duration,
}

/// A streaming slot, from [`super::start`] until the stream ends.
pub struct LogicalSource {
    settings: Settings,
    sql: Arc<Conn>,
    repl: ReplicationConn,
    health: Arc<Health>,
    schema: Schema,
    txn: Option<Txn>,
    pending: Vec<Change>,
    /// End LSN of the last Commit read; its changes are in `pending` or already handed over.
    pending_commit: Option<u64>,
    /// A sealed batch waiting for room in the channel.
    ready: Option<Batch>,
    /// What status updates report: the pipeline's acknowledgements, and idle WAL ends.
    confirmed: u64,
    /// The pipeline's last acknowledgement, and the last Commit handed to it: while
    /// `acked < sent` a batch is in flight.
    acked: u64,
    sent: u64,
    /// A batch that ends inside a transaction was handed over since the last Commit: nothing
    /// may be confirmed past it before the pipeline acknowledges a later Commit (a Commit that
    /// arrives alone then goes through the pipeline, behind that batch).
    partial_in_flight: bool,
    /// How often status goes out: `status_interval`, or less when `wal_sender_timeout` is short.
    status_every: Duration,
    flush_at: Option<Instant>,
    status_at: Instant,
    /// An acknowledgement moved `confirmed` but its status was held back: it goes out
    /// [`CONFIRM_EVERY`] after the last one.
    status_held: bool,
    heartbeat_at: Instant,
    last_frame: Instant,
}

impl LogicalSource {
    pub(super) fn new(
        settings: Settings,
        sql: Arc<Conn>,
        started: Started,
        health: Arc<Health>,
    ) -> LogicalSource {
        let now = Instant::now();
        let status_every = match started.sender_timeout {
            Some(t) if !t.is_zero() => settings.status_interval.min(t / 3),
            _ => settings.status_interval,
        };
        LogicalSource {
            settings,
            sql,
            repl: started.repl,
            health,
            schema: Schema::default(),
            txn: None,
            pending: Vec::new(),
            pending_commit: None,
            ready: None,
            confirmed: started.confirmed,
            acked: started.confirmed,
            sent: started.confirmed,
            partial_in_flight: false,
            status_every,
            flush_at: None,
            status_at: now,
            status_held: false,
            heartbeat_at: now,
            last_frame: now,
        }
    }

    /// The slot's confirmed position when streaming started.
    pub fn position(&self) -> u64 {
        self.confirmed
    }

    /// Streams into `out` until shutdown, the pipeline stopping (`Ok`), or a failure (`Err`).
    /// `acks` carries the end LSN of each Commit the pipeline has delivered and stored.
    pub async fn run(
        mut self,
        out: mpsc::Sender<Batch>,
        mut acks: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let watchdog = self.settings.heartbeat_interval * 2 + Duration::from_secs(5);
        loop {
            self.health.turned();
            if *shutdown.borrow() {
                return self.finish(&mut acks).await;
            }
            let open = if self.ready.is_some() {
                self.hand_over(&out, &mut acks, &mut shutdown).await?
            } else if self.flush_at.is_some() {
                self.linger(&mut shutdown).await?;
                true
            } else {
                self.wait(&mut acks, &mut shutdown).await?
            };
            if !open {
                return Ok(());
            }
            // Waiting for room in the channel (Redis away, say) is no silence of the server's.
            if self.ready.is_none() && self.last_frame.elapsed() > watchdog {
                return Err(SourceError::Silent(watchdog));
            }
            self.on_timers().await?;
        }
    }

    /// Waits for a frame, an acknowledgement, a timer or shutdown; `false` once the pipeline
    /// has stopped.
    async fn wait(
        &mut self,
        acks: &mut watch::Receiver<u64>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        let due = self.next_due();
        tokio::select! {
            frame = self.repl.next_frame() => {
                self.last_frame = Instant::now();
                self.on_frame(frame?).await?;
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    return Ok(false);
                }
                let lsn = *acks.borrow_and_update();
                self.on_ack(lsn).await?;
            }
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = shutdown.changed() => {}
        }
        Ok(true)
    }

    /// Hands the sealed batch to the pipeline, keeping status updates going while the channel
    /// is full; `false` once the pipeline has stopped.
    async fn hand_over(
        &mut self,
        out: &mpsc::Sender<Batch>,
        acks: &mut watch::Receiver<u64>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        tokio::select! {
            permit = out.reserve() => {
                let Ok(permit) = permit else { return Ok(false) };
                let batch = self.ready.take().expect("a sealed batch");
                match batch.progress {
                    Progress::Slot(Some(commit)) => {
                        self.sent = self.sent.max(commit);
                        self.partial_in_flight = false;
                    }
                    _ => self.partial_in_flight = true,
                }
                permit.send(batch);
                // Not reading while the channel was full is no silence of the server's.
                self.last_frame = Instant::now();
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    return Ok(false);
                }
                let lsn = *acks.borrow_and_update();
                self.on_ack(lsn).await?;
            }
            _ = tokio::time::sleep_until(self.status_next().into()) => self.send_status().await?,
            _ = shutdown.changed() => {}
        }
        Ok(true)
    }

    /// While a Commit waits up to [`LINGER`] for company, takes only the frames that have
    /// already arrived and otherwise sleeps, then takes what arrived meanwhile. Waking for each
    /// message of a trickle of small transactions (Begin, row, Commit: three socket reads a
    /// change) cost more CPU than the whole rest of the path; this is one wake-up a batch.
    /// A flowing stream never sleeps here: there is always a frame waiting until the batch fills.
    async fn linger(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SourceError> {
        self.take_arrived().await?;
        if self.flush_at.is_some_and(|f| f > Instant::now()) {
            // Edge-triggered readiness would still wake the thread for every packet.
            self.repl.quiet(true);
            tokio::select! {
                _ = tokio::time::sleep_until(self.next_due().into()) => {}
                _ = shutdown.changed() => {}
            }
            self.repl.quiet(false);
            // One turn of the I/O driver, which sees the readiness that turning quiet off raised.
            tokio::task::yield_now().await;
            self.take_arrived().await?;
        }
        Ok(())
    }

    /// Handles the frames that can be read without waiting, until the batch is full.
    async fn take_arrived(&mut self) -> Result<(), SourceError> {
        while self.pending.len() < self.settings.batch_size && self.ready.is_none() {
            // Polled once: reading is cancel-safe, a partial message stays in the buffer.
            let Some(frame) = self.repl.next_frame().now_or_never() else {
                return Ok(());
            };
            self.last_frame = Instant::now();
            self.on_frame(frame?).await?;
        }
        Ok(())
    }

    /// When the next standby status message is due: a held-back confirmation, or the interval.
    fn status_next(&self) -> Instant {
        let interval = if self.status_held {
            CONFIRM_EVERY.min(self.status_every)
        } else {
            self.status_every
        };
        self.status_at + interval
    }

    fn next_due(&self) -> Instant {
        let status = self.status_next();
        let heartbeat = self.heartbeat_at + self.settings.heartbeat_interval;
        self.flush_at
            .map_or(status.min(heartbeat), |f| f.min(status).min(heartbeat))
    }

    async fn on_timers(&mut self) -> Result<(), SourceError> {
        let now = Instant::now();
        if self.ready.is_none() && self.flush_at.is_some_and(|f| f <= now) {
            self.seal().await?;
        }
        if now >= self.heartbeat_at + self.settings.heartbeat_interval {
            self.heartbeat_at = now;
            let sql = "SELECT pg_logical_emit_message(false, $1, '')";
            self.sql
                .bounded(self.sql.client.execute(sql, &[&HEARTBEAT_PREFIX]))
                .await?;
        }
        if now >= self.status_next() {
            self.send_status().await?;
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), SourceError> {
        match frame {
            Frame::XLogData { data, end, .. } => {
                self.on_message(Message::decode(&data)?, end).await
            }
            Frame::Keepalive { end, reply, .. } => {
                self.confirm_if_idle(end);
                if reply {
                    self.send_status().await?;
                }
                Ok(())
            }
        }
    }

    async fn on_message(&mut self, message: Message, wal_end: u64) -> Result<(), SourceError> {
        match message {
            Message::Begin(b) => self.txn = Some(Txn::new(b.final_lsn, b.xid, b.commit_ts)),
            Message::Commit(c) => {
                self.txn = None;
                self.pending_commit = Some(c.end_lsn);
                self.flush_at.get_or_insert_with(|| Instant::now() + LINGER);
            }
            Message::Relation(r) => {
                let lookup = self.schema.observe(&r, &self.sql.client);
                match tokio::time::timeout(self.sql.timeout, lookup).await {
                    Ok(result) => result?,
                    Err(_) => {
                        return Err(SourceError::Postgres(crate::pg::PgError::Timeout(
                            self.sql.timeout,
                        )))
                    }
                }
            }
            Message::Insert(i) => {
                self.push(i.relation_id, Operation::Insert, Some(&i.new), None)?
            }
            Message::Update(u) => self.push(
                u.relation_id,
                Operation::Update,
                Some(&u.new),
                u.old.as_ref(),
            )?,
            Message::Delete(d) => {
                self.push(d.relation_id, Operation::Delete, None, Some(&d.old))?
            }
            Message::Truncate(t) => {
                for id in &t.relation_ids {
                    self.push(*id, Operation::Truncate, None, None)?;
                }
            }
            Message::Logical(m) if m.is_transactional() && m.prefix == snapshot::PREFIX => {
                self.push_snapshot(&m.content)?
            }
            Message::Logical(m) if !m.is_transactional() => self.confirm_if_idle(wal_end),
            Message::Logical(_) | Message::Origin(_) | Message::Type(_) => {}
        }
        Ok(())
    }

    fn push(
        &mut self,
        rel: u32,
        op: Operation,
        new: Option<&TupleData>,
        old: Option<&OldTuple>,
    ) -> Result<(), SourceError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or(SourceError::OutsideTransaction("a row change"))?;
        let table = self.schema.table(rel)?;
        let change = convert::change(table, op, new, old, txn);
        self.enqueue(change);
        Ok(())
    }

    /// A row `sluice backfill` emitted (see `snapshot`). A malformed one is logged and
    /// skipped rather than stopping the stream: it is no committed change, and a backfill
    /// can be run again.
    fn push_snapshot(&mut self, content: &[u8]) -> Result<(), SourceError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or(SourceError::OutsideTransaction("a snapshot message"))?;
        match snapshot::change(content, txn) {
            Ok(change) => self.enqueue(change),
            Err(why) => tracing::error!(%why, "skipping a backfill message"),
        }
        Ok(())
    }

    fn enqueue(&mut self, change: Change) {
        self.pending.push(change);
        if self.pending.len() >= self.settings.batch_size {
            self.flush_at = Some(Instant::now());
        }
    }

    /// Seals what is pending into the batch to hand over, with the last Commit read. A Commit
    /// without changes while nothing is in flight is confirmed at once: it holds no event.
    async fn seal(&mut self) -> Result<(), SourceError> {
        self.flush_at = None;
        let changes = std::mem::take(&mut self.pending);
        let commit = self.pending_commit.take();
        match commit {
            Some(end)
                if changes.is_empty() && self.acked >= self.sent && !self.partial_in_flight =>
            {
                self.sent = self.sent.max(end);
                self.on_ack(end).await
            }
            None if changes.is_empty() => Ok(()),
            _ => {
                self.ready = Some(Batch {
                    changes,
                    progress: Progress::Slot(commit),
                    origin: None,
                });
                Ok(())
            }
        }
    }

    /// The pipeline delivered and stored everything through the Commit ending at `lsn`.
    async fn on_ack(&mut self, lsn: u64) -> Result<(), SourceError> {
        self.acked = self.acked.max(lsn);
        if lsn <= self.confirmed {
            return Ok(());
        }
        self.confirmed = lsn;
        self.health.update(|f| f.position = Some(lsn::format(lsn)));
        if self.status_at.elapsed() >= CONFIRM_EVERY {
            return self.send_status().await;
        }
        self.status_held = true;
        Ok(())
    }

    /// While nothing is in flight, a WAL end the server reports holds no change of ours.
    fn confirm_if_idle(&mut self, wal_end: u64) {
        let idle = self.txn.is_none()
            && self.pending.is_empty()
            && self.pending_commit.is_none()
            && self.ready.is_none();
        if idle && self.acked >= self.sent && !self.partial_in_flight {
            self.confirmed = self.confirmed.max(wal_end);
        }
    }

    async fn send_status(&mut self) -> Result<(), SourceError> {
        self.status_at = Instant::now();
        self.status_held = false;
        let c = self.confirmed;
        self.repl
            .send_status(StandbyStatus {
                write: c,
                flush: c,
                apply: c,
                time: 0,
                reply: false,
            })
            .await?;
        crate::telemetry::checkpointed();
        Ok(())
    }

    /// Shutdown: reads nothing more, waits for the batch in flight to be acknowledged (or the
    /// pipeline to stop), and confirms what was.
    async fn finish(&mut self, acks: &mut watch::Receiver<u64>) -> Result<(), SourceError> {
        while self.acked < self.sent {
            tokio::select! {
                changed = acks.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let lsn = *acks.borrow_and_update();
                    self.acked = self.acked.max(lsn);
                    self.confirmed = self.confirmed.max(lsn);
                }
                _ = tokio::time::sleep_until(self.status_next().into()) => self.send_status().await?,
            }
        }
        self.send_status().await
    }
}
