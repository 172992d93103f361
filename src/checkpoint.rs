//! Source progress in `sluice.checkpoint`, written in the same statement as the batch's dead
//! letters so that moving past a change and parking its undeliverable events are one act; and
//! the retention of processed change_log rows, which only stored progress may decide.

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::dead_letter::{Columns, DeadLetter, INSERT_BATCH};
use crate::health::Health;
use crate::source::change_log::Progress;

const UPDATE: &str = "UPDATE sluice.checkpoint SET position = $2, done = $3::text::pg_snapshot, \
    round = $4::text::pg_snapshot, round_after = $5, updated_at = now() WHERE name = $1";

/// [`UPDATE`] with its parameters numbered after the nine of the dead-letter insert.
const UPDATE_AFTER_DEAD_LETTERS: &str =
    "UPDATE sluice.checkpoint SET position = $11, done = $12::text::pg_snapshot, \
    round = $13::text::pg_snapshot, round_after = $14, updated_at = now() WHERE name = $10";

/// Prepares [`commit`]'s statement for the common case of a batch without dead letters: the
/// trigger loop stores progress after every batch, and a prepared statement is one round
/// trip where an unprepared one is two.
pub async fn prepare_update(client: &Client) -> Result<Statement, tokio_postgres::Error> {
    client.prepare(UPDATE).await
}

/// Stores `progress` and inserts `dead` in one statement; `update` is [`prepare_update`]'s.
pub async fn commit(
    client: &Client,
    update: &Statement,
    name: &str,
    progress: &Progress,
    dead: &[DeadLetter],
) -> Result<(), tokio_postgres::Error> {
    let position = progress.position();
    let (round, after) = match &progress.round {
        Some((s, id)) => (Some(s.as_str()), Some(*id)),
        None => (None, None),
    };
    if dead.is_empty() {
        client
            .execute(update, &[&name, &position, &progress.done, &round, &after])
            .await?;
        return Ok(());
    }
    let c = Columns::from_letters(dead);
    let sql = format!("WITH dl AS ({INSERT_BATCH}) {UPDATE_AFTER_DEAD_LETTERS}");
    let mut params = c.params();
    params.extend([
        &name as &(dyn ToSql + Sync),
        &position,
        &progress.done,
        &round,
        &after,
    ]);
    client.execute(sql.as_str(), &params).await?;
    Ok(())
}

const SET_POSITION: &str =
    "UPDATE sluice.checkpoint SET position = $2, updated_at = now() WHERE name = $1";
const SET_POSITION_AFTER_DEAD_LETTERS: &str =
    "UPDATE sluice.checkpoint SET position = $11, updated_at = now() WHERE name = $10";

/// Logical mode: stores a position (an LSN) and inserts `dead` in one statement.
pub async fn commit_position(
    client: &Client,
    name: &str,
    position: &str,
    dead: &[DeadLetter],
) -> Result<(), tokio_postgres::Error> {
    if dead.is_empty() {
        client.execute(SET_POSITION, &[&name, &position]).await?;
        return Ok(());
    }
    let c = Columns::from_letters(dead);
    let sql = format!("WITH dl AS ({INSERT_BATCH}) {SET_POSITION_AFTER_DEAD_LETTERS}");
    let mut params = c.params();
    params.extend([&name as &(dyn ToSql + Sync), &position]);
    client.execute(sql.as_str(), &params).await?;
    Ok(())
}

const SAVE_ERROR: &str = "UPDATE sluice.checkpoint SET last_error = $2, last_error_at = $3::text::timestamptz WHERE name = $1";

/// Stores the daemon's last error in the checkpoint row `name`, if there is a new one: a check
/// of an atomic flag otherwise, so it may be called after every batch.
pub async fn save_error(
    client: &Client,
    health: &Health,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    if let Some((text, at)) = health.unsaved_error() {
        client
            .execute(SAVE_ERROR, &[&name, &crate::redact::text(&text, &[]), &at])
            .await?;
        health.mark_error_saved();
    }
    Ok(())
}

/// Processed rows past retention, among the 10,000 oldest: ids follow write time, so the
/// oldest rows by id are the prunable ones, and a look at them is a short primary-key scan
/// also when nothing is due (a search of the whole table by created_at or xid blocked the
/// reader for 130 ms a minute at 300,000 rows). Only rows of transactions before the stored
/// progress (`$2`, its `done` snapshot) may go.
const PRUNE: &str = "DELETE FROM sluice.change_log WHERE id IN (SELECT id FROM \
    (SELECT id, created_at, xid FROM sluice.change_log ORDER BY id LIMIT 10000) oldest \
    WHERE created_at < now() - make_interval(secs => $1) \
      AND xid < pg_snapshot_xmin($2::text::pg_snapshot))";

/// Deletes processed trigger rows older than `retention`, in chunks; returns how many went.
pub async fn prune(
    client: &Client,
    retention: Duration,
    stored: &Progress,
) -> Result<u64, tokio_postgres::Error> {
    let mut total = 0;
    loop {
        let n = client
            .execute(PRUNE, &[&retention.as_secs_f64(), &stored.done])
            .await?;
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}
