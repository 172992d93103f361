//! `sluice backfill`: publish the current rows of a table as `SNAPSHOT` events, in order with
//! live changes.
//!
//! # Why a snapshot never overtakes a live change
//!
//! The table is read in primary-key order, in chunks of `--chunk` rows, each in its own short
//! transaction. That transaction selects the chunk `ORDER BY key LIMIT n FOR SHARE` and, before
//! committing, writes each row's snapshot into the stream itself:
//!
//! * trigger mode: a `sluice.change_log` row with operation `SNAPSHOT` (what `capture()` would
//!   write, `new_row = to_jsonb(row)`), then a NOTIFY;
//! * logical mode: `pg_logical_emit_message(true, 'sluice.snapshot', ...)`, a transactional
//!   message that the session turns into a change (`source::logical::snapshot`). pgoutput
//!   streams such messages from PostgreSQL 14 on; on 13 a logical-mode backfill refuses to start.
//!
//! The snapshot is thereby just another writer of the row, serialised with the others by the
//! row lock, which is exactly what both sources already order by:
//!
//! * An UPDATE that holds the row when the chunk gets to it makes the chunk wait; the chunk
//!   then reads the row as that UPDATE left it (READ COMMITTED re-checks a locked row), and
//!   its snapshot comes after the UPDATE's event.
//! * An UPDATE that arrives while the chunk holds the lock waits for the chunk's commit. In
//!   trigger mode its change_log row then takes a later id and its transaction commits later,
//!   so any snapshot of the reader that sees the UPDATE also sees the snapshot, and id order
//!   puts the snapshot first (the argument of `sql/002_change_log.sql`). In logical mode its
//!   commit LSN is later, and transactions stream in commit order.
//!
//! So for every row, the last event a consumer gets carries its current value, never an older
//! one. A row inserted behind the chunk's position arrives as its own INSERT event; a row
//! deleted before its chunk gets no snapshot, only its DELETE.
//!
//! # The daemon publishes
//!
//! Backfill writes nothing to Redis: `sluice run` publishes the snapshots like any change, with
//! routing, dead letters and checkpoints. It must be running, or publishes them when started
//! (in logical mode the slot must exist: messages written without one are never streamed).
//!
//! Each chunk's last key is remembered: Ctrl-C stops after the chunk in flight and prints the
//! `--after` to resume with; a chunk that keeps failing (PostgreSQL restarting) is retried with
//! backoff, then the command exits 1 with the same hint. A chunk's JSON is computed under the
//! session settings the capture trigger and the replication connection pin, so it equals what
//! live changes carry.

mod target;

use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;

use self::target::{literal, Filter, Target};
use super::pace::Pacer;
use super::progress::Progress;
use crate::config::{Config, SourceMode};
use crate::error::{classify_pg_error, Class};
use crate::pg;
use crate::shutdown::sleep_or_shutdown;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table (schema.table; a bare name means public.name); it must have a route and a
    /// primary key
    #[arg(long)]
    pub table: String,
    /// Only this tenant's rows (the route's tenant column)
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only rows matching this SQL condition, e.g. "updated_at > now() - interval '1 day'".
    /// Appended verbatim as AND (SQL): it is trusted like any SQL the operator runs
    #[arg(long = "where", value_name = "SQL")]
    pub filter: Option<String>,
    /// Resume after this primary key (printed by an interrupted backfill; composite keys
    /// joined by ',')
    #[arg(long, value_name = "KEY")]
    pub after: Option<String>,
    /// Print how many rows would be snapshotted, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Rows per second at most (0: unlimited). The matching rows are counted first, for the
    /// progress bar
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
    /// Rows per chunk (one short transaction each, its rows locked FOR SHARE until it commits);
    /// at a low --rate, fewer: a tenth of a second's worth, so the pace stays even
    #[arg(long, default_value_t = 500)]
    pub chunk: i64,
}

/// How often a failing chunk is tried, and the first wait between tries (doubling).
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What `capture()` and the replication connection pin, so `to_jsonb` writes the same text.
const PIN: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; \
    SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1";

