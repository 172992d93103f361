//! One place that sorts every failure into what the daemon does about it.
//!
//! * transient: the server is away or busy; retry with backoff, hold the changes meanwhile.
//! * permanent: this event cannot be delivered; dead-letter it and go on (see `route`,
//!   `publish`: those are decided per event and never reach this function).
//! * fatal: retrying cannot help; exit non-zero with a hint for the operator.

use tokio_postgres::error::SqlState;

use crate::pg::PgError;
use crate::publish::PublishError;
use crate::source::change_log::ChangeLogError;

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Transient,
    Fatal { hint: String },
}

/// Everything that can stop the daemon's loop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    ChangeLog(#[from] ChangeLogError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Replication(#[from] crate::source::replication::ReplicationError),
    #[error("the PostgreSQL connection was lost")]
    ConnectionLost,
    /// The replication slot is missing or invalidated: never recreated silently.
    #[error("{0}")]
    SlotLost(String),
    /// Shutdown was asked while Redis was down: stop without confirming the batch.
    #[error("stopped while Redis was unavailable")]
    ShutdownWhileRedisDown,
    #[error("{0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for RunError {
    fn from(e: tokio_postgres::Error) -> Self {
        RunError::Pg(PgError::Postgres(e))
    }
}

/// Sorts a failure.
pub fn classify(e: &RunError) -> Class {
    match e {
        RunError::Pg(PgError::Timeout(_) | PgError::Tls(_)) => Class::Transient,
        RunError::Pg(PgError::Postgres(e)) | RunError::ChangeLog(ChangeLogError::Postgres(e)) => classify_pg(e),
        RunError::ChangeLog(ChangeLogError::NotSetUp) => fatal("run `sluice setup` to create the SQL objects"),
        RunError::ChangeLog(ChangeLogError::Malformed { .. }) => {
            fatal("a row of sluice.change_log was not written by sluice.capture(); fix or delete it")
        }
        RunError::Publish(PublishError::Unavailable(_)) | RunError::ConnectionLost | RunError::ShutdownWhileRedisDown => Class::Transient,
        RunError::Replication(e) => classify_replication(e),
        RunError::SlotLost(_) => fatal("`sluice setup --recreate-slot` makes a new slot on purpose; then backfill what was missed"),
        RunError::Publish(PublishError::BadUrl(_)) => fatal("fix redis.url (or REDIS_URL)"),
        RunError::Other(_) => fatal("see the message above"),
    }
}

/// The exit status for a fatal error: 3 when the slot is lost, so an orchestrator can tell.
pub fn exit_code(e: &RunError) -> u8 {
    match e {
        RunError::SlotLost(_) => 3,
        _ => 1,
    }
}

fn classify_replication(e: &crate::source::replication::ReplicationError) -> Class {
    use crate::source::replication::ReplicationError as R;
    match e {
        R::Io(_) | R::Connect(_) | R::Protocol(_) => Class::Transient,
        R::Server {
            code: Some(code), ..
        } if matches!(&code[..2], "08" | "57" | "53") => Class::Transient,
        R::Server {
            code: Some(code), ..
        } if code.starts_with("28") => fatal(
            "PostgreSQL rejected the credentials in postgres.url, or the role lacks REPLICATION",
        ),
        R::Server {
            code: Some(code), ..
        } if code == "42501" => fatal("the role in postgres.url needs the REPLICATION attribute"),
        R::Server { .. } => fatal("PostgreSQL refused the replication stream; see the message"),
    }
}

fn fatal(hint: &str) -> Class {
    Class::Fatal {
        hint: hint.to_string(),
    }
}

fn classify_pg(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        return Class::Transient; // I/O: connection refused, reset, closed
    };
    let class = &code.code()[..2];
    if matches!(class, "08" | "57" | "53" | "40") && *code != SqlState::from_code("57014") {
        return Class::Transient; // connection, shutdown, resources, serialization
    }
    match code.code() {
        "42P01" | "42883" | "3F000" => {
            fatal("the sluice schema is missing or outdated: run `sluice setup`")
        }
        "42501" => {
            fatal("the PostgreSQL role lacks a privilege: grant it or run as the table owner")
        }
        "28P01" | "28000" => {
            fatal("PostgreSQL rejected the credentials in postgres.url (or DATABASE_URL)")
        }
        "3D000" => fatal("the database in postgres.url does not exist"),
        _ => fatal("PostgreSQL rejected a statement; see the message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_source_and_publish_failures() {
        assert_eq!(
            classify(&RunError::Publish(PublishError::Unavailable("down".into()))),
            Class::Transient
        );
        assert!(matches!(
            classify(&RunError::ChangeLog(ChangeLogError::NotSetUp)),
            Class::Fatal { .. }
        ));
        let t = std::time::Duration::from_secs(1);
        assert_eq!(
            classify(&RunError::Pg(PgError::Timeout(t))),
            Class::Transient
        );
    }
}
