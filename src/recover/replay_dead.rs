//! `sluice replay dead-letters`: re-route and re-publish parked events, then mark them resolved.
//!
//! An operator fixes what made events fail (adds an app prefix, raises
//! `delivery.max_payload_bytes`, fixes a Redis ACL) and runs this. Each open dead letter's
//! stored payload is turned back into the [`Change`] it was made from and routed with the
//! CURRENT config, so the fix applies; the event keeps its `eventId` and says
//! `"replay": "dead_letter"`. A row parked for one app of a fan-out keeps only that app's
//! event: the other apps had theirs.
//!
//! Rows are read in id order in batches, and each batch is published before its rows are
//! marked, in one statement: delivered ones resolved, failing ones left open with the new
//! reason and error, attempts counted either way. Killed half way, a run leaves rows marked
//! only for what Redis acknowledged, so running it again delivers every event at least once.
//! A session advisory lock keeps two replays from publishing the same rows at once.

use std::process::ExitCode;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::dead_letters::{filter_where, sql_error, State};
use super::filter::{DeadLetterFilters, Where};
use super::pace::Pacer;
use super::progress::Progress;
use crate::config::Config;
use crate::deliver::{publish_routed, Delivered};
use crate::event::{Change, Operation, SourceRef};
use crate::health::Health;
use crate::publish::Publisher;
use crate::route::{Event, Routed, Router};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub filters: DeadLetterFilters,
    /// Print what would be replayed, publish nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Events per second at most (0: unlimited)
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
}

/// Held for the session: one replay of dead letters at a time per database.
const LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('sluice.replay_dead_letters', 0))";

/// Marks a batch in one statement: delivered rows resolved, the others' new reason and error.
const MARK: &str = "UPDATE sluice.dead_letter d SET attempts = d.attempts + 1, last_attempt_at = now(), \
    resolved_at = CASE WHEN u.ok THEN now() END, reason = coalesce(u.reason, d.reason), error = coalesce(u.error, d.error) \
    FROM unnest($1::bigint[], $2::bool[], $3::text[], $4::text[]) AS u(id, ok, reason, error) \
    WHERE d.id = u.id AND d.resolved_at IS NULL";

/// The most rows read (and published as one pipeline) at a time.
const MAX_BATCH: usize = 1000;

