//! `sluice status [--json]`: where the source stands, read from PostgreSQL itself.
//!
//! The operator asks "how far behind is it, what is parked, what went wrong" most urgently
//! when the daemon is down or restarting in a loop, so every fact here comes from the database,
//! not from the daemon: the slot (logical) or the checkpoint row and the pending view (trigger),
//! the open dead letters, and the last error the daemon stored in `sluice.checkpoint`. Only the
//! daemon's own phase, readiness and uptime need the daemon; they are asked of its HTTP
//! endpoint with a one-second limit ([`daemon`]), and a daemon that does not answer is a fact
//! to report, not an error.

mod daemon;
mod render;

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, SourceMode};
use crate::pg;
use crate::source::change_log::CHANGE_LOG;

pub use daemon::Daemon;
pub use render::{bytes, seconds};

/// Everything `status` reports; `--json` prints it as one object, every key always present
/// (`null` where the mode does not have the fact).
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    /// logical only: the replication slot.
    pub slot: Option<Slot>,
    /// logical: the slot's confirmed_flush_lsn; trigger: the checkpoint's snapshot summary.
    pub position: Option<String>,
    /// When the daemon last stored its position in `sluice.checkpoint` (RFC 3339, UTC).
    pub position_updated_at: Option<String>,
    #[serde(skip)]
    pub position_age_seconds: Option<f64>,
    /// The backend of the daemon streaming the slot (logical) or holding the change_log reader
    /// lock (trigger); `None` when no daemon is active.
    pub active_pid: Option<i32>,
    /// logical: WAL written but not yet confirmed by the slot.
    pub lag_bytes: Option<i64>,
    /// logical: WAL the slot keeps on the server.
    pub retained_wal_bytes: Option<i64>,
    /// trigger: change_log rows not yet published.
    pub pending: Option<i64>,
    pub oldest_pending_age_seconds: Option<f64>,
    pub dead_letters: DeadLetters,
    pub last_error: Option<LastError>,
    pub daemon: Daemon,
}

/// A logical replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Serialize)]
pub struct Slot {
    pub name: String,
    pub exists: bool,
    pub restart_lsn: Option<String>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL that may still be written before the slot is invalidated; `None` without
    /// `max_slot_wal_keep_size`.
    pub safe_wal_size_bytes: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
pub struct DeadLetters {
    pub open: i64,
    pub by_reason: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
pub struct LastError {
    pub message: String,
    pub at: Option<String>,
}

/// Timestamps as RFC 3339 UTC text, to the second.
macro_rules! utc {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        )
    };
}

/// The slot, and the WAL between it and the server's current position (the replay position
/// on a standby, where `pg_current_wal_lsn()` fails).
const SLOT: &str =
    "SELECT confirmed_flush_lsn::text, restart_lsn::text, active_pid, wal_status, safe_wal_size, \
    pg_wal_lsn_diff(w.lsn, confirmed_flush_lsn)::int8, pg_wal_lsn_diff(w.lsn, restart_lsn)::int8 \
    FROM pg_replication_slots, (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
    ELSE pg_current_wal_lsn() END AS lsn) w WHERE slot_name = $1";

const CHECKPOINT: &str = concat!(
    "SELECT position, ",
    utc!("updated_at"),
    ", extract(epoch FROM now() - updated_at)::float8, last_error, ",
    utc!("last_error_at"),
    " FROM sluice.checkpoint WHERE name = $1"
);

const PENDING: &str = "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM sluice.pending_changes";

const DEAD_LETTERS: &str = "SELECT reason, count(*) FROM sluice.dead_letter WHERE resolved_at IS NULL GROUP BY reason ORDER BY reason";

/// The backend holding the trigger-mode reader lock (`pg_try_advisory_lock` of
/// `source::change_log`): a bigint key shows as classid (high half), objid (low half), objsubid 1.
const READER: &str =
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
    AND ((classid::int8 << 32) | objid::int8) = hashtextextended('sluice.change_log', 0) LIMIT 1";

