//! Logical mode: follow a replication slot with the `pgoutput` plugin.
//!
//! # What the source confirms to PostgreSQL, and when
//!
//! The slot's confirmed position is the only record of how far Sluice got: after a crash or a
//! restart, PostgreSQL streams again everything after it. The pipeline decides when a change is
//! done (`crate::pipeline` explains why: Redis acknowledged all its events, or they were stored
//! as dead letters); this source only reports it, in standby status updates:
//!
//! * Changes are handed over as they stream, in batches of `batch_size` (so a transaction of a
//!   million rows never sits in memory), but a transaction is confirmed only by its Commit: a
//!   batch's progress is the **end LSN of its last Commit**, or none when it ends inside a
//!   transaction. Confirming a Commit's start, or a position inside a transaction, would let
//!   PostgreSQL skip or re-send a part of it.
//! * The position sent is the pipeline's latest acknowledgement, and never moves backwards.
//!   An acknowledgement goes out at once, or 20 ms after the last status update when that was
//!   more recent: a trickle of small transactions is acknowledged every few ms, and one message
//!   each time cost a send and a walsender wake-up for a position the next one covers anyway.
//!   A clean shutdown waits for the batch in flight and confirms it before it closes the stream.
//! * Status updates also go out on a timer (`status_interval`, shortened to a third of the
//!   server's `wal_sender_timeout` when that is shorter) and whenever a keepalive asks, also
//!   while the pipeline waits on Redis and this source has stopped reading: they repeat the old
//!   position, which keeps the walsender from timing us out without claiming anything new.
//! * When nothing is in flight (no open transaction, nothing unacknowledged), the WAL end that
//!   a keepalive or a heartbeat reports is confirmed too: it holds no change of ours, and an
//!   idle slot must not pin WAL. A `pg_logical_emit_message` heartbeat every
//!   `heartbeat_interval` gives the stream something to report when only unpublished tables
//!   change, and lets a watchdog reconnect a connection that has been silent for twice that long.
//!
//! After a restart, duplicates can only come from the unconfirmed tail: the changes after the
//! last confirmed Commit, which keep their `eventId` (commit LSN and index in the transaction).

pub mod convert;
pub mod failover;
pub mod snapshot;
mod start;
mod stream;
mod types;

pub use start::open;
pub use stream::LogicalSource;
