//! Ordinary SQL connections to PostgreSQL (tokio-postgres), with a connect timeout, TLS as
//! `postgres.url`'s libpq `sslmode` asks ([`crate::tls::postgres`]), and LISTEN/NOTIFY
//! notifications forwarded to a [`Notify`].

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
}

/// Connects, giving up after `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Conn, PgError> {
    let (config, tls) = tls::postgres::config(url).map_err(PgError::Tls)?;
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
    Ok(Conn { client, notified, task })
}

/// A TLS failure becomes its one-line explanation; anything else stays a tokio-postgres error.
fn connect_error(e: tokio_postgres::Error) -> PgError {
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
