//! Trigger mode: reads `sluice.change_log`, the rows the `sluice.capture()` trigger writes.
//!
//! Progress is a snapshot, not an id: each round publishes, in id order, the rows whose
//! transactions became visible since the previous round. This neither skips a row whose
//! transaction committed after a higher id was read, nor reorders one record's changes when a
//! long transaction holds the xmin horizon between two of its writers. The argument is written
//! out in `sql/002_change_log.sql`. A round is read in batches; the pipeline stores progress
//! (with the batch's dead letters) only after the batch is delivered, and this reader never
//! writes: it reads the next batch while the pipeline delivers the last one.

mod row;
mod task;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, Statement};

pub use row::change_of;
pub use task::ChangeLogSource;

use crate::event::{Change, SourceRef};
use crate::pg::Conn;

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
            Some((round, after)) => {
                format!("snapshot {} + round {round} through id {after}", self.done)
            }
        }
    }
}

const LOAD: &str =
    "SELECT done::text, round::text, round_after FROM sluice.checkpoint WHERE name = $1";

/// Reads the stored progress of `name`; `None` when the row is missing (setup has not run).
pub async fn load(client: &Client, name: &str) -> Result<Option<Progress>, tokio_postgres::Error> {
    let row = client.query_opt(LOAD, &[&name]).await?;
    Ok(row.map(|r| Progress {
        done: r
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| "1:1:".into()),
        round: r
            .get::<_, Option<String>>(1)
            .map(|s| (s, r.get::<_, Option<i64>>(2).unwrap_or(0))),
    }))
}

/// What a history row (one logical mode wrote, `source.keep_history`) holds beyond the
/// trigger's columns: the event's fields a trigger row derives when it is read, and a row
/// `jsonb` could not hold, kept as its JSON text (`rawNew`, `rawOld`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_columns: Vec<String>,
    pub lsn: Option<String>,
    pub xid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_new: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_old: Option<String>,
}

impl Meta {
    /// The `source` object of a history row's event.
    pub fn source(&self) -> SourceRef {
        SourceRef {
            mode: "logical",
            lsn: self.lsn.clone(),
            xid: self.xid,
            id: None,
        }
    }
}

/// The NOTIFY channel the capture trigger signals.
pub const NOTIFY_CHANNEL: &str = "sluice_change_log";

#[derive(Debug, thiserror::Error)]
pub enum ChangeLogError {
    #[error(transparent)]
    Postgres(#[from] crate::pg::PgError),
    #[error("sluice.checkpoint has no '{CHANGE_LOG}' row: run `sluice setup` first")]
    NotSetUp,
    #[error("change_log row {id} is malformed: {why}")]
    Malformed { id: i64, why: String },
    #[error("the PostgreSQL connection holding the reader lock was lost")]
    ConnectionLost,
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
    pub async fn open(conn: &Conn, batch_size: usize) -> Result<ChangeLog, ChangeLogError> {
        let client = &conn.client;
        let progress = conn
            .bounded(load(client, CHANGE_LOG))
            .await?
            .ok_or(ChangeLogError::NotSetUp)?;
        conn.bounded(client.batch_execute(READER_SETTINGS)).await?;
        let (bounds, read) = (
            conn.bounded(client.prepare(BOUNDS)).await?,
            conn.bounded(client.prepare(READ)).await?,
        );
        Ok(ChangeLog {
            progress,
            batch_size: batch_size as i64,
            bounds,
            read,
            round_end: None,
        })
    }

    /// Subscribes the session to the trigger's notifications.
    pub async fn listen(conn: &Conn) -> Result<(), ChangeLogError> {
        conn.bounded(
            conn.client
                .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")),
        )
        .await?;
        Ok(())
    }

    /// Takes the reader lock; `false` when another daemon holds it.
    pub async fn try_lock(conn: &Conn) -> Result<bool, ChangeLogError> {
        Ok(conn
            .bounded(conn.client.query_one(TRY_LOCK, &[]))
            .await?
            .get(0))
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Reads the next batch; it does not move progress (see [`ChangeLog::advance`]). A round is
    /// read in windows of `batch_size` ids from its smallest id to its largest.
    pub async fn next_batch(&mut self, conn: &Conn) -> Result<Batch, ChangeLogError> {
        let (round, after, end) = match self.round(conn).await? {
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
        let rows = conn
            .bounded(
                conn.client
                    .query(&self.read, &[&self.progress.done, &round, &after, &upto]),
            )
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
    async fn round(&mut self, conn: &Conn) -> Result<Round, ChangeLogError> {
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
        let row = conn
            .bounded(conn.client.query_one(
                &self.bounds,
                &[&self.progress.done, &stored.as_ref().map(|r| r.0.as_str())],
            ))
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
}

impl From<tokio_postgres::Error> for ChangeLogError {
    fn from(e: tokio_postgres::Error) -> Self {
        ChangeLogError::Postgres(crate::pg::PgError::Postgres(e))
    }
}