pub async fn run(config: &Config, json: bool) -> Result<ExitCode, String> {
    let conn = crate::recover::connect(config).await?;
    let (report, daemon) = tokio::join!(
        gather(&conn.client, config),
        daemon::probe(&config.http.listen)
    );
    let mut report = report.map_err(sql_error)?;
    report.daemon = daemon;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("status serialises")
        );
    } else {
        print!("{}", render::human(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every fact from PostgreSQL; the daemon's part is left unknown.
pub async fn gather(client: &Client, config: &Config) -> Result<Report, tokio_postgres::Error> {
    let mut report = Report {
        mode: config.source.mode.as_str(),
        slot: None,
        position: None,
        position_updated_at: None,
        position_age_seconds: None,
        active_pid: None,
        lag_bytes: None,
        retained_wal_bytes: None,
        pending: None,
        oldest_pending_age_seconds: None,
        dead_letters: dead_letters(client).await?,
        last_error: None,
        daemon: Daemon::unknown(&config.http.listen),
    };
    let checkpoint = match config.source.mode {
        SourceMode::Logical => {
            logical(client, &config.source.slot, &mut report).await?;
            config.source.slot.as_str()
        }
        SourceMode::Trigger => {
            trigger(client, &mut report).await?;
            CHANGE_LOG
        }
    };
    read_checkpoint(client, checkpoint, &mut report).await?;
    Ok(report)
}

async fn logical(
    client: &Client,
    name: &str,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client.query_opt(SLOT, &[&name]).await?;
    let mut slot = Slot {
        name: name.to_string(),
        exists: row.is_some(),
        restart_lsn: None,
        wal_status: None,
        safe_wal_size_bytes: None,
    };
    if let Some(r) = row {
        report.position = r.get(0);
        slot.restart_lsn = r.get(1);
        report.active_pid = r.get(2);
        slot.wal_status = r.get(3);
        slot.safe_wal_size_bytes = r.get(4);
        report.lag_bytes = r.get(5);
        report.retained_wal_bytes = r.get(6);
    }
    report.slot = Some(slot);
    Ok(())
}

async fn trigger(client: &Client, report: &mut Report) -> Result<(), tokio_postgres::Error> {
    let row = client.query_one(PENDING, &[]).await?;
    report.pending = Some(row.get(0));
    report.oldest_pending_age_seconds = row.get(1);
    report.active_pid = change_log_reader(client).await?;
    Ok(())
}

/// The pid of the daemon reading the change_log (trigger mode), if one is.
pub async fn change_log_reader(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    Ok(client.query_opt(READER, &[]).await?.map(|r| r.get(0)))
}

async fn read_checkpoint(
    client: &Client,
    name: &str,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let Some(row) = client.query_opt(CHECKPOINT, &[&name]).await? else {
        return Ok(());
    };
    if report.mode == "trigger" {
        report.position = row.get(0);
    }
    report.position_updated_at = row.get(1);
    report.position_age_seconds = row.get(2);
    report.last_error = row.get::<_, Option<String>>(3).map(|message| LastError {
        message,
        at: row.get(4),
    });
    Ok(())
}

async fn dead_letters(client: &Client) -> Result<DeadLetters, tokio_postgres::Error> {
    let mut out = DeadLetters::default();
    for row in client.query(DEAD_LETTERS, &[]).await? {
        let n: i64 = row.get(1);
        out.open += n;
        out.by_reason.insert(row.get(0), n);
    }
    Ok(out)
}

/// A failed read in one sentence; a missing or old schema says to run setup.
pub fn sql_error(e: tokio_postgres::Error) -> String {
    let missing = e
        .code()
        .is_some_and(|c| matches!(c.code(), "42P01" | "42703" | "42883" | "3F000"));
    if missing {
        return format!(
            "{}; the sluice schema is missing or outdated in this database: run `sluice setup`",
            pg::describe(&e)
        );
    }
    format!(
        "cannot read the status from PostgreSQL: {}",
        pg::describe(&e)
    )
}
