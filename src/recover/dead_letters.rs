//! `sluice dead-letters list|show ID|purge`: look at and clear `sluice.dead_letter`.
//!
//! The table is where the daemon parks what it cannot deliver, so an operator needs to see
//! what is there and why before fixing the cause and replaying (`sluice replay dead-letters`),
//! and to clear it afterwards. Three things shape the code:
//!
//! - Tenants, tables and errors in the table come from the rows being captured, i.e. from
//!   anyone who can write a row. They reach the SQL only as parameters ([`Where`]) and the
//!   terminal only with control characters replaced ([`render::clean`]): the `invalid_tenant`
//!   rows are exactly the ones holding escape sequences and newlines.
//! - The filters mean the same in `list`, `purge` and `replay dead-letters`: one helper,
//!   [`filter_where`], turns them into the WHERE clause for all three.
//! - A purge of a big table deletes in chunks of [`PURGE_CHUNK`] ids, so no single statement
//!   holds locks on millions of rows while the daemon inserts new dead letters.

mod render;

use std::process::ExitCode;

use clap::Subcommand;
use tokio_postgres::Client;

use super::filter::{time_or_ago, DeadLetterFilters, Where};
use crate::config::Config;

/// The reasons the daemon writes (`dead_letter::Reason`), for checking `--reason`.
pub const REASONS: [&str; 7] = [
    "unroutable",
    "missing_tenant",
    "invalid_tenant",
    "payload_too_large",
    "publish_rejected",
    "invalid_key",
    "unconvertible_value",
];

/// Ids deleted per statement by `purge`.
pub const PURGE_CHUNK: i64 = 10_000;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List open dead letters, newest first (a table on a terminal, one JSON object a line with --json)
    List {
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// Print JSON lines instead of a table
        #[arg(long)]
        json: bool,
        /// Also list resolved ones
        #[arg(long)]
        all: bool,
        /// At most this many rows
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one dead letter whole: its reason, error, attempts and the event it holds
    Show {
        /// The dead letter's id (first column of `list`)
        id: i64,
    },
    /// Delete dead letters: resolved ones, or with --before those older than a time
    Purge {
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// Delete those created before this time or this long ago (2026-11-01T00:00:00Z, 7d),
        /// resolved or not
        #[arg(long, value_parser = time_or_ago)]
        before: Option<String>,
        /// Print how many would go, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// With --before: also delete open dead letters (never replayed), which are otherwise
        /// refused
        #[arg(long)]
        yes: bool,
    },
}

/// Which rows a command looks at, besides the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    Resolved,
    Any,
}

/// The filters (and the state) as a WHERE clause on `sluice.dead_letter`; an unknown
/// `--reason` is an error that lists the known ones.
pub fn filter_where(filters: &DeadLetterFilters, state: State) -> Result<Where, String> {
    if let Some(reason) = filters.reason.as_deref().filter(|r| !REASONS.contains(r)) {
        return Err(format!(
            "--reason {reason:?} is not a dead-letter reason; use one of {}",
            REASONS.join(", ")
        ));
    }
    let mut w = Where::default();
    match state {
        State::Open => w.fixed("resolved_at IS NULL"),
        State::Resolved => w.fixed("resolved_at IS NOT NULL"),
        State::Any => &mut w,
    }
    .eq("tenant_id", filters.common.tenant.clone())
    .eq("app", filters.common.app.clone())
    .eq("table_name", filters.common.table())
    .eq("reason", filters.reason.clone());
    Ok(w)
}

/// A failed statement on `sluice.dead_letter` in one line, with what to do when the schema is
/// missing.
pub fn sql_error(e: tokio_postgres::Error) -> String {
    let text = crate::pg::describe(&e);
    if text.contains("does not exist") && text.contains("sluice") {
        return format!("{text}; run `sluice setup` first");
    }
    text
}

pub async fn run(config: &Config, command: Command) -> Result<ExitCode, String> {
    let conn = super::connect(config).await?;
    let client = &conn.client;
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(sql_error)?;
    match command {
        Command::List {
            filters,
            json,
            all,
            limit,
        } => list(client, &filters, json, all, limit).await,
        Command::Show { id } => show(client, id).await,
        Command::Purge {
            filters,
            before,
            dry_run,
            yes,
        } => purge(client, &filters, before, dry_run, yes).await,
    }
}

/// The columns of the table `list` prints, in order.
const LIST_COLUMNS: &str =
    "id::text, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'), reason, app, tenant_id, table_name, \
    event_id, attempts::text, error, to_char(resolved_at, 'YYYY-MM-DD HH24:MI:SS')";

async fn list(
    client: &Client,
    filters: &DeadLetterFilters,
    json: bool,
    all: bool,
    limit: i64,
) -> Result<ExitCode, String> {
    if limit < 0 {
        return Err(format!("--limit {limit}: give a number of rows, 0 or more"));
    }
    let w = filter_where(filters, if all { State::Any } else { State::Open })?;
    let columns = if json {
        "to_jsonb(d)::text"
    } else {
        LIST_COLUMNS
    };
    let sql = format!(
        "SELECT {columns} FROM sluice.dead_letter d {} ORDER BY id DESC LIMIT ${}",
        w.clause(),
        w.next()
    );
    let mut params = w.params();
    params.push(&limit);
    let rows = client
        .query(sql.as_str(), &params)
        .await
        .map_err(sql_error)?;
    if json {
        rows.iter()
            .for_each(|r| println!("{}", r.get::<_, String>(0)));
    } else if !rows.is_empty() {
        let cells: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect();
        print!("{}", render::table(&cells, all, render::width()));
    }
    let count = format!(
        "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL) FROM sluice.dead_letter {}",
        w.clause()
    );
    let totals = client
        .query_one(count.as_str(), &w.params())
        .await
        .map_err(sql_error)?;
    eprintln!(
        "{}",
        list_summary(totals.get(0), totals.get(1), rows.len(), all)
    );
    Ok(ExitCode::SUCCESS)
}

