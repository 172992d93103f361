//! Ordinary SQL connections to PostgreSQL (tokio-postgres), with a connect timeout and
//! LISTEN/NOTIFY notifications forwarded to a [`Notify`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
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
    let (client, mut connection) = tokio::time::timeout(timeout, tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| PgError::Timeout(timeout))??;
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

/// A URL safe to log: the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("redis://:pw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=x password=y"), "host=x password=y");
    }
}
