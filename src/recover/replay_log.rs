//! `sluice replay change-log`: re-publish past changes kept in `sluice.change_log`.
//!
//! The window is resolved once to a range of ids (a time bound through the `created_at` BRIN
//! index), then read in id order in batches, so a window deep in a week of history costs what
//! the window holds, not what precedes it. Each change is routed with the current config and
//! published with the `eventId` it had the first time (`cl:<id>` for trigger rows, the
//! original `<commit LSN>:<index>` for logical mode's history rows) and `"replay":
//! "change_log"`. Nothing is dead-lettered and no checkpoint moves: a change that routes
//! nowhere now, or that Redis rejects, is counted as skipped. A replay that is interrupted
//! or killed can be run again with the same window: delivery is at least once.
//!
//! Trigger mode keeps change_log rows for `source.retention`; logical mode keeps them only
//! with `source.keep_history = true`.

use std::process::ExitCode;

use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::filter::{Bound, Filters, Where};
use super::pace::Pacer;
use super::progress::Progress;
use crate::config::Config;
use crate::deliver::publish_routed;
use crate::event::Change;
use crate::health::Health;
use crate::publish::Publisher;
use crate::route::{Event, Routed, Router};
use crate::source::change_log::change_of;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First change to replay: a change_log id (42), a time (2026-11-22T10:00:00Z) or a
    /// duration ago (1h)
    #[arg(long, value_parser = Bound::parse)]
    pub from: Bound,
    /// End of the window: an id (inclusive) or a time (exclusive) [default: now]
    #[arg(long, value_parser = Bound::parse)]
    pub to: Option<Bound>,
    #[command(flatten)]
    pub filters: Filters,
    /// Print how many changes the window holds, publish nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Events per second at most (0: unlimited)
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
}

/// The window as a WHERE clause on `sluice.change_log`.
struct Window(Where);

impl Window {
    fn new(args: &Args) -> Result<Window, String> {
        if reversed(&args.from, args.to.as_ref()) {
            return Err("--from is after --to: the window would be empty; swap them".into());
        }
        let mut w = Where::default();
        match &args.from {
            Bound::Id(id) => w.add("id >= $", *id),
            Bound::Time(t) => w.add("created_at >= $::text::timestamptz", t.clone()),
        };
        match &args.to {
            Some(Bound::Id(id)) => w.add("id <= $", *id),
            Some(Bound::Time(t)) => w.add("created_at < $::text::timestamptz", t.clone()),
            None => &mut w,
        };
        w.eq("table_name", args.filters.table())
            .eq("tenant_id", args.filters.tenant.clone());
        Ok(Window(w))
    }

    /// The first and last id in the window, and how many rows it holds (`None` if empty).
    async fn range(
        &self,
        client: &Client,
    ) -> Result<Option<(i64, i64, i64)>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT min(id), max(id), count(*) FROM sluice.change_log {}",
            self.0.clause()
        );
        let row = client.query_one(sql.as_str(), &self.0.params()).await?;
        Ok(row
            .get::<_, Option<i64>>(0)
            .map(|first| (first, row.get(1), row.get(2))))
    }

    /// One batch: rows of the window with `first <= id <= last`, in id order.
    async fn batch(
        &self,
        client: &Client,
        first: i64,
        last: i64,
        limit: i64,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let n = self.0.next();
        let sql = format!(
            "SELECT {} FROM sluice.change_log {} AND id >= ${n} AND id <= ${} ORDER BY id LIMIT ${}",
            crate::change_log_columns!(),
            self.0.clause(),
            n + 1,
            n + 2
        );
        let mut params = self.0.params();
        params.extend([&first as &(dyn ToSql + Sync), &last, &limit]);
        client.query(sql.as_str(), &params).await
    }
}

/// `--to` before `--from` (both ids, or both times).
fn reversed(from: &Bound, to: Option<&Bound>) -> bool {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    match (from, to) {
        (Bound::Id(a), Some(Bound::Id(b))) => a > b,
        (Bound::Time(a), Some(Bound::Time(b))) => match (
            OffsetDateTime::parse(a, &Rfc3339),
            OffsetDateTime::parse(b, &Rfc3339),
        ) {
            (Ok(a), Ok(b)) => a >= b,
            _ => false,
        },
        _ => false,
    }
}

/// What a replay did, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    changes: u64,
    published: u64,
    skipped: u64,
}

pub async fn run(
    config: &Config,
    router: &Router,
    args: Args,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ExitCode, String> {
    if let Some(app) = &args.filters.app {
        if !config.apps.contains_key(app) {
            return Err(format!("--app {app}: no such app in [apps]"));
        }
    }
    let window = Window::new(&args)?;
    let conn = super::connect(config).await?;
    let range = window
        .range(&conn.client)
        .await
        .map_err(|e| history_error(&e))?;
    let Some((first, last, count)) = range else {
        let verb = if args.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        println!("{verb} 0 events, 0 skipped (the window holds no change)");
        return Ok(ExitCode::SUCCESS);
    };
    // A dry run reads and routes the window exactly as a replay does, so its count honours
    // --app (which only routing can tell) and the current config; it publishes nothing.
    let publisher = match args.dry_run {
        true => None,
        false => Some(super::publisher(config).await?),
    };
    let health = Health::new();
    let mut replay = Replay {
        config,
        router,
        publisher: publisher.as_ref(),
        health: &health,
        app: args.filters.app.as_deref(),
        tally: Tally::default(),
    };
    let rate = if args.dry_run { 0 } else { args.rate };
    let span = Span { first, last, count };
    replay
        .window(&window, &conn.client, span, rate, &mut shutdown)
        .await?;
    let t = &replay.tally;
    let (verb, end) = match args.dry_run {
        true => ("would replay", "; nothing published"),
        false => ("replayed", ""),
    };
    println!(
        "{verb} {} events, {} skipped ({} changes, change_log ids {first} to {last}){end}",
        t.published, t.skipped, t.changes
    );
    Ok(ExitCode::SUCCESS)
}

/// The ids a window spans, and how many rows it holds.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: i64,
    last: i64,
    count: i64,
}

