//! Ordinary SQL connections to PostgreSQL (tokio-postgres), with a connect timeout, TLS as
//! `postgres.url`'s libpq `sslmode` asks ([`crate::tls::postgres`]), and LISTEN/NOTIFY
//! notifications forwarded to a [`Notify`].
//!
//! The daemon's connections ([`connect_daemon`]) also bound every statement: a server that
//! stops answering with the socket still open (a network partition drops packets, it sends no
//! reset) would otherwise hold the work loop inside one call forever. Each statement is given
//! `postgres.query_timeout` ([`Conn::bounded`]), the server is told the same
//! (`statement_timeout`), and the kernel gives up on unacknowledged data after it too
//! (`TCP_USER_TIMEOUT`, with keepalives for an idle socket), so the loop notices, says so in
//! the log, and reconnects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use crate::tls::{self, postgres::MakeRustls};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The URL's TLS settings, or the TLS handshake, failed: one line that names the fix.
    #[error("{0}")]
    Tls(String),
    /// The server asks for a password and neither the URL, `PGPASSWORD` nor the password file
    /// gave one (tokio-postgres says only "password missing").
    #[error("PostgreSQL asks for a password and none was given: put it in postgres.url, set PGPASSWORD, or add a line for this server to the password file (PGPASSFILE, else ~/.pgpass)")]
    NoPassword,
}

/// A tokio-postgres error in one line, with the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// A connected client; `notified` fires on every NOTIFY the session LISTENs to.
pub struct Conn {
    pub client: Client,
    pub notified: Arc<Notify>,
    /// How long [`Conn::bounded`] lets a statement take.
    pub timeout: Duration,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// True once the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Awaits a statement for at most [`Conn::timeout`].
    pub async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match tokio::time::timeout(self.timeout, statement).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PgError::Timeout(self.timeout)),
        }
    }
}

/// A daemon connection: every statement bounded by `query_timeout`, on the server
/// (`statement_timeout`), in [`Conn::bounded`] and in the kernel (`TCP_USER_TIMEOUT`).
pub async fn connect_daemon(
    url: &str,
    connect_timeout: Duration,
    query_timeout: Duration,
) -> Result<Conn, PgError> {
    let mut conn = open(url, connect_timeout, Some(query_timeout)).await?;
    conn.timeout = query_timeout;
    let millis = query_timeout.as_millis().max(1);
    conn.bounded(
        conn.client
            .batch_execute(&format!("SET statement_timeout = {millis}")),
    )
    .await?;
    Ok(conn)
}

/// How long a command's statement may take before the connection is given up ([`Conn::bounded`]).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Connects, giving up after `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Conn, PgError> {
    open(url, timeout, None).await
}

async fn open(
    url: &str,
    timeout: Duration,
    user_timeout: Option<Duration>,
) -> Result<Conn, PgError> {
    let (mut config, tls) = tls::postgres::config(url).map_err(|e| PgError::Tls(e.to_string()))?;
    // A peer that vanished is noticed on an idle socket within about 25 s, and (for the
    // daemon) on a busy one once data stays unacknowledged for `user_timeout`.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    if let Some(t) = user_timeout {
        config.tcp_user_timeout(t);
    }
    let connector = MakeRustls::new(&tls).map_err(|e| PgError::Tls(e.to_string()))?;
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(connector))
        .await
        .map_err(|_| PgError::Timeout(timeout))?
        .map_err(connect_error)?;
    let notified = Arc::new(Notify::new());
    let wake = notified.clone();
    let task = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "postgres connection closed");
                    break;
                }
            }
        }
        wake.notify_one();
    });
    let conn = Conn {
        client,
        notified,
        timeout: COMMAND_TIMEOUT,
        task,
    };
    conn.bounded(conn.client.batch_execute(RAW_TEXT_ON_SQL_ASCII))
        .await?;
    Ok(conn)
}

/// A `SQL_ASCII` database stores any bytes, and PostgreSQL refuses to send one that is not
/// UTF-8 to a UTF-8 client (SQLSTATE 22021), which would stop the whole batch around it. So
/// on such a database the connection takes the bytes as they are: the readers turn invalid
/// UTF-8 into a per-change fault (dead letter `unconvertible_value`), never a failed statement.
const RAW_TEXT_ON_SQL_ASCII: &str = "SELECT set_config('client_encoding', 'SQL_ASCII', false) \
    WHERE current_setting('server_encoding') = 'SQL_ASCII'";

/// A TLS failure becomes its one-line explanation, a missing password says where one may
/// come from; anything else stays a tokio-postgres error.
fn connect_error(e: tokio_postgres::Error) -> PgError {
    if e.code().is_none() && describe(&e).ends_with("password missing") {
        return PgError::NoPassword;
    }
    if let Some(text) = tls::explain(&e, tls::Server::Postgres) {
        return PgError::Tls(text);
    }
    match std::error::Error::source(&e).map(|s| s.to_string()) {
        Some(s) if s.contains("server does not support TLS") => {
            PgError::Tls("PostgreSQL does not accept TLS connections, but postgres.url asks for it (sslmode): turn ssl on in postgresql.conf, or lower sslmode".into())
        }
        _ => PgError::Postgres(e),
    }
}
