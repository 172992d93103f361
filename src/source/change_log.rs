//! Trigger mode: reads `sluice.change_log`, the rows the `sluice.capture()` trigger writes.
//!
//! Progress is a snapshot, not an id: each round publishes, in id order, the rows whose
//! transactions became visible since the previous round. This neither skips a row whose
//! transaction committed after a higher id was read, nor reorders one record's changes when a
//! long transaction holds the xmin horizon between two of its writers. The argument is written
//! out in `sql/002_change_log.sql`. A round is read in batches; progress is stored (with the
//! batch's dead letters) only after the batch is delivered.

use std::time::Duration;

use tokio_postgres::{Client, Row};

use crate::checkpoint::{self, Progress, CHANGE_LOG};
use crate::event::{Change, Operation, SourceRef};
use crate::json;
use crate::source::logical::history::{self, Meta};

/// The NOTIFY channel the capture trigger signals.
pub const NOTIFY_CHANNEL: &str = "sluice_change_log";

#[derive(Debug, thiserror::Error)]
pub enum ChangeLogError {
    #[error("{}", crate::pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("sluice.checkpoint has no '{CHANGE_LOG}' row: run `sluice setup` first")]
    NotSetUp,
    #[error("change_log row {id} is malformed: {why}")]
    Malformed { id: i64, why: String },
}

const CURRENT_SNAPSHOT: &str = "SELECT pg_current_snapshot()::text";

/// The columns [`change_of`] reads, for every query of `sluice.change_log` rows.
#[macro_export]
macro_rules! change_log_columns {
    () => {
        "id, xid::text, table_name, operation, record_id, new_row::text, old_row::text, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), event_id, meta::text"
    };
}

