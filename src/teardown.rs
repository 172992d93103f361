//! `sluice teardown [--yes] [--drop-schema]`: removes what `setup` attached to the database,
//! so that a database Sluice no longer serves stops paying for it.
//!
//! Each thing setup made costs the database something while nobody reads it: a replication
//! slot pins WAL until the disk fills, a publication is harmless but confusing, and capture
//! triggers make every writer copy its rows into `sluice.change_log`. Those go. The `sluice`
//! schema stays unless `--drop-schema` is given, because it holds what an operator may still
//! need after the daemon is gone: open dead letters, the change_log history for replays, and
//! the checkpoint that lets a later `setup` + `run` resume where this one stopped.
//!
//! Teardown refuses while a daemon is active (streaming the slot, or holding the change_log
//! reader lock): dropping the ground under a running daemon is never what the operator meant.
//! Without `--yes` it only prints what it would drop. Triggers are found by the function they
//! call (`sluice.capture()`), not by the config, so a table since removed from `[[tables]]`
//! loses its triggers too.

use std::fmt::Write;
use std::process::ExitCode;

use tokio_postgres::Client;

use crate::config::{qualify, Config, SourceMode};
use crate::pg;
use crate::setup::{ident, literal};
use crate::status::change_log_reader;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Drop them. Without it, teardown prints what it would drop and exits 1
    #[arg(long)]
    pub yes: bool,
    /// Also drop the sluice schema, losing every dead letter, the change_log history and the
    /// checkpoints of every Sluice in this database (kept by default)
    #[arg(long)]
    pub drop_schema: bool,
}

/// One thing to drop: what it is, in words, and the SQL that drops it.
struct Item {
    what: String,
    sql: String,
}

#[derive(Default)]
struct Plan {
    /// Dropped on its own first: PostgreSQL refuses it while a walsender uses the slot.
    slot: Option<Item>,
    /// Dropped in one transaction after the slot.
    rest: Vec<Item>,
    /// What stays, and how to remove it if wanted.
    keeps: Vec<String>,
}

impl Plan {
    fn items(&self) -> impl Iterator<Item = &Item> {
        self.slot.iter().chain(&self.rest)
    }
}

pub async fn run(config: &Config, args: Args) -> Result<ExitCode, String> {
    let conn = crate::recover::connect(config).await?;
    let plan = plan(&conn.client, config, args.drop_schema).await?;
    if plan.items().next().is_none() {
        println!(
            "nothing to tear down: setup's slot, publication and triggers are not in this database"
        );
        print!("{}", keeps(&plan, "kept"));
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        print!(
            "teardown would drop:\n{}{}",
            listing(&plan),
            keeps(&plan, "and keep")
        );
        return Err("nothing was dropped; rerun with --yes to drop the above".into());
    }
    if let Some(slot) = &plan.slot {
        conn.client
            .batch_execute(&slot.sql)
            .await
            .map_err(refused)?;
    }
    let statements: Vec<&str> = plan.rest.iter().map(|i| i.sql.as_str()).collect();
    conn.client
        .batch_execute(&format!("BEGIN;\n{}\nCOMMIT;", statements.join("\n")))
        .await
        .map_err(refused)?;
    print!("dropped:\n{}{}", listing(&plan), keeps(&plan, "kept"));
    println!("teardown complete");
    Ok(ExitCode::SUCCESS)
}

fn listing(plan: &Plan) -> String {
    plan.items().fold(String::new(), |mut out, i| {
        let _ = writeln!(out, "  - {}", i.what);
        out
    })
}

fn keeps(plan: &Plan, header: &str) -> String {
    if plan.keeps.is_empty() {
        return String::new();
    }
    plan.keeps
        .iter()
        .fold(format!("{header}:\n"), |mut out, k| {
            let _ = writeln!(out, "  - {k}");
            out
        })
}

/// A statement PostgreSQL refused, in one sentence.
fn refused(e: tokio_postgres::Error) -> String {
    let text = pg::describe(&e);
    if text.contains("is active for PID") {
        return format!("{text}: a daemon took the slot meanwhile; stop it, then rerun teardown");
    }
    format!("teardown stopped: {text}; nothing after that was dropped, rerun once it is fixed")
}