pub async fn run(
    config: &Config,
    args: Args,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ExitCode, String> {
    if args.chunk < 1 {
        return Err("--chunk must be at least 1".into());
    }
    let mut conn = super::connect(config).await?;
    let target = target::resolve(&conn.client, config, &args.table).await?;
    let after = args
        .after
        .as_deref()
        .map(|k| target.parse_key(k))
        .transpose()?;
    let filter = Filter {
        tenant: args.tenant.as_deref(),
        sql: args.filter.as_deref(),
    };
    let logical = config.source.mode == SourceMode::Logical;
    stream_ready(&conn.client, config, logical).await?;
    let total = count(&mut conn.client, &target, filter, after.as_deref()).await?;
    let pacer = Pacer::new(args.rate);
    let limit = pacer.batch(args.chunk as usize) as i64;
    if args.dry_run {
        let into = if logical {
            "as logical messages into the WAL"
        } else {
            "as SNAPSHOT rows into sluice.change_log"
        };
        println!(
            "would backfill {total} rows of {} in {} chunks of {limit}, {into}; nothing written",
            target.table,
            total.div_ceil(limit as u64)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut job = Backfill {
        config,
        target,
        filter,
        logical,
        limit,
        conn: Some(conn),
        last: after,
        rows: 0,
        chunks: 0,
    };
    let outcome = job.run(total, pacer, &mut shutdown).await;
    println!(
        "backfilled {} rows of {} in {} chunks; sluice run publishes them",
        job.rows, job.target.table, job.chunks
    );
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Where the snapshots go must exist, or they would never be published.
async fn stream_ready(
    client: &tokio_postgres::Client,
    config: &Config,
    logical: bool,
) -> Result<(), String> {
    let slot = &config.source.slot;
    if logical {
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| pg::describe(&e))?
            .get(0);
        if version < 140000 {
            return Err(
                "backfill in logical mode needs PostgreSQL 14 or newer: the rows go \
                into the WAL as logical decoding messages, which PostgreSQL 13's pgoutput does \
                not stream"
                    .into(),
            );
        }
    }
    let (sql, name) = if logical {
        (
            format!(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {})",
                literal(slot)
            ),
            format!("replication slot {slot}"),
        )
    } else {
        (
            "SELECT to_regclass('sluice.change_log') IS NOT NULL".to_string(),
            "sluice.change_log".to_string(),
        )
    };
    let found: bool = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| pg::describe(&e))?
        .get(0);
    found
        .then_some(())
        .ok_or_else(|| format!("{name} does not exist: run `sluice setup` first"))
}

/// How many rows the backfill will read (for the progress bar and `--dry-run`).
async fn count(
    client: &mut tokio_postgres::Client,
    target: &Target,
    filter: Filter<'_>,
    after: Option<&[String]>,
) -> Result<u64, String> {
    let (sql, params) = target.count_sql(filter, after);
    let tx = client.transaction().await.map_err(|e| pg::describe(&e))?;
    tx.batch_execute(PIN).await.map_err(|e| pg::describe(&e))?;
    let n: i64 = tx
        .query_one(&sql, &refs(&params))
        .await
        .map_err(|e| {
            format!(
                "counting the rows of {}: {}",
                target.table,
                pg::describe(&e)
            )
        })?
        .get(0);
    tx.commit().await.map_err(|e| pg::describe(&e))?;
    Ok(n as u64)
}

fn refs(params: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

struct Backfill<'a> {
    config: &'a Config,
    target: Target,
    filter: Filter<'a>,
    logical: bool,
    limit: i64,
    /// `None` after a failure: the next try connects again.
    conn: Option<pg::Conn>,
    /// The key of the last row written (or `--after`): where the next chunk starts.
    last: Option<Vec<String>>,
    rows: u64,
    chunks: u64,
}

impl Backfill<'_> {
    async fn run(
        &mut self,
        total: u64,
        mut pacer: Pacer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut progress = Progress::new("rows", Some(total));
        let result = loop {
            if *shutdown.borrow() {
                break Err(self.interrupted());
            }
            match self.next_chunk(shutdown).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    progress.add(n);
                    sleep_or_shutdown(pacer.delay_after(n), shutdown).await;
                }
                Err(e) => break Err(e),
            }
        };
        progress.finish();
        result
    }

    /// Writes the next chunk, retrying transient failures with backoff; the rows written.
    async fn next_chunk(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<u64, String> {
        let (mut wait, mut attempt) = (FIRST_BACKOFF, 1);
        loop {
            let e = match self.try_chunk().await {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            self.conn = None;
            if attempt >= ATTEMPTS || classify_pg_error(&e) != Class::Transient {
                return Err(format!(
                    "backfill of {} failed: {e}; {}",
                    self.target.table,
                    self.resume_hint()
                ));
            }
            tracing::warn!(error = %e, attempt, retry_in = ?wait, "backfill chunk failed; retrying");
            if sleep_or_shutdown(wait, shutdown).await {
                return Err(self.interrupted());
            }
            (wait, attempt) = (wait * 2, attempt + 1);
        }
    }

    /// One chunk in one transaction: lock, snapshot into the stream, commit.
    async fn try_chunk(&mut self) -> Result<u64, pg::PgError> {
        if self.conn.is_none() {
            self.conn = Some(
                pg::connect(
                    &self.config.postgres.url,
                    self.config.postgres.connect_timeout,
                )
                .await?,
            );
        }
        let client = &mut self.conn.as_mut().expect("connected above").client;
        let (sql, params) =
            self.target
                .chunk_sql(self.logical, self.filter, self.last.as_deref(), self.limit);
        let tx = client.transaction().await?;
        tx.batch_execute(PIN).await?;
        let rows = tx.query(&sql, &refs(&params)).await?;
        if !self.logical && !rows.is_empty() {
            tx.execute(
                "SELECT pg_notify($1, '')",
                &[&crate::source::change_log::NOTIFY_CHANNEL],
            )
            .await?;
        }
        tx.commit().await?;
        if let Some(row) = rows.last() {
            self.last = Some(row.try_get(0)?);
            self.chunks += 1;
        }
        self.rows += rows.len() as u64;
        Ok(rows.len() as u64)
    }

    fn interrupted(&self) -> String {
        format!("interrupted; {}", self.resume_hint())
    }

    fn resume_hint(&self) -> String {
        match &self.last {
            Some(key) => format!("resume with --after {}", shell_word(&key.join(","))),
            None => "nothing was written; run the same command again".into(),
        }
    }
}

/// `s` as one shell word: bare when it is plain, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@+=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn resume_keys_are_printed_as_one_shell_word() {
        assert_eq!(shell_word("k42,7"), "k42,7");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
