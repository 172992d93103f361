//! One connection's worth of logical streaming (see the module doc of `logical` for the rules).

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::watch;

use super::convert::{self, Schema, Txn};
use super::snapshot;
use crate::checkpoint;
use crate::config::Config;
use crate::deliver::{deliver, sleep_or_shutdown};
use crate::error::RunError;
use crate::event::{Change, Operation};
use crate::pg::{self, Conn};
use crate::publish::Publisher;
use crate::route::Router;
use crate::source::lsn;
use crate::source::pgoutput::Message;
use crate::source::replication::{Frame, ReplicationConn, ReplicationError, StandbyStatus};

/// How long a Commit may wait for more changes to share its batch.
const LINGER: Duration = Duration::from_millis(2);
/// The least time between two standby status messages a flush sends: a trickle of small
/// transactions flushes every few ms, and a status message each time cost a send here and a
/// wake-up of the walsender; a later confirmation covers the earlier ones.
const CONFIRM_EVERY: Duration = Duration::from_millis(20);
const HEARTBEAT_PREFIX: &str = "sluice.heartbeat";

struct Stream<'a> {
    config: &'a Config,
    router: &'a Router,
    publisher: &'a Publisher,
    sql: Conn,
    repl: ReplicationConn,
    schema: Schema,
    txn: Option<Txn>,
    pending: Vec<Change>,
    /// End LSN of the last Commit read; its changes are in `pending` or already delivered.
    pending_commit: Option<u64>,
    confirmed: u64,
    flush_at: Option<Instant>,
    status_at: Instant,
    /// A flush moved `confirmed` but held its status back: it goes out [`CONFIRM_EVERY`]
    /// after the last one.
    status_held: bool,
    heartbeat_at: Instant,
    last_frame: Instant,
}

/// Streams until shutdown (`Ok`) or a failure (`Err`, sorted by the caller).
pub async fn session(
    config: &Config,
    router: &Router,
    publisher: &Publisher,
    shutdown: &mut watch::Receiver<bool>,
    on_connected: &mut (dyn FnMut() + Send),
) -> Result<(), RunError> {
    let sql = pg::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
    let confirmed = slot_position(&sql, &config.source.slot).await?;
    let Some(repl) = start(config, shutdown).await? else {
        return Ok(());
    };
    on_connected();
    checkpoint::save_error(&sql.client, &config.source.slot).await?;
    tracing::info!(slot = %config.source.slot, position = %lsn::format(confirmed), "connected to PostgreSQL; streaming from the slot");
    let now = Instant::now();
    let mut s = Stream {
        config,
        router,
        publisher,
        sql,
        repl,
        schema: Schema::default(),
        txn: None,
        pending: Vec::new(),
        pending_commit: None,
        confirmed,
        flush_at: None,
        status_at: now,
        status_held: false,
        heartbeat_at: now,
        last_frame: now,
    };
    s.run(shutdown).await
}

/// The slot's confirmed position; a missing or invalidated slot is fatal.
async fn slot_position(sql: &Conn, slot: &str) -> Result<u64, RunError> {
    let q = "SELECT confirmed_flush_lsn::text, coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1";
    let row = sql.client.query_opt(q, &[&slot]).await?;
    let Some(row) = row else {
        return Err(RunError::SlotLost(format!(
            "replication slot {slot} does not exist; run `sluice setup` to create it"
        )));
    };
    let (position, status): (Option<String>, String) = (row.get(0), row.get(1));
    if status == "lost" {
        return Err(RunError::SlotLost(format!("replication slot {slot} was invalidated (its WAL is gone); recreate it on purpose and backfill")));
    }
    Ok(position.as_deref().and_then(lsn::parse).unwrap_or(0))
}

/// Opens the replication connection and starts streaming; waits as a standby while another
/// daemon holds the slot. `None` on shutdown.
async fn start(
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<ReplicationConn>, RunError> {
    let mut announced = false;
    loop {
        let mut repl =
            ReplicationConn::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
        match repl
            .start(&config.source.slot, &config.source.publication, 0)
            .await
        {
            Ok(()) => {
                if announced {
                    tracing::info!("took over as the active reader of the slot");
                }
                return Ok(Some(repl));
            }
            Err(ReplicationError::Server {
                code: Some(code), ..
            }) if code == "55006" => {
                crate::health::global().set_phase(crate::health::Phase::Standby);
                crate::health::global().turned();
                if !std::mem::replace(&mut announced, true) {
                    tracing::info!(slot = %config.source.slot, "standby: another sluice is streaming this slot; waiting to take over");
                }
            }
            Err(e) => return Err(e.into()),
        }
        if sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
            return Ok(None);
        }
    }
}