struct Replay<'a> {
    config: &'a Config,
    router: &'a Router,
    /// `None` for a dry run: events are counted, not published.
    publisher: Option<&'a Publisher>,
    /// Delivery's bookkeeping of Redis's state; a command has no probes to show it.
    health: &'a Health,
    app: Option<&'a str>,
    tally: Tally,
}

impl Replay<'_> {
    /// Reads the window in id order, batch by batch, and replays (or counts) each batch.
    async fn window(
        &mut self,
        window: &Window,
        client: &Client,
        span: Span,
        rate: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut pacer = Pacer::new(rate);
        let mut progress = Progress::new("changes", Some(span.count as u64));
        let mut next = span.first;
        while next <= span.last {
            let rows = window
                .batch(client, next, span.last, pacer.batch(1000) as i64)
                .await
                .map_err(|e| history_error(&e))?;
            let Some(end) = rows.last().map(|r| r.get::<_, i64>(0)) else {
                break;
            };
            let changes = rows
                .iter()
                .map(change_of)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let sent = self
                .batch(changes, shutdown)
                .await
                .ok_or_else(|| interrupted(&self.tally, next))?;
            progress.add(rows.len() as u64);
            next = end + 1;
            if *shutdown.borrow() && next <= span.last {
                progress.finish();
                return Err(interrupted(&self.tally, next));
            }
            pacer.pace(sent).await;
        }
        progress.finish();
        Ok(())
    }

    /// Routes and publishes one batch; returns how many events went out, `None` on shutdown
    /// while Redis was unavailable.
    async fn batch(
        &mut self,
        mut changes: Vec<Change>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<u64> {
        let events = self.select(&mut changes);
        let Some(publisher) = self.publisher else {
            self.tally.published += events.len() as u64;
            return Some(events.len() as u64);
        };
        let done = publish_routed(
            publisher,
            &events,
            None,
            Vec::new(),
            &self.config.delivery,
            self.health,
            shutdown,
        )
        .await?;
        for d in &done.dead {
            tracing::warn!(event_id = %d.event_id, error = %d.error, "Redis rejected a replayed event; skipped");
        }
        self.tally.published += done.published as u64;
        self.tally.skipped += done.dead.len() as u64;
        Some(events.len() as u64)
    }

    /// Routes the changes with the current config: the events for `--app` (all without it);
    /// what routes nowhere now is counted as skipped.
    fn select(&mut self, changes: &mut [Change]) -> Vec<Event> {
        let mut routed = Vec::with_capacity(changes.len());
        let mut buf = Vec::with_capacity(1024);
        for change in changes.iter_mut() {
            change.replay = Some("change_log");
            self.router.route(change, &mut routed, &mut buf);
        }
        self.tally.changes += changes.len() as u64;
        let mut events = Vec::with_capacity(routed.len());
        for r in routed {
            match r {
                Routed::Publish(e) if self.app.is_none_or(|a| *e.app == *a) => events.push(e),
                Routed::Publish(_) => {}
                Routed::DeadLetter(_) | Routed::Dropped => self.tally.skipped += 1,
            }
        }
        events
    }
}

fn interrupted(t: &Tally, next: i64) -> String {
    format!(
        "interrupted after replaying {} events ({} skipped); to finish, run again with --from {next} and the same --to",
        t.published, t.skipped
    )
}

fn history_error(e: &tokio_postgres::Error) -> String {
    let text = crate::pg::describe(e);
    if text.contains("sluice.change_log") && text.contains("does not exist") {
        return "sluice.change_log does not exist: in logical mode set source.keep_history = true and run `sluice setup`; \
                only changes published after that can be replayed"
            .into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from: Bound, to: Option<Bound>, filters: Filters) -> Args {
        Args {
            from,
            to,
            filters,
            dry_run: false,
            rate: 0,
        }
    }

    #[test]
    fn a_reversed_window_is_refused() {
        let time = |t: &str| Bound::Time(t.into());
        let e = Window::new(&args(Bound::Id(10), Some(Bound::Id(5)), Filters::default())).err();
        assert!(e.is_some_and(|e| e.contains("--from is after --to")));
        let (early, late) = (
            time("2026-11-22T10:00:00Z"),
            time("2026-11-22T11:00:00+00:00"),
        );
        assert!(Window::new(&args(late.clone(), Some(early.clone()), Filters::default())).is_err());
        assert!(Window::new(&args(early, Some(late), Filters::default())).is_ok());
        assert!(Window::new(&args(Bound::Id(5), Some(Bound::Id(5)), Filters::default())).is_ok());
    }

    #[test]
    fn the_window_numbers_its_parameters_in_order() {
        let filters = Filters {
            tenant: Some("t1".into()),
            table: Some("users".into()),
            ..Filters::default()
        };
        let w = Window::new(&args(
            Bound::Time("2026-11-22T10:00:00Z".into()),
            Some(Bound::Id(9)),
            filters,
        ))
        .unwrap();
        assert_eq!(w.0.clause(), "WHERE created_at >= $1::text::timestamptz AND id <= $2 AND table_name = $3 AND tenant_id = $4");
        assert_eq!(w.0.next(), 5);
    }
}