async fn plan(client: &Client, config: &Config, drop_schema: bool) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let logical = config.source.mode == SourceMode::Logical;
    if logical {
        logical_items(client, config, drop_schema, &mut plan).await?;
    }
    if !logical || drop_schema {
        if let Some(pid) = change_log_reader(client).await.map_err(sql)? {
            return Err(format!("a daemon (backend pid {pid}) is reading the change_log; stop `sluice run` first, then rerun teardown"));
        }
    }
    let triggers = capture_triggers(client).await.map_err(sql)?;
    let keep_triggers = logical && !drop_schema && !triggers.is_empty();
    if keep_triggers {
        plan.keeps.push(format!("capture triggers on {} tables (trigger mode's: teardown with mode = \"trigger\" drops them)", triggers.len()));
    } else {
        plan.rest.extend(triggers);
    }
    event_trigger(client, config, keep_triggers, drop_schema, &mut plan)
        .await
        .map_err(sql)?;
    let tables = crate::setup::patterns::EVENT_TRIGGER;
    let exists = "SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)";
    if client
        .query_one(exists, &[&tables])
        .await
        .map_err(sql)?
        .get(0)
    {
        plan.rest.push(Item {
            what: format!(
                "event trigger {tables} (it captured new tables matching a [[tables]] pattern)"
            ),
            sql: format!("DROP EVENT TRIGGER IF EXISTS {};", ident(tables)),
        });
    }
    schema_items(client, config, drop_schema, &mut plan).await?;
    Ok(plan)
}

async fn logical_items(
    client: &Client,
    config: &Config,
    drop_schema: bool,
    plan: &mut Plan,
) -> Result<(), String> {
    let (slot, publication) = (&config.source.slot, &config.source.publication);
    let row = client
        .query_opt("SELECT active_pid, coalesce(confirmed_flush_lsn::text, 'none') FROM pg_replication_slots WHERE slot_name = $1", &[slot])
        .await
        .map_err(sql)?;
    if let Some(r) = row {
        if let Some(pid) = r.get::<_, Option<i32>>(0) {
            return Err(format!("slot {slot} is active (streamed by backend pid {pid}): stop the `sluice run` using it, then rerun teardown"));
        }
        let what = format!(
            "replication slot {slot} (confirmed up to {}; PostgreSQL stops keeping WAL for it)",
            r.get::<_, String>(1)
        );
        plan.slot = Some(Item {
            what,
            sql: format!("SELECT pg_drop_replication_slot({})", literal(slot)),
        });
    }
    let tables: Option<i64> = client
        .query_opt("SELECT (SELECT count(*) FROM pg_publication_tables WHERE pubname = $1) FROM pg_publication WHERE pubname = $1", &[publication])
        .await
        .map_err(sql)?
        .map(|r| r.get(0));
    if let Some(n) = tables {
        plan.rest.push(Item {
            what: format!("publication {publication} ({n} tables)"),
            sql: format!("DROP PUBLICATION IF EXISTS {};", ident(publication)),
        });
    }
    if !drop_schema {
        replica_identity_note(client, config, plan)
            .await
            .map_err(sql)?;
    }
    Ok(())
}

/// Setup may have set `REPLICA IDENTITY FULL`; whether it was so before is unknown, so it stays.
async fn replica_identity_note(
    client: &Client,
    config: &Config,
    plan: &mut Plan,
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<String> = config
        .tables
        .iter()
        .map(|t| crate::setup::quote_table(&qualify(&t.table)))
        .collect();
    let sql = "SELECT string_agg(c.oid::regclass::text, ', ') FROM unnest($1::text[]) t(name) \
        JOIN pg_class c ON c.oid = to_regclass(t.name) WHERE c.relreplident = 'f'";
    if let Some(tables) = client
        .query_one(sql, &[&names])
        .await?
        .get::<_, Option<String>>(0)
    {
        plan.keeps.push(format!("REPLICA IDENTITY FULL on {tables}: ALTER TABLE ... REPLICA IDENTITY DEFAULT where nothing else needs it"));
    }
    Ok(())
}

/// The capture triggers, one item per table, found by the function they execute.
async fn capture_triggers(client: &Client) -> Result<Vec<Item>, tokio_postgres::Error> {
    let sql =
        "SELECT tgrelid::regclass::text, array_agg(tgname::text ORDER BY tgname) FROM pg_trigger \
        WHERE tgfoid = to_regproc('sluice.capture') GROUP BY 1 ORDER BY 1";
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (table, names): (String, Vec<String>) = (r.get(0), r.get(1));
            let sql = names
                .iter()
                .map(|n| format!("DROP TRIGGER IF EXISTS {} ON {table};", ident(n)))
                .collect::<Vec<_>>()
                .join("\n");
            Item {
                what: format!("{} capture triggers on {table}", names.len()),
                sql,
            }
        })
        .collect())
}