impl Stream<'_> {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let watchdog = self.config.source.heartbeat_interval * 2 + Duration::from_secs(5);
        loop {
            crate::health::global().turned();
            if self.flush_at.is_some() {
                self.linger(shutdown).await?;
            } else {
                let due = self.next_due();
                tokio::select! {
                    frame = self.repl.next_frame() => {
                        self.last_frame = Instant::now();
                        self.on_frame(frame?).await?;
                    }
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                self.flush(shutdown).await?;
                return self.send_status(false).await;
            }
            if self.last_frame.elapsed() > watchdog {
                return Err(RunError::ConnectionLost);
            }
            self.on_timers(shutdown).await?;
        }
    }

    /// While a Commit waits up to [`LINGER`] for company, takes only the frames that have
    /// already arrived and otherwise sleeps, then takes what arrived meanwhile. Waking for each
    /// message of a trickle of small transactions (Begin, row, Commit: three socket reads a
    /// change) cost more CPU than the whole rest of the path; this is one wake-up a batch.
    /// A flowing stream never sleeps here: there is always a frame waiting until the batch fills.
    async fn linger(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
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
    async fn take_arrived(&mut self) -> Result<(), RunError> {
        while self.pending.len() < self.config.source.batch_size {
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
            CONFIRM_EVERY.min(self.config.source.status_interval)
        } else {
            self.config.source.status_interval
        };
        self.status_at + interval
    }

    fn next_due(&self) -> Instant {
        let status = self.status_next();
        let heartbeat = self.heartbeat_at + self.config.source.heartbeat_interval;
        self.flush_at
            .map_or(status.min(heartbeat), |f| f.min(status).min(heartbeat))
    }

    async fn on_timers(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let now = Instant::now();
        if self.flush_at.is_some_and(|f| f <= now) {
            self.flush(shutdown).await?;
        }
        if now >= self.heartbeat_at + self.config.source.heartbeat_interval {
            self.heartbeat_at = now;
            let sql = "SELECT pg_logical_emit_message(false, $1, '')";
            self.sql.client.execute(sql, &[&HEARTBEAT_PREFIX]).await?;
            if self.config.source.keep_history {
                let pruned =
                    super::history::prune(&self.sql.client, self.config.source.retention).await?;
                if pruned > 0 {
                    tracing::debug!(pruned, "pruned history older than source.retention");
                }
            }
        }
        if now >= self.status_next() {
            self.send_status(false).await?;
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), RunError> {
        match frame {
            Frame::XLogData { data, end, .. } => {
                let message = Message::decode(&data)
                    .map_err(|e| RunError::Other(format!("undecodable pgoutput message: {e}")))?;
                self.on_message(message, end).await
            }
            Frame::Keepalive { end, reply, .. } => {
                self.confirm_if_idle(end);
                if reply {
                    self.send_status(false).await?;
                }
                Ok(())
            }
        }
    }

    async fn on_message(&mut self, message: Message, wal_end: u64) -> Result<(), RunError> {
        match message {
            Message::Begin(b) => self.txn = Some(Txn::new(b.final_lsn, b.xid, b.commit_ts)),
            Message::Commit(c) => {
                self.txn = None;
                self.pending_commit = Some(c.end_lsn);
                self.flush_at.get_or_insert_with(|| Instant::now() + LINGER);
            }
            Message::Relation(r) => self
                .schema
                .observe(&r, &self.sql.client)
                .await
                .map_err(convert_error)?,
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
        new: Option<&crate::source::pgoutput::TupleData>,
        old: Option<&crate::source::pgoutput::OldTuple>,
    ) -> Result<(), RunError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| RunError::Other("a change outside a transaction".into()))?;
        let table = self.schema.table(rel).map_err(convert_error)?;
        let change = convert::change(table, op, new, old, txn).map_err(convert_error)?;
        self.enqueue(change);
        Ok(())
    }

    /// A row `sluice backfill` emitted (see `snapshot`). A malformed one is logged and
    /// skipped rather than stopping the stream: it is no committed change, and a backfill
    /// can be run again.
    fn push_snapshot(&mut self, content: &[u8]) -> Result<(), RunError> {
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| RunError::Other("a snapshot message outside a transaction".into()))?;
        match snapshot::change(content, txn) {
            Ok(change) => self.enqueue(change),
            Err(why) => tracing::error!(%why, "skipping a backfill message"),
        }
        Ok(())
    }

    fn enqueue(&mut self, change: Change) {
        self.pending.push(change);
        if self.pending.len() >= self.config.source.batch_size {
            self.flush_at = Some(Instant::now());
        }
    }

    /// Publishes what is pending, stores its dead letters, then confirms the last Commit.
    async fn flush(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        self.flush_at = None;
        let mut dead = Vec::new();
        if !self.pending.is_empty() {
            metrics::histogram!(crate::telemetry::BATCH_SIZE).record(self.pending.len() as f64);
            let Some(done) = deliver(
                self.router,
                self.publisher,
                &self.pending,
                &self.config.delivery,
                shutdown,
            )
            .await
            else {
                return Err(RunError::ShutdownWhileRedisDown);
            };
            dead = done.dead;
            if self.config.source.keep_history {
                super::history::write(&self.sql.client, self.router, &self.pending).await?;
            }
            self.pending.clear();
        }
        let target = self
            .pending_commit
            .take()
            .unwrap_or(self.confirmed)
            .max(self.confirmed);
        if !dead.is_empty() {
            tracing::warn!(
                count = dead.len(),
                first_reason = dead[0].reason.as_str(),
                "events dead-lettered"
            );
            checkpoint::commit_position(
                &self.sql.client,
                &self.config.source.slot,
                &lsn::format(target),
                &dead,
            )
            .await?;
        }
        checkpoint::save_error(&self.sql.client, &self.config.source.slot).await?;
        self.confirmed = target;
        crate::health::global().update(|f| f.position = Some(lsn::format(target)));
        if self.status_at.elapsed() >= CONFIRM_EVERY {
            return self.send_status(false).await;
        }
        self.status_held = true;
        Ok(())
    }

    fn confirm_if_idle(&mut self, wal_end: u64) {
        if self.txn.is_none() && self.pending.is_empty() && self.pending_commit.is_none() {
            self.confirmed = self.confirmed.max(wal_end);
        }
    }

    async fn send_status(&mut self, reply: bool) -> Result<(), RunError> {
        self.status_at = Instant::now();
        self.status_held = false;
        let c = self.confirmed;
        self.repl
            .send_status(StandbyStatus {
                write: c,
                flush: c,
                apply: c,
                time: 0,
                reply,
            })
            .await?;
        crate::exporter::checkpointed();
        Ok(())
    }
}

fn convert_error(e: convert::ConvertError) -> RunError {
    RunError::Other(e.to_string())
}
