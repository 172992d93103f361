//! Trigger mode: reads `sluice.change_log`, the rows the `sluice.capture()` trigger writes.
//!
//! Progress is a snapshot, not an id: each round publishes, in id order, the rows whose
//! transactions became visible since the previous round. This neither skips a row whose
//! transaction committed after a higher id was read, nor reorders one record's changes when a
//! long transaction holds the xmin horizon between two of its writers. The argument is written
//! out in `sql/002_change_log.sql`. A round is read in batches; progress is stored (with the
//! batch's dead letters) only after the batch is delivered.

use std::time::Duration;

use tokio_postgres::{Client, Row, Statement};

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

/// The columns [`change_of`] reads, for every query of `sluice.change_log` rows.
#[macro_export]
macro_rules! change_log_columns {
    () => {
        "id, xid::text, table_name, operation, record_id, new_row::text, old_row::text, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), event_id, meta::text"
    };
}

/// A round's bounds: its snapshot ($2, or the current one when NULL) and the smallest and
/// largest id of a row visible in it but not in `done` ($1), NULL when there is none.
/// "Not visible in `done`" is spelled as its two index ranges (xid at or past done's xmax, or
/// in its in-progress list), so the xid index finds exactly the new rows, however long a
/// transaction holds done's xmin back.
const BOUNDS: &str = "SELECT c.s::text, r.lo, r.hi \
    FROM (SELECT coalesce($2::text::pg_snapshot, pg_current_snapshot()) AS s) c, \
    LATERAL (SELECT min(id) AS lo, max(id) AS hi FROM ( \
        SELECT id FROM sluice.change_log \
        WHERE xid >= pg_snapshot_xmax($1::text::pg_snapshot) AND event_id IS NULL AND pg_visible_in_snapshot(xid, c.s) \
        UNION ALL \
        SELECT id FROM sluice.change_log \
        WHERE xid = ANY(ARRAY(SELECT pg_snapshot_xip($1::text::pg_snapshot))) AND event_id IS NULL \
          AND pg_visible_in_snapshot(xid, c.s)) n) r";

/// Rows visible in the round's snapshot ($2) but not in `done` ($1), with ids in ($3, $4], in
/// id order. Logical mode's history rows (with an `event_id`) are not a queue: skipped. The
/// window is at most `batch_size` ids wide, so each read is a short range of the primary key
/// whatever plan PostgreSQL picks (an open-ended `id > $3 ... LIMIT` let it sort the whole
/// backlog for every batch, as it misjudges the snapshot tests: see benches/README.md).
const READ: &str = concat!(
    "SELECT ",
    change_log_columns!(),
    " FROM sluice.change_log \
    WHERE id > $3 AND id <= $4 \
      AND event_id IS NULL \
      AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot) \
      AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot) \
    ORDER BY id"
);

/// Processed rows past retention, among the 10,000 oldest: ids follow write time, so the
/// oldest rows by id are the prunable ones, and a look at them is a short primary-key scan
/// also when nothing is due (a search of the whole table by created_at or xid blocked the
/// reader for 130 ms a minute at 300,000 rows).
const PRUNE: &str = "DELETE FROM sluice.change_log WHERE id IN (SELECT id FROM \
    (SELECT id, created_at, xid FROM sluice.change_log ORDER BY id LIMIT 10000) oldest \
    WHERE created_at < now() - make_interval(secs => $1) \
      AND xid < pg_snapshot_xmin($2::text::pg_snapshot))";

/// The reader session's planner settings. A generic plan would not know how far into the
/// table `id > $3` starts: each read is planned for its parameters, as an unprepared query
/// would be. And every query here has an index that finds just its few rows, so a scan of the
/// table, or parallel workers, are never right; but until autovacuum first analyzes a
/// fast-growing change_log the planner guesses a third of the table for `xid >= ...`, and it
/// chose a parallel scan of all of it for BOUNDS, 7-140 ms a round at 200,000 rows where the
/// index takes 0.1 ms (benches/README.md).
const READER_SETTINGS: &str =
    "SET plan_cache_mode = force_custom_plan; SET enable_seqscan = off; SET max_parallel_workers_per_gather = 0";

/// The advisory lock that makes one daemon the reader of a change_log.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('sluice.change_log', 0))";

/// A batch and the progress that holds once it is delivered.
pub struct Batch {
    pub changes: Vec<Change>,
    pub next: Progress,
    /// More of the round is waiting: read again without sleeping.
    pub full: bool,
}

/// Where [`ChangeLog::next_batch`] reads.
enum Round {
    /// Nothing is new in this snapshot: `done` may move to it.
    Empty(String),
    /// The round `snapshot` holds rows with ids through `end`; those through `after` are read.
    Read {
        snapshot: String,
        after: i64,
        end: i64,
    },
}