/// `12 open dead letters (showing 12)`; with `--all`, `15 dead letters, 12 open (showing 15)`.
fn list_summary(total: i64, open: i64, shown: usize, all: bool) -> String {
    match (all, total) {
        (false, 0) => "no open dead letters".into(),
        (true, 0) => "no dead letters".into(),
        (false, _) => format!("{total} open dead letters (showing {shown})"),
        (true, _) => format!("{total} dead letters, {open} open (showing {shown})"),
    }
}

/// Every column of one dead letter, then its payload pretty-printed.
const SHOW: &str = "SELECT id::text, to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), event_id, channel, app, \
    tenant_id, table_name, reason, error, attempts::text, to_char(last_attempt_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
    to_char(resolved_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), coalesce(jsonb_pretty(payload), payload_text) \
    FROM sluice.dead_letter WHERE id = $1";

/// The labels of [`SHOW`]'s columns but the payload.
const SHOW_LABELS: [&str; 12] = [
    "id",
    "created_at",
    "event_id",
    "channel",
    "app",
    "tenant_id",
    "table_name",
    "reason",
    "error",
    "attempts",
    "last_attempt_at",
    "resolved_at",
];

async fn show(client: &Client, id: i64) -> Result<ExitCode, String> {
    let row = client.query_opt(SHOW, &[&id]).await.map_err(sql_error)?;
    let Some(row) = row else {
        return Err(format!(
            "no dead letter has id {id}; `sluice dead-letters list --all` shows the ids"
        ));
    };
    let values: Vec<Option<String>> = (0..SHOW_LABELS.len()).map(|i| row.get(i)).collect();
    print!("{}", render::record(&SHOW_LABELS, &values));
    println!(
        "payload:\n{}",
        render::clean_lines(&row.get::<_, String>(SHOW_LABELS.len()))
    );
    Ok(ExitCode::SUCCESS)
}

async fn purge(
    client: &Client,
    filters: &DeadLetterFilters,
    before: Option<String>,
    dry_run: bool,
    yes: bool,
) -> Result<ExitCode, String> {
    let delete_open = before.is_some() && !dry_run && !yes;
    let mut w = filter_where(
        filters,
        if before.is_some() {
            State::Any
        } else {
            State::Resolved
        },
    )?;
    if let Some(time) = before {
        w.add("created_at < $::text::timestamptz", time);
    }
    if delete_open {
        let sql = format!(
            "SELECT count(*) FROM sluice.dead_letter {} AND resolved_at IS NULL",
            w.clause()
        );
        let open: i64 = client
            .query_one(sql.as_str(), &w.params())
            .await
            .map_err(sql_error)?
            .get(0);
        if open > 0 {
            return Err(format!(
                "{open} of those dead letters are still open (never replayed): add --yes to delete them too, or replay them first; nothing was deleted"
            ));
        }
    }
    if dry_run {
        let sql = format!("SELECT count(*) FROM sluice.dead_letter {}", w.clause());
        let n: i64 = client
            .query_one(sql.as_str(), &w.params())
            .await
            .map_err(sql_error)?
            .get(0);
        println!("would purge {n} dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    let sql = format!(
        "DELETE FROM sluice.dead_letter WHERE id IN (SELECT id FROM sluice.dead_letter {} ORDER BY id LIMIT {PURGE_CHUNK})",
        w.clause()
    );
    let mut purged = 0;
    loop {
        let n = client
            .execute(sql.as_str(), &w.params())
            .await
            .map_err(sql_error)?;
        purged += n;
        if n < PURGE_CHUNK as u64 {
            break;
        }
    }
    println!("purged {purged} dead letters");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recover::filter::Filters;

    #[test]
    fn filters_become_one_parameterised_clause() {
        let filters = DeadLetterFilters {
            common: Filters {
                tenant: Some("a:b".into()),
                app: Some("crm".into()),
                table: Some("roles".into()),
            },
            reason: Some("invalid_tenant".into()),
        };
        let w = filter_where(&filters, State::Open).unwrap();
        assert_eq!(w.clause(), "WHERE resolved_at IS NULL AND tenant_id = $1 AND app = $2 AND table_name = $3 AND reason = $4");
        assert!(
            format!("{:?}", w.params()[2]).contains("public.roles"),
            "a bare table is qualified"
        );
        assert_eq!(
            filter_where(&DeadLetterFilters::default(), State::Resolved)
                .unwrap()
                .clause(),
            "WHERE resolved_at IS NOT NULL"
        );
        assert_eq!(
            filter_where(&DeadLetterFilters::default(), State::Any)
                .unwrap()
                .clause(),
            "WHERE true"
        );
        let bad = DeadLetterFilters {
            reason: Some("too_big".into()),
            ..DeadLetterFilters::default()
        };
        assert!(filter_where(&bad, State::Open)
            .unwrap_err()
            .contains("payload_too_large"));
    }

    #[test]
    fn the_summary_counts_what_matched_and_what_is_shown() {
        assert_eq!(
            list_summary(12, 12, 12, false),
            "12 open dead letters (showing 12)"
        );
        assert_eq!(
            list_summary(250, 250, 100, false),
            "250 open dead letters (showing 100)"
        );
        assert_eq!(list_summary(0, 0, 0, false), "no open dead letters");
        assert_eq!(
            list_summary(15, 12, 15, true),
            "15 dead letters, 12 open (showing 15)"
        );
    }
}
