//! Sources of changes. Each yields batches of [`crate::event::Change`] together with the
//! progress that becomes true once the batch is delivered; the daemon stores that progress
//! only after Redis acknowledged every event of the batch (or it was dead-lettered).

pub mod change_log;
pub mod logical;
pub mod lsn;
pub mod pgoutput;
pub mod replication;
pub mod values;
