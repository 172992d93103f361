//! The replication connection, written on postgres-protocol: crates.io's tokio-postgres
//! cannot stream replication, and owning the connection lets Sluice decide exactly which
//! position every standby status update confirms.

pub mod conn;
pub mod hosts;
pub mod wire;

pub use conn::{ReplicationConn, ReplicationError};
pub use wire::{Frame, StandbyStatus};