pub async fn run(
    config: &Config,
    router: &Router,
    args: Args,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ExitCode, String> {
    let mut filter = filter_where(&args.filters, State::Open)?;
    let conn = super::connect(config).await?;
    let client = &conn.client;
    if args.dry_run {
        return dry_run(client, &filter).await;
    }
    if !client
        .query_one(LOCK, &[])
        .await
        .map_err(sql_error)?
        .get::<_, bool>(0)
    {
        return Err("another `sluice replay dead-letters` is running on this database; wait for it to finish".into());
    }
    // what is parked now; rows the daemon parks meanwhile wait for the next run
    let count = format!(
        "SELECT count(*), coalesce(max(id), 0) FROM sluice.dead_letter {}",
        filter.clause()
    );
    let row = client
        .query_one(count.as_str(), &filter.params())
        .await
        .map_err(sql_error)?;
    let total: i64 = row.get(0);
    filter.add("id <= $", row.get::<_, i64>(1));
    let publisher = Publisher::new(&config.redis)
        .map_err(|e| format!("{e}; check redis.url (or REDIS_URL)"))?;
    let health = Health::new();
    let mut replay = Replay {
        config,
        client,
        router,
        publisher: &publisher,
        health: &health,
        tally: Tally::default(),
    };
    let finished = replay
        .all(&filter, total as u64, args.rate, &mut shutdown)
        .await;
    publisher.close().await;
    let finished = finished?;
    println!("{}", replay.tally.summary());
    if finished {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("stopped before the end; run the same command again to replay the rest");
    Ok(ExitCode::FAILURE)
}

/// `--dry-run`: how many open dead letters match, by reason.
async fn dry_run(client: &Client, filter: &Where) -> Result<ExitCode, String> {
    let sql = format!(
        "SELECT reason, count(*) FROM sluice.dead_letter {} GROUP BY reason ORDER BY reason",
        filter.clause()
    );
    let rows = client
        .query(sql.as_str(), &filter.params())
        .await
        .map_err(sql_error)?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    if total == 0 {
        println!("no open dead letters to replay; nothing published");
        return Ok(ExitCode::SUCCESS);
    }
    println!("would replay {total} dead letters; nothing published");
    for r in &rows {
        println!("  {:<18} {}", r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a replay did, for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Events Redis acknowledged.
    published: u64,
    /// Dead letters that failed again and stay open.
    failed: u64,
    /// Dead letters resolved because the current config drops them (`on_unroutable = "drop"`).
    dropped: u64,
}

impl Tally {
    /// `replayed N events, M skipped`, as the contract words it, and what the skipped are.
    fn summary(&self) -> String {
        let mut line = format!(
            "replayed {} events, {} skipped",
            self.published, self.failed
        );
        if self.failed > 0 {
            line.push_str(" (still failing, left open: see `sluice dead-letters list`)");
        }
        if self.dropped > 0 {
            line.push_str(&format!(
                ", {} resolved as dropped by on_unroutable = \"drop\"",
                self.dropped
            ));
        }
        line
    }
}

/// One open dead letter as read for a replay.
#[derive(Debug)]
struct Parked {
    id: i64,
    app: Option<String>,
    payload: String,
}

/// What became of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Delivered,
    /// The current config drops it (`on_unroutable = "drop"`): resolved, nothing published.
    Dropped,
    /// Still undeliverable: the new reason (`None`: keep the old one) and error.
    Failed {
        reason: Option<&'static str>,
        error: String,
    },
}

struct Replay<'a> {
    config: &'a Config,
    client: &'a Client,
    router: &'a Router,
    publisher: &'a Publisher,
    /// Delivery's bookkeeping of Redis's state; a command has no probes to show it.
    health: &'a Health,
    tally: Tally,
}

impl Replay<'_> {
    /// Replays every matching row, batch by batch; `Ok(false)` when stopped by shutdown after
    /// a batch, `Err` when stopped while Redis was unavailable (that batch stays open).
    async fn all(
        &mut self,
        filter: &Where,
        total: u64,
        rate: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, String> {
        let mut pacer = Pacer::new(rate);
        let limit = pacer.batch(MAX_BATCH) as i64;
        let read = format!(
            "SELECT id, app, coalesce(payload_text, payload::text) FROM sluice.dead_letter {} AND id > ${} ORDER BY id LIMIT ${}",
            filter.clause(),
            filter.next(),
            filter.next() + 1
        );
        let mut progress = Progress::new("events", Some(total));
        let mut after = 0_i64;
        let finished = loop {
            let mut params = filter.params();
            params.extend([&after as &(dyn ToSql + Sync), &limit]);
            let rows = self
                .client
                .query(read.as_str(), &params)
                .await
                .map_err(sql_error)?;
            let rows: Vec<Parked> = rows
                .iter()
                .map(|r| Parked {
                    id: r.get(0),
                    app: r.get(1),
                    payload: r.get(2),
                })
                .collect();
            let Some(last) = rows.last() else { break true };
            after = last.id;
            let sent = self.batch(&rows, shutdown).await?;
            progress.add(rows.len() as u64);
            if (rows.len() as i64) < limit {
                break true;
            }
            if *shutdown.borrow() {
                break false;
            }
            pacer.pace(sent).await;
        };
        progress.finish();
        Ok(finished)
    }

    /// Routes, publishes and marks one batch; returns how many events were published.
    async fn batch(
        &mut self,
        rows: &[Parked],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<u64, String> {
        let (events, owner, mut fates) = route_rows(self.router, rows);
        let Some(done) = publish_routed(
            self.publisher,
            &events,
            None,
            Vec::new(),
            &self.config.delivery,
            self.health,
            shutdown,
        )
        .await
        else {
            return Err(format!(
                "interrupted while Redis was unavailable; {} events published so far, the rest stay open: run again once Redis is back",
                self.tally.published
            ));
        };
        settle(&mut fates, &owner, &done);
        mark(self.client, rows, &fates).await?;
        self.tally.published += done.published as u64;
        for fate in &fates {
            match fate {
                Fate::Delivered => {}
                Fate::Dropped => self.tally.dropped += 1,
                Fate::Failed { .. } => self.tally.failed += 1,
            }
        }
        Ok(events.len() as u64)
    }
}

/// Routes each row's change with the current config. Returns the events to publish, the row
/// each came from, and each row's fate as routing sees it.
fn route_rows(router: &Router, rows: &[Parked]) -> (Vec<Event>, Vec<usize>, Vec<Fate>) {
    let (mut events, mut owner, mut fates) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::new(),
    );
    let (mut routed, mut buf) = (Vec::new(), Vec::with_capacity(1024));
    for (i, row) in rows.iter().enumerate() {
        let fate = match parked_change(&row.payload) {
            Ok(change) => {
                router.route(&change, &mut routed, &mut buf);
                fate_of(row.app.as_deref(), routed.drain(..), |e| {
                    events.push(e);
                    owner.push(i);
                })
            }
            Err(why) => Fate::Failed {
                reason: None,
                error: format!("the payload is not a Sluice event ({why}); it cannot be replayed"),
            },
        };
        fates.push(fate);
    }
    (events, owner, fates)
}

/// One row's fate from what its change routed to. Events for the row's app (any app when the
/// row has none) go to `publish`; a routing dead letter for that app, or for the whole change,
/// fails the row.
fn fate_of(
    app: Option<&str>,
    routed: impl Iterator<Item = Routed>,
    mut publish: impl FnMut(Event),
) -> Fate {
    let (mut kept, mut dropped, mut failed) = (0, false, None);
    for r in routed {
        match r {
            Routed::Publish(e) if app.is_none_or(|a| *e.app == *a) => {
                kept += 1;
                publish(e);
            }
            Routed::DeadLetter(d)
                if failed.is_none() && (d.app.is_none() || d.app.as_deref() == app) =>
            {
                failed = Some(Fate::Failed {
                    reason: Some(d.reason.as_str()),
                    error: d.error,
                });
            }
            Routed::Dropped => dropped = true,
            Routed::Publish(_) | Routed::DeadLetter(_) => {}
        }
    }
    match (failed, dropped, kept, app) {
        (Some(fate), _, _, _) => fate,
        (None, true, _, _) => Fate::Dropped,
        (None, false, 0, Some(app)) => Fate::Failed {
            reason: Some("unroutable"),
            error: format!("the current config no longer routes this change to app {app}; purge it if that is intended"),
        },
        _ => Fate::Delivered,
    }
}

/// Fails the rows whose events Redis rejected (after `max_attempts`).
fn settle(fates: &mut [Fate], owner: &[usize], done: &Delivered) {
    let rejected_dead = &done.dead[done.dead.len() - done.rejected.len()..];
    for (&event, d) in done.rejected.iter().zip(rejected_dead) {
        fates[owner[event]] = Fate::Failed {
            reason: Some(d.reason.as_str()),
            error: d.error.clone(),
        };
    }
}

/// Stores a batch's fates in one statement.
async fn mark(client: &Client, rows: &[Parked], fates: &[Fate]) -> Result<(), String> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let ok: Vec<bool> = fates
        .iter()
        .map(|f| !matches!(f, Fate::Failed { .. }))
        .collect();
    let (reasons, errors): (Vec<Option<&str>>, Vec<Option<String>>) = fates
        .iter()
        .map(|f| match f {
            Fate::Failed { reason, error } => (*reason, Some(error.replace('\0', "\\u0000"))),
            _ => (None, None),
        })
        .unzip();
    client
        .execute(MARK, &[&ids, &ok, &reasons, &errors])
        .await
        .map_err(sql_error)?;
    Ok(())
}

/// The payload as parked: the event JSON as it would have been published.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    event_id: String,
    operation: String,
    table: String,
    record_id: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    old: Option<&'a RawValue>,
    changed_fields: Option<Vec<String>>,
    #[serde(default)]
    unchanged_columns: Vec<String>,
    timestamp: String,
    source: PayloadSource,
}