/// Rows visible in the round's snapshot ($2) but not in `done` ($1), after id $3, in id order.
/// Logical mode's history rows (with an `event_id`) are not a queue: skipped.
const READ: &str = concat!("SELECT ", change_log_columns!(), " FROM sluice.change_log \
    WHERE event_id IS NULL \
      AND xid >= pg_snapshot_xmin($1::text::pg_snapshot) \
      AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot) \
      AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
      AND id > $3 \
    ORDER BY id LIMIT $4");

const PRUNE: &str = "DELETE FROM sluice.change_log WHERE id IN (SELECT id FROM sluice.change_log \
    WHERE created_at < now() - make_interval(secs => $1) \
      AND xid < pg_snapshot_xmin($2::text::pg_snapshot) \
    ORDER BY id LIMIT 10000)";

/// The advisory lock that makes one daemon the reader of a change_log.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('sluice.change_log', 0))";

/// A batch and the progress that holds once it is delivered.
pub struct Batch {
    pub changes: Vec<Change>,
    pub next: Progress,
    /// The batch filled `batch_size`: more is waiting, read again without sleeping.
    pub full: bool,
}

/// The change_log reader.
pub struct ChangeLog {
    progress: Progress,
    batch_size: i64,
}

impl ChangeLog {
    /// Loads the stored progress.
    pub async fn open(client: &Client, batch_size: usize) -> Result<ChangeLog, ChangeLogError> {
        let progress = checkpoint::load(client, CHANGE_LOG).await?.ok_or(ChangeLogError::NotSetUp)?;
        Ok(ChangeLog { progress, batch_size: batch_size as i64 })
    }

    /// Subscribes the session to the trigger's notifications.
    pub async fn listen(client: &Client) -> Result<(), ChangeLogError> {
        client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await?;
        Ok(())
    }

    /// Takes the reader lock; `false` when another daemon holds it.
    pub async fn try_lock(client: &Client) -> Result<bool, ChangeLogError> {
        Ok(client.query_one(TRY_LOCK, &[]).await?.get(0))
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Reads the next batch; it does not move progress (see [`ChangeLog::advance`]).
    pub async fn next_batch(&self, client: &Client) -> Result<Batch, ChangeLogError> {
        let (round, after) = match &self.progress.round {
            Some((snapshot, after)) => (snapshot.clone(), *after),
            None => {
                let current: String = client.query_one(CURRENT_SNAPSHOT, &[]).await?.get(0);
                if current == self.progress.done {
                    return Ok(Batch { changes: Vec::new(), next: self.progress.clone(), full: false });
                }
                (current, 0)
            }
        };
        let rows = client.query(READ, &[&self.progress.done, &round, &after, &self.batch_size]).await?;
        let full = rows.len() as i64 == self.batch_size;
        let changes = rows.iter().map(change_of).collect::<Result<Vec<_>, _>>()?;
        let next = match (full, changes.last()) {
            (true, Some(last)) => Progress { done: self.progress.done.clone(), round: Some((round, last.source.id.unwrap_or(after))) },
            _ => Progress { done: round, round: None },
        };
        Ok(Batch { changes, next, full })
    }

    /// Moves progress once a batch is delivered and stored.
    pub fn advance(&mut self, next: Progress) {
        self.progress = next;
    }

    /// Deletes processed rows older than `retention`, in chunks; returns how many went.
    pub async fn prune(&self, client: &Client, retention: Duration) -> Result<u64, ChangeLogError> {
        let mut total = 0;
        loop {
            let n = client.execute(PRUNE, &[&retention.as_secs_f64(), &self.progress.done]).await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }
}

/// A `sluice.change_log` row (selected as [`change_log_columns!`]) as the change it records:
/// a trigger row, or a history row logical mode wrote (it keeps its published `eventId`).
pub fn change_of(row: &Row) -> Result<Change, ChangeLogError> {
    let id: i64 = row.get(0);
    let malformed = |why: String| ChangeLogError::Malformed { id, why };
    let op: String = row.get(3);
    let operation = Operation::parse(&op).ok_or_else(|| malformed(format!("unknown operation {op:?}")))?;
    let new_row: Option<String> = row.get(5);
    let old_row: Option<String> = row.get(6);
    let event_id: Option<String> = row.get(8);
    let history = match (&event_id, row.get::<_, Option<String>>(9)) {
        (Some(_), Some(meta)) => Some(serde_json::from_str::<Meta>(&meta).map_err(|e| malformed(format!("meta: {e}")))?),
        _ => None,
    };
    let (old, changed) = match (operation, &history, &old_row, &new_row) {
        (Operation::Update, Some(meta), _, _) => (old_row.clone(), meta.changed_fields.clone()),
        (Operation::Update, None, Some(old), Some(new)) => {
            let (old, changed) = diff(old, new).map_err(|e| malformed(e.to_string()))?;
            (Some(old), Some(changed))
        }
        _ => (None, None),
    };
    let data = match operation {
        Operation::Delete => old_row,
        Operation::Truncate => Some(new_row.unwrap_or_else(|| "null".into())),
        _ => new_row,
    }
    .ok_or_else(|| malformed(format!("{op} without a row")))?;
    let source = match &history {
        Some(meta) => history::source_of(meta),
        None => SourceRef { mode: "trigger", lsn: None, xid: row.get::<_, String>(1).parse().ok(), id: Some(id) },
    };
    Ok(Change {
        event_id: event_id.unwrap_or_else(|| format!("cl:{id}")),
        operation,
        table: row.get(2),
        record_id: row.get(4),
        data,
        old,
        changed_fields: changed,
        unchanged_columns: history.map(|m| m.unchanged_columns).unwrap_or_default(),
        timestamp: row.get(7),
        source,
        replay: None,
    })
}

/// The columns whose value differs between two `to_jsonb` rows (jsonb prints equal values
/// identically, so comparing the text is comparing the values), and their old values.
fn diff(old: &str, new: &str) -> Result<(String, Vec<String>), serde_json::Error> {
    let before = json::entries(old)?;
    let mut changed = Vec::new();
    let mut out = String::with_capacity(64);
    out.push('{');
    for (key, value) in json::entries(new)? {
        let previous = before.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if previous.map(|p| p.get()) == Some(value.get()) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&key)?);
        out.push(':');
        out.push_str(previous.map_or("null", |p| p.get()));
        changed.push(key.into_owned());
    }
    out.push('}');
    Ok((out, changed))
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_lists_changed_columns_with_their_old_values() {
        let old = r#"{"a": 1, "b": "x", "c": 2.50, "d": {"k": [1]}}"#;
        let new = r#"{"a": 2, "b": "x", "c": 3.00, "d": {"k": [1]}, "e": true}"#;
        let (before, changed) = diff(old, new).unwrap();
        assert_eq!(before, r#"{"a":1,"c":2.50,"e":null}"#);
        assert_eq!(changed, ["a", "c", "e"]);
        let (before, changed) = diff(old, old).unwrap();
        assert_eq!((before.as_str(), changed.len()), ("{}", 0));
    }
}
