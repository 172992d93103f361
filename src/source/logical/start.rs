//! Opening the stream: the slot's position (a missing or invalidated slot is fatal), the
//! walsender's timeout, and `START_REPLICATION`, waiting as a standby while another daemon
//! streams the slot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::stream::{LogicalSource, Settings};
use crate::config::Config;
use crate::health::{Health, Phase};
use crate::pg::Conn;
use crate::source::lsn;
use crate::source::replication::{ReplicationConn, ReplicationError};
use crate::source::SourceError;

/// SQLSTATE `object_in_use`: another walsender holds the slot.
const SLOT_IN_USE: &str = "55006";

/// A started stream and what the loop needs to know about it.
pub struct Started {
    pub repl: ReplicationConn,
    pub confirmed: u64,
    /// The server's `wal_sender_timeout` (`None` when it could not be read).
    pub sender_timeout: Option<Duration>,
}

/// Starts streaming the configured slot; `None` on shutdown while standing by.
pub async fn open(
    config: &Config,
    sql: Arc<Conn>,
    health: Arc<Health>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<LogicalSource>, SourceError> {
    let slot = &config.source.slot;
    let confirmed = slot_position(&sql, slot).await?;
    let mut announced = false;
    loop {
        let mut repl =
            ReplicationConn::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
        let sender_timeout = sender_timeout(&mut repl).await?;
        match repl.start(slot, &config.source.publication, 0).await {
            Ok(()) => {
                if announced {
                    tracing::info!("took over as the active reader of the slot");
                }
                tracing::info!(slot = %slot, position = %lsn::format(confirmed), "connected to PostgreSQL; streaming from the slot");
                let started = Started {
                    repl,
                    confirmed,
                    sender_timeout,
                };
                let settings = Settings {
                    batch_size: config.source.batch_size,
                    status_interval: config.source.status_interval,
                    heartbeat_interval: config.source.heartbeat_interval,
                };
                return Ok(Some(LogicalSource::new(settings, sql, started, health)));
            }
            Err(ReplicationError::Server {
                code: Some(code), ..
            }) if code == SLOT_IN_USE => {
                health.set_phase(Phase::Standby);
                health.turned();
                if !std::mem::replace(&mut announced, true) {
                    tracing::info!(slot = %slot, "standby: another sluice is streaming this slot; waiting to take over");
                }
            }
            Err(e) => return Err(e.into()),
        }
        if crate::shutdown::sleep_or_shutdown(Duration::from_secs(1), shutdown).await {
            return Ok(None);
        }
    }
}

/// The slot's confirmed position; a missing or invalidated slot is fatal.
async fn slot_position(sql: &Conn, slot: &str) -> Result<u64, SourceError> {
    let q = "SELECT confirmed_flush_lsn::text, coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1";
    let Some(row) = sql.bounded(sql.client.query_opt(q, &[&slot])).await? else {
        return Err(SourceError::SlotMissing(slot.to_string()));
    };
    let (position, status): (Option<String>, String) = (row.get(0), row.get(1));
    if status == "lost" {
        return Err(SourceError::SlotInvalidated(slot.to_string()));
    }
    Ok(position.as_deref().and_then(lsn::parse).unwrap_or(0))
}

/// `SHOW wal_sender_timeout` on the replication connection itself (a role or database may set
/// its own); `None` if the answer cannot be read.
async fn sender_timeout(repl: &mut ReplicationConn) -> Result<Option<Duration>, SourceError> {
    let rows = repl.simple_query("SHOW wal_sender_timeout").await?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_deref())
        .and_then(parse_setting_duration))
}

/// A PostgreSQL time setting as `SHOW` prints it: `60s`, `1min`, `500ms`, `2h`, `0`.
fn parse_setting_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.saturating_mul(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_show_prints_them() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("60s", ms(60_000)),
            ("1min", ms(60_000)),
            ("500ms", ms(500)),
            ("2h", ms(7_200_000)),
            ("0", ms(0)),
        ] {
            assert_eq!(parse_setting_duration(text), Some(want), "{text}");
        }
        assert_eq!(parse_setting_duration("soon"), None);
    }
}