/// The change_log reader.
pub struct ChangeLog {
    progress: Progress,
    batch_size: i64,
    /// [`BOUNDS`] and [`READ`], prepared once per connection: each is then one round trip, not
    /// two (parse, then execute).
    bounds: Statement,
    read: Statement,
    /// The round in progress and the largest id it holds: fixed once the round's snapshot is.
    round_end: Option<(String, i64)>,
}

impl ChangeLog {
    /// Loads the stored progress.
    pub async fn open(client: &Client, batch_size: usize) -> Result<ChangeLog, ChangeLogError> {
        let progress = checkpoint::load(client, CHANGE_LOG)
            .await?
            .ok_or(ChangeLogError::NotSetUp)?;
        client.batch_execute(READER_SETTINGS).await?;
        let (bounds, read) = (client.prepare(BOUNDS).await?, client.prepare(READ).await?);
        Ok(ChangeLog {
            progress,
            batch_size: batch_size as i64,
            bounds,
            read,
            round_end: None,
        })
    }

    /// Subscribes the session to the trigger's notifications.
    pub async fn listen(client: &Client) -> Result<(), ChangeLogError> {
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await?;
        Ok(())
    }

    /// Takes the reader lock; `false` when another daemon holds it.
    pub async fn try_lock(client: &Client) -> Result<bool, ChangeLogError> {
        Ok(client.query_one(TRY_LOCK, &[]).await?.get(0))
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Reads the next batch; it does not move progress (see [`ChangeLog::advance`]). A round is
    /// read in windows of `batch_size` ids from its smallest id to its largest.
    pub async fn next_batch(&mut self, client: &Client) -> Result<Batch, ChangeLogError> {
        let (round, after, end) = match self.round(client).await? {
            Round::Empty(snapshot) => {
                return Ok(Batch {
                    changes: Vec::new(),
                    next: Progress {
                        done: snapshot,
                        round: None,
                    },
                    full: false,
                })
            }
            Round::Read {
                snapshot,
                after,
                end,
            } => (snapshot, after, end),
        };
        let upto = end.min(after.saturating_add(self.batch_size));
        let rows = client
            .query(&self.read, &[&self.progress.done, &round, &after, &upto])
            .await?;
        let changes = rows.iter().map(change_of).collect::<Result<Vec<_>, _>>()?;
        let full = upto < end;
        let next = match full {
            true => Progress {
                done: self.progress.done.clone(),
                round: Some((round, upto)),
            },
            false => Progress {
                done: round,
                round: None,
            },
        };
        Ok(Batch {
            changes,
            next,
            full,
        })
    }

    /// The round to read from: the stored one, or a new one at the current snapshot.
    async fn round(&mut self, client: &Client) -> Result<Round, ChangeLogError> {
        let stored = self.progress.round.clone();
        if let (Some((snapshot, after)), Some((cached, end))) = (&stored, &self.round_end) {
            if snapshot == cached {
                return Ok(Round::Read {
                    snapshot: snapshot.clone(),
                    after: *after,
                    end: *end,
                });
            }
        }
        let row = client
            .query_one(
                &self.bounds,
                &[&self.progress.done, &stored.as_ref().map(|r| r.0.as_str())],
            )
            .await?;
        let (snapshot, lo, hi): (String, Option<i64>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        let after = stored.map_or(0, |r| r.1);
        let (Some(lo), Some(end)) = (lo, hi) else {
            return Ok(Round::Empty(snapshot));
        };
        self.round_end = Some((snapshot.clone(), end));
        Ok(Round::Read {
            snapshot,
            after: after.max(lo - 1),
            end,
        })
    }

    /// Moves progress once a batch is delivered and stored.
    pub fn advance(&mut self, next: Progress) {
        self.progress = next;
    }

    /// Deletes processed rows older than `retention`, in chunks; returns how many went.
    pub async fn prune(&self, client: &Client, retention: Duration) -> Result<u64, ChangeLogError> {
        let mut total = 0;
        loop {
            let n = client
                .execute(PRUNE, &[&retention.as_secs_f64(), &self.progress.done])
                .await?;
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
    let operation =
        Operation::parse(&op).ok_or_else(|| malformed(format!("unknown operation {op:?}")))?;
    let new_row: Option<String> = row.get(5);
    let old_row: Option<String> = row.get(6);
    let event_id: Option<String> = row.get(8);
    let history = match (&event_id, row.get::<_, Option<String>>(9)) {
        (Some(_), Some(meta)) => {
            Some(serde_json::from_str::<Meta>(&meta).map_err(|e| malformed(format!("meta: {e}")))?)
        }
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
        None => SourceRef {
            mode: "trigger",
            lsn: None,
            xid: row.get::<_, String>(1).parse().ok(),
            id: Some(id),
        },
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