/// The event trigger that covers new partitions serves the capture triggers and the other
/// publications' partitioned tables: it stays while those do (or goes with the schema).
async fn event_trigger(
    client: &Client,
    config: &Config,
    keep_triggers: bool,
    drop_schema: bool,
    plan: &mut Plan,
) -> Result<(), tokio_postgres::Error> {
    if crate::setup::partitions::event_trigger(client)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let name = crate::setup::partitions::EVENT_TRIGGER;
    let ours = if config.source.mode == SourceMode::Logical {
        config.source.publication.as_str()
    } else {
        ""
    };
    let others = "SELECT string_agg(DISTINCT p.pubname, ', ') FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid \
        JOIN pg_class c ON c.oid = r.prrelid WHERE c.relkind = 'p' AND p.pubname <> $1";
    let published: Option<String> = match drop_schema {
        true => None,
        false => client.query_one(others, &[&ours]).await?.get(0),
    };
    match (keep_triggers, published) {
        (true, _) => plan.keeps.push(format!(
            "event trigger {name} (it gives new partitions the capture triggers kept)"
        )),
        (false, Some(p)) => plan.keeps.push(format!(
            "event trigger {name} (it covers new partitions of tables in publication {p})"
        )),
        (false, None) => plan.rest.push(Item {
            what: format!("event trigger {name} (it covered partitions added to captured tables)"),
            sql: format!("DROP EVENT TRIGGER IF EXISTS {};", ident(name)),
        }),
    }
    Ok(())
}

/// The checkpoint row of this slot (logical), or the whole schema with `--drop-schema`.
async fn schema_items(
    client: &Client,
    config: &Config,
    drop_schema: bool,
    plan: &mut Plan,
) -> Result<(), String> {
    let exists: bool = client
        .query_one("SELECT to_regclass('sluice.checkpoint') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    if !exists {
        return Ok(());
    }
    let own = if config.source.mode == SourceMode::Logical {
        config.source.slot.as_str()
    } else {
        crate::source::change_log::CHANGE_LOG
    };
    let contents = schema_contents(client).await.map_err(sql)?;
    if !drop_schema {
        if config.source.mode == SourceMode::Logical {
            let sql = format!(
                "DELETE FROM sluice.checkpoint WHERE name = {};",
                literal(own)
            );
            plan.rest.push(Item {
                what: format!("checkpoint row {own} (the slot's stored position and last error)"),
                sql,
            });
        }
        plan.keeps.push(format!(
            "schema sluice ({contents}); --drop-schema drops it too"
        ));
        return Ok(());
    }
    let others = "SELECT string_agg(c.name, ', ') FROM sluice.checkpoint c JOIN pg_replication_slots s ON s.slot_name = c.name WHERE c.name <> $1";
    if let Some(slots) = client
        .query_one(others, &[&own])
        .await
        .map_err(sql)?
        .get::<_, Option<String>>(0)
    {
        return Err(format!("slot {slots} of another Sluice config still uses schema sluice; tear that down first (teardown --config with its config)"));
    }
    plan.rest.push(Item {
        what: format!("schema sluice with everything in it ({contents})"),
        sql: "DROP SCHEMA IF EXISTS sluice CASCADE;".into(),
    });
    Ok(())
}

/// `3 open dead letters of 5, 120 change_log rows`: what dropping the schema would lose.
async fn schema_contents(client: &Client) -> Result<String, tokio_postgres::Error> {
    let dead =
        "SELECT count(*) FILTER (WHERE resolved_at IS NULL), count(*) FROM sluice.dead_letter";
    let (open, all): (i64, i64) = match client
        .query_one("SELECT to_regclass('sluice.dead_letter') IS NOT NULL", &[])
        .await?
        .get(0)
    {
        true => client
            .query_one(dead, &[])
            .await
            .map(|r| (r.get(0), r.get(1)))?,
        false => (0, 0),
    };
    let log: i64 = match client
        .query_one("SELECT to_regclass('sluice.change_log') IS NOT NULL", &[])
        .await?
        .get(0)
    {
        true => client
            .query_one("SELECT count(*) FROM sluice.change_log", &[])
            .await?
            .get(0),
        false => 0,
    };
    Ok(format!(
        "{open} open dead letters of {all}, {log} change_log rows"
    ))
}

fn sql(e: tokio_postgres::Error) -> String {
    format!("cannot read what setup made: {}", pg::describe(&e))
}
