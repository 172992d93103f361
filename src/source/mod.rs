//! Sources of changes. A source only reads: it turns what PostgreSQL committed into batches of
//! [`Change`]s, each with the [`Progress`] that becomes true once the batch is delivered, and
//! hands them over a bounded channel to the pipeline (`crate::pipeline`), which publishes
//! them, stores dead letters and progress, and (logical mode) tells the source how far it may
//! confirm. A source never writes progress, never publishes, and imports nothing of the
//! stages after it. While the pipeline waits (Redis away), the channel stays full and the
//! source stops reading; the logical source keeps its replication connection alive meanwhile.
//!
//! [`logical`] follows a replication slot ([`replication`] is the connection, [`pgoutput`]
//! decodes its messages, [`values`] turns column text into `to_jsonb`'s JSON);
//! [`change_log`] reads the rows the `sluice.capture()` trigger wrote.

pub mod change_log;
pub mod logical;
pub mod lsn;
pub mod pgoutput;
pub mod replication;
pub mod values;

use std::time::Duration;

use crate::event::Change;
use crate::pg::PgError;

/// Changes read together, and how far the source has got once they are delivered.
#[derive(Debug)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub progress: Progress,
    /// Trigger mode: the stored progress a re-read of this batch would start from. The
    /// publisher keeps, per channel, what it published since that origin, so a batch read
    /// again after a crash is not published twice (see `publish::recoverable`).
    pub origin: Option<String>,
}

/// What a delivered batch lets the source's progress move to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Logical mode: the end LSN of the last Commit in the batch; `None` when the batch ends
    /// inside a transaction (a transaction is confirmed only by its Commit).
    Slot(Option<u64>),
    /// Trigger mode: the snapshot progress through the batch's last row.
    ChangeLog(change_log::Progress),
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Replication(#[from] replication::ReplicationError),
    #[error(transparent)]
    ChangeLog(#[from] change_log::ChangeLogError),
    #[error("undecodable pgoutput message: {0}")]
    Decode(#[from] pgoutput::DecodeError),
    #[error(transparent)]
    Convert(#[from] logical::convert::ConvertError),
    #[error("replication slot {0} does not exist")]
    SlotMissing(String),
    #[error("replication slot {0} was invalidated (its WAL is gone)")]
    SlotInvalidated(String),
    #[error("the replication stream was silent for {0:?}")]
    Silent(Duration),
    #[error("pgoutput sent {0} outside a transaction")]
    OutsideTransaction(&'static str),
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(e: tokio_postgres::Error) -> Self {
        SourceError::Postgres(PgError::Postgres(e))
    }
}