#[derive(Deserialize)]
struct PayloadSource {
    mode: String,
    lsn: Option<String>,
    xid: Option<u64>,
    id: Option<i64>,
}

/// The change a parked payload was made from, marked as a replay of a dead letter. `data`
/// and `old` are kept as the text PostgreSQL's jsonb printed, which is `to_jsonb`'s.
fn parked_change(payload: &str) -> Result<Change, String> {
    let p: Payload = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    let operation = Operation::parse(&p.operation)
        .ok_or_else(|| format!("unknown operation {:?}", p.operation))?;
    let mode = match p.source.mode.as_str() {
        "trigger" => "trigger",
        "logical" => "logical",
        other => return Err(format!("unknown source mode {other:?}")),
    };
    Ok(Change {
        event_id: p.event_id,
        operation,
        table: p.table,
        record_id: p.record_id,
        data: p.data.get().to_string(),
        old: p.old.map(|o| o.get().to_string()),
        changed_fields: p.changed_fields,
        unchanged_columns: p.unchanged_columns,
        timestamp: p.timestamp,
        source: SourceRef {
            mode,
            lsn: p.source.lsn,
            xid: p.source.xid,
            id: p.source.id,
        },
        replay: Some("dead_letter"),
        fault: None,
    })
}

#[cfg(test)]
mod tests;
