//! Source progress in `sluice.checkpoint`, written in the same statement as the batch's dead
//! letters so that moving past a change and parking its undeliverable events are one act.

use tokio_postgres::{Client, Statement};

use crate::dead_letter::{Columns, DeadLetter, INSERT_BATCH};

/// The checkpoint row of trigger mode.
pub const CHANGE_LOG: &str = "change_log";

/// Trigger-mode progress (see `sql/002_change_log.sql` for the reasoning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Rows of transactions visible in this snapshot are all done.
    pub done: String,
    /// The round in progress: its snapshot and the last id published in it.
    pub round: Option<(String, i64)>,
}

impl Progress {
    /// A one-line summary for `position`, logs and status.
    pub fn position(&self) -> String {
        match &self.round {
            None => format!("snapshot {}", self.done),
            Some((round, after)) => format!("snapshot {} + round {round} through id {after}", self.done),
        }
    }
}

const LOAD: &str = "SELECT done::text, round::text, round_after FROM sluice.checkpoint WHERE name = $1";

const UPDATE: &str = "UPDATE sluice.checkpoint SET position = $2, done = $3::text::pg_snapshot, \
    round = $4::text::pg_snapshot, round_after = $5, updated_at = now() WHERE name = $1";

/// [`UPDATE`] with its parameters numbered after the nine of the dead-letter insert.
const UPDATE_AFTER_DEAD_LETTERS: &str = "UPDATE sluice.checkpoint SET position = $11, done = $12::text::pg_snapshot, \
    round = $13::text::pg_snapshot, round_after = $14, updated_at = now() WHERE name = $10";

/// Reads the progress of `name`; `None` when the row is missing (setup has not run).
pub async fn load(client: &Client, name: &str) -> Result<Option<Progress>, tokio_postgres::Error> {
    let row = client.query_opt(LOAD, &[&name]).await?;
    Ok(row.map(|r| Progress {
        done: r.get::<_, Option<String>>(0).unwrap_or_else(|| "1:1:".into()),
        round: r.get::<_, Option<String>>(1).map(|s| (s, r.get::<_, Option<i64>>(2).unwrap_or(0))),
    }))
}

/// Prepares [`commit`]'s statement for the common case of a batch without dead letters: the
/// trigger loop stores progress after every batch, and a prepared statement is one round
/// trip where an unprepared one is two.
pub async fn prepare_update(client: &Client) -> Result<Statement, tokio_postgres::Error> {
    client.prepare(UPDATE).await
}

/// Stores `progress` and inserts `dead` in one statement; `update` is [`prepare_update`]'s.
pub async fn commit(client: &Client, update: &Statement, name: &str, progress: &Progress, dead: &[DeadLetter]) -> Result<(), tokio_postgres::Error> {
    let position = progress.position();
    let (round, after) = match &progress.round {
        Some((s, id)) => (Some(s.as_str()), Some(*id)),
        None => (None, None),
    };
    if dead.is_empty() {
        client.execute(update, &[&name, &position, &progress.done, &round, &after]).await?;
        return Ok(());
    }
    let c = Columns::from_letters(dead);
    let sql = format!("WITH dl AS ({INSERT_BATCH}) {UPDATE_AFTER_DEAD_LETTERS}");
    client
        .execute(
            sql.as_str(),
            &[
                &c.event_id, &c.channel, &c.app, &c.tenant, &c.table, &c.payload, &c.reason, &c.error, &c.attempts,
                &name, &position, &progress.done, &round, &after,
            ],
        )
        .await?;
    Ok(())
}

const SET_POSITION: &str = "UPDATE sluice.checkpoint SET position = $2, updated_at = now() WHERE name = $1";
const SET_POSITION_AFTER_DEAD_LETTERS: &str = "UPDATE sluice.checkpoint SET position = $11, updated_at = now() WHERE name = $10";

/// Logical mode: stores a position (an LSN) and inserts `dead` in one statement.
pub async fn commit_position(client: &Client, name: &str, position: &str, dead: &[DeadLetter]) -> Result<(), tokio_postgres::Error> {
    if dead.is_empty() {
        client.execute(SET_POSITION, &[&name, &position]).await?;
        return Ok(());
    }
    let c = Columns::from_letters(dead);
    let sql = format!("WITH dl AS ({INSERT_BATCH}) {SET_POSITION_AFTER_DEAD_LETTERS}");
    client
        .execute(
            sql.as_str(),
            &[&c.event_id, &c.channel, &c.app, &c.tenant, &c.table, &c.payload, &c.reason, &c.error, &c.attempts, &name, &position],
        )
        .await?;
    Ok(())
}

const SAVE_ERROR: &str = "UPDATE sluice.checkpoint SET last_error = $2, last_error_at = $3::text::timestamptz WHERE name = $1";

/// Stores the daemon's last error in the checkpoint row `name`, if there is a new one: a check
/// of an atomic flag otherwise, so it may be called after every batch.
pub async fn save_error(client: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    let health = crate::health::global();
    if let Some((text, at)) = health.unsaved_error() {
        client.execute(SAVE_ERROR, &[&name, &crate::redact::text(&text, &[]), &at]).await?;
        health.mark_error_saved();
    }
    Ok(())
}
