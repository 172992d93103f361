//! Logical mode: follow a replication slot with the `pgoutput` plugin.
//!
//! # When progress may be confirmed to PostgreSQL, and why
//!
//! The slot's confirmed position is the only record of how far Sluice got: after a crash or a
//! restart, PostgreSQL streams again everything after it. So it may cover a change only once
//! nothing more needs to happen for that change, that is once Redis acknowledged the publish of
//! every event it produced, or they were written to `sluice.dead_letter`:
//!
//! * Changes are published as they stream, in batches of `batch_size` (so a transaction of a
//!   million rows never sits in memory), but a transaction is confirmed only by its Commit.
//!   The position Sluice sends is the **end LSN of the last Commit whose batch Redis fully
//!   acknowledged**. Confirming a Commit's start, or a position inside a transaction, would let
//!   PostgreSQL skip or re-send a part of it; confirming a later Commit than the acknowledged
//!   one would lose what Redis has not taken.
//! * Dead letters of a batch are inserted (with the checkpoint row) *before* the position moves
//!   past them, so a crash between the two replays them rather than losing them.
//! * The position never moves backwards: it only ever takes the maximum.
//! * A delivered batch is confirmed at once, or, when the last status went out less than 20 ms
//!   ago, 20 ms after it: a trickle of small transactions flushes every few ms, and one message
//!   each time cost a send and a walsender wake-up for a position the next one covers anyway.
//!   A clean shutdown confirms what it delivered before it closes the stream.
//! * Status updates go out on a timer (`status_interval`) and whenever a keepalive asks for one,
//!   even while Redis is slow: they then repeat the old position, which keeps the walsender from
//!   timing us out without claiming anything new.
//! * When nothing is in flight (no open transaction, nothing unpublished), the WAL end that a
//!   keepalive or a heartbeat reports is confirmed too: it holds no change of ours, and an idle
//!   slot must not pin WAL. A `pg_logical_emit_message` heartbeat every `heartbeat_interval`
//!   gives the stream something to report when only unpublished tables change, and lets a
//!   watchdog reconnect a connection that has been silent for twice that long.
//!
//! After a restart, duplicates can only come from the unconfirmed tail: the changes after the
//! last confirmed Commit, which keep their `eventId` (commit LSN and index in the transaction).

pub mod convert;
pub mod history;
mod session;
pub mod snapshot;

pub use session::session;
