//! One place that sorts every failure into what the daemon does about it.
//!
//! * **transient**: a server is away, slow or busy; the session ends, the daemon keeps
//!   answering its probes (with the reason on `/readyz`), and a new session starts after a
//!   backoff. Nothing was confirmed that was not delivered, so nothing is lost.
//! * **per event**: this one change cannot be delivered (no route, no tenant, an unsafe
//!   tenant or id, a value that cannot be converted, a payload too large, a rejection by
//!   Redis). Those are decided where the change is in hand ([`crate::route`],
//!   [`crate::deliver`]) as a [`crate::dead_letter::Reason`]; the change is parked in
//!   `sluice.dead_letter` and the rest flow on, so they never reach this function.
//! * **fatal**: retrying cannot help (bad credentials, the schema or slot missing); the daemon
//!   exits non-zero with a hint for the operator.

use tokio_postgres::error::SqlState;

use crate::pg::PgError;
use crate::pipeline::PipelineError;
use crate::publish::PublishError;
use crate::source::change_log::ChangeLogError;
use crate::source::replication::ReplicationError;
use crate::source::SourceError;

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Transient,
    Fatal { hint: &'static str },
}

/// Everything that can end a session of the daemon, or the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(PgError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The source's task panicked: a bug, not a server's state.
    #[error("the source stopped unexpectedly: {0}")]
    SourceTask(#[from] tokio::task::JoinError),
}

impl RunError {
    /// The replication slot is missing or invalidated: never recreated silently.
    pub fn is_slot_lost(&self) -> bool {
        matches!(
            self,
            RunError::Source(SourceError::SlotMissing(_) | SourceError::SlotInvalidated(_))
        )
    }

    /// Which server a transient failure is about, for `/readyz`.
    pub fn server(&self) -> &'static str {
        match self {
            RunError::Publish(_) => "redis",
            _ => "postgres",
        }
    }
}

/// Sorts a failure.
pub fn classify(e: &RunError) -> Class {
    match e {
        RunError::Connect(e)
        | RunError::Pipeline(PipelineError::Checkpoint(e) | PipelineError::History(e)) => {
            classify_pg_error(e)
        }
        RunError::Source(e) => classify_source(e),
        RunError::Publish(PublishError::Unavailable(_)) => Class::Transient,
        RunError::Publish(_) => fatal("fix redis.url (or REDIS_URL) and the [redis] TLS settings"),
        RunError::Http(_) => fatal("fix http.listen: another process may hold the port"),
        RunError::SourceTask(_) => fatal("this is a bug in sluice; please report it with the log"),
    }
}

/// The exit status for a fatal error: 3 when the slot is lost, so an orchestrator can tell.
pub fn exit_code(e: &RunError) -> u8 {
    if e.is_slot_lost() {
        3
    } else {
        1
    }
}

fn classify_source(e: &SourceError) -> Class {
    use crate::source::logical::convert::ConvertError;
    match e {
        SourceError::Postgres(e) | SourceError::ChangeLog(ChangeLogError::Postgres(e)) => classify_pg_error(e),
        SourceError::Replication(e) => classify_replication(e),
        SourceError::Convert(ConvertError::Type { source, .. }) => classify_pg(source),
        // the stream went silent or out of order: a new session starts from the slot
        SourceError::Silent(_) | SourceError::OutsideTransaction(_) | SourceError::Decode(_) => Class::Transient,
        SourceError::Convert(ConvertError::UnknownRelation(_)) | SourceError::ChangeLog(ChangeLogError::ConnectionLost) => Class::Transient,
        SourceError::ChangeLog(ChangeLogError::NotSetUp) => fatal("run `sluice setup` to create the SQL objects"),
        SourceError::ChangeLog(ChangeLogError::Malformed { .. }) => {
            fatal("a row of sluice.change_log was not written by sluice.capture(); fix or delete it")
        }
        SourceError::SlotMissing(_) | SourceError::SlotInvalidated(_) => {
            fatal("`sluice setup --recreate-slot` makes a new slot on purpose; then backfill what was missed")
        }
    }
}

fn classify_replication(e: &ReplicationError) -> Class {
    use ReplicationError as R;
    match e {
        R::Io(_)
        | R::Unreachable { .. }
        | R::Timeout(_)
        | R::Protocol(_)
        | R::Ended
        | R::SessionAttrs { .. } => Class::Transient,
        R::Url(_) | R::Tls(_) => {
            fatal("fix postgres.url and its TLS settings (sslmode, sslrootcert, sslcert)")
        }
        R::UnixSocket => {
            fatal("give postgres.url a TCP host: the replication connection needs one")
        }
        R::AuthMethod(_) => {
            fatal("allow scram-sha-256, md5 or password for this role in pg_hba.conf")
        }
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

fn fatal(hint: &'static str) -> Class {
    Class::Fatal { hint }
}

/// Sorts a failure of a PostgreSQL connection or statement.
pub fn classify_pg_error(e: &PgError) -> Class {
    match e {
        PgError::Timeout(_) => Class::Transient,
        PgError::Tls(_) => fatal("fix the TLS settings of postgres.url (sslmode, sslrootcert)"),
        PgError::NoPassword => {
            fatal("give the role's password (postgres.url, PGPASSWORD or ~/.pgpass)")
        }
        PgError::Postgres(e) => classify_pg(e),
    }
}

fn classify_pg(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        return Class::Transient; // I/O: connection refused, reset, closed
    };
    let class = &code.code()[..2];
    // connection, shutdown or a statement cancelled by its timeout, resources, serialization
    if matches!(class, "08" | "57" | "53" | "40") || *code == SqlState::from_code("57014") {
        return Class::Transient;
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
    use crate::publish::Unavailable;

    #[test]
    fn sorts_source_and_publish_failures() {
        let t = std::time::Duration::from_secs(1);
        assert_eq!(
            classify(&RunError::Publish(PublishError::Unavailable(
                Unavailable::Replica
            ))),
            Class::Transient
        );
        assert_eq!(
            classify(&SourceError::ChangeLog(ChangeLogError::NotSetUp).into()),
            fatal("run `sluice setup` to create the SQL objects")
        );
        assert_eq!(
            classify(&RunError::Connect(PgError::Timeout(t))),
            Class::Transient
        );
        assert_eq!(classify(&SourceError::Silent(t).into()), Class::Transient);
        let lost = RunError::from(SourceError::SlotInvalidated("s".into()));
        assert!(matches!(classify(&lost), Class::Fatal { .. }));
        assert_eq!(exit_code(&lost), 3);
        let io = ReplicationError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            classify(&SourceError::Replication(io).into()),
            Class::Transient
        );
    }
}
