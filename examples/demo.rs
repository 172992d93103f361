//! `cargo run --example demo`: watch changes made in PostgreSQL arrive as JSON events on
//! per-application Redis channels.
//!
//! The demo starts a throwaway PostgreSQL and Redis (temp dirs, free ports; nothing already
//! running on the machine is touched), creates the seed tables (`tests/fixtures/seed.sql`), fills in
//! `demo/sluice.toml`, applies `sluice setup` and runs the daemon in-process. It then writes
//! a few changes, narrated step by step, and prints every event as a subscriber to `*:*:*`
//! receives it:
//!
//! * credit configurations are routed by their operation code (`crm.` → crm, ...);
//! * a role fans out to every app its permissions mention;
//! * a user always goes to crm and hrms;
//! * a row whose tenant cannot be part of a channel name lands in `sluice.dead_letter`.
//!
//! Everything is stopped and deleted at the end, and on Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use serde_json::value::RawValue;
use sluice::config::Config;
use sluice::health::Health;
use sluice::route::Router;
use sluice::testkit::{Postgres, Redis};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, watch};

type Error = Box<dyn std::error::Error>;

const SEED: &str = include_str!("../tests/fixtures/seed.sql");
const CONFIG_TEMPLATE: &str = include_str!("demo/sluice.toml");
const DB: &str = "app";
/// Between steps, so a human can follow.
const PAUSE: Duration = Duration::from_millis(400);
/// How long one step may take to show all its events.
const DEADLINE: Duration = Duration::from_secs(20);
const MAX_LINE: usize = 160;
/// Set by Ctrl-C or SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// One narrated change and how many events it should publish.
struct Step {
    title: &'static str,
    sql: &'static str,
    events: usize,
}

const STEPS: &[Step] = &[
    Step {
        title: "Insert three credit configurations: the operation code picks the app",
        sql: "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) VALUES\n  \
              ('cfg-1', 'tenant-123', 'crm.leads.create', 2.50),\n  \
              ('cfg-2', 'tenant-456', 'hrms.payroll.process', 1.00),\n  \
              ('cfg-3', 'tenant-789', 'finance.invoice.generate', 5.00);",
        events: 3,
    },
    Step {
        title: "Raise one credit cost from 2.50 to 3.00",
        sql: "UPDATE credit_configurations SET credit_cost = 3.00, updated_by = 'demo' WHERE config_id = 'cfg-1';",
        events: 1,
    },
    Step {
        title: "Insert a role whose permissions span two apps: one event for each",
        sql: "INSERT INTO roles (role_id, tenant_id, role_name, permissions)\n  \
              VALUES ('role-1', 'tenant-123', 'Team lead', '{crm.leads.create,hrms.leave.approve}');",
        events: 2,
    },
    Step {
        title: "Insert a user: users always go to crm and hrms",
        sql: "INSERT INTO users (user_id, tenant_id, email, name, joined_on)\n  \
              VALUES (42, 'tenant-123', 'ada@example.com', 'Ada Lovelace', '2024-01-15');",
        events: 2,
    },
    Step {
        title: "Delete a credit configuration",
        sql: "DELETE FROM credit_configurations WHERE config_id = 'cfg-3';",
        events: 1,
    },
    Step {
        title: "Insert a row with tenant 'a:b', which cannot be part of a channel name",
        sql: "INSERT INTO credit_configurations (config_id, tenant_id, operation_code)\n  \
              VALUES ('cfg-bad', 'a:b', 'crm.leads.create');",
        events: 0,
    },
];

#[tokio::main]
async fn main() -> ExitCode {
    sluice::telemetry::init_logging(sluice::telemetry::LogFormat::Text, "warn");
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let result = match on_ctrl_c(stop_tx.clone()) {
        Ok(()) => demo(stop_tx, stop_rx).await,
        Err(e) => Err(e.into()),
    };
    match result {
        _ if INTERRUPTED.load(Ordering::SeqCst) => {
            println!("\nInterrupted: the servers are stopped and their temp dirs removed.")
        }
        Ok(()) => println!(
            "\nDone in {:.1} s; the servers are stopped and their temp dirs removed.",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Ctrl-C (or SIGTERM) turns `stop` true instead of killing the process, so every Drop runs.
fn on_ctrl_c(stop: watch::Sender<bool>) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        let _ = stop.send(true);
    });
    Ok(())
}

/// Servers, schema and daemon around the narrated changes; everything is stopped on return.
async fn demo(stop_tx: watch::Sender<bool>, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
    println!("Starting a throwaway PostgreSQL and Redis ...");
    let pg = Postgres::start()?;
    let redis = Redis::start()?;
    println!(
        "  PostgreSQL {}\n  Redis      {}",
        pg.url_for(DB),
        redis.url()
    );
    if *stop.borrow() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = prepare(&pg, &redis, dir.path()).await?;
    let subscriber = subscribe(&redis.url()).await?;
    let mut messages = subscriber.message_rx();
    subscriber.psubscribe("*:*:*").await?;
    let router =
        Router::compile(&config).map_err(|found| format!("the demo's routes: {found:?}"))?;
    let health = std::sync::Arc::new(Health::new());
    let daemon = tokio::spawn(sluice::run::run(config, router, health, stop.clone()));
    println!("Running sluice in-process; subscribed to *:*:*\n");
    let result = narrate(&pg, &mut messages, &mut stop).await;
    let _ = stop_tx.send(true);
    let stopped = daemon.await?.map_err(|e| format!("the daemon failed: {e}"));
    let _ = subscriber.quit().await;
    stopped?; // first: a failed daemon explains a missing event
    result
}

/// Database `app`, the seed tables, the config file and `sluice setup`.
async fn prepare(pg: &Postgres, redis: &Redis, dir: &Path) -> Result<Config, Error> {
    pg.psql("postgres", &format!("CREATE DATABASE {DB}"))?;
    pg.psql(DB, SEED)?;
    let text = CONFIG_TEMPLATE
        .replace("{pg}", &pg.url_for(DB))
        .replace("{redis}", &redis.url());
    let path = dir.join("sluice.toml");
    std::fs::write(&path, &text)?;
    let config = Config::parse(&text, &path)?;
    config.validate(&path)?;
    let conn = sluice::pg::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
    let sql = sluice::setup::plan(&conn.client, &config).await?;
    sluice::setup::apply(&conn.client, &sql).await?;
    println!("Created database {DB} with tables credit_configurations, roles, users; applied `sluice setup`");
    Ok(config)
}

async fn subscribe(url: &str) -> Result<SubscriberClient, Error> {
    let client = Builder::from_config(fred::types::config::Config::from_url(url)?)
        .build_subscriber_client()?;
    client.init().await?;
    Ok(client)
}

/// Runs every step, printing the events each one publishes, then the summary.
async fn narrate(
    pg: &Postgres,
    messages: &mut broadcast::Receiver<Message>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut channels: BTreeMap<String, usize> = BTreeMap::new();
    for (i, step) in STEPS.iter().enumerate() {
        println!("{}. {}", i + 1, step.title);
        for line in step.sql.lines() {
            println!("   sql> {line}");
        }
        pg.psql(DB, step.sql)?;
        for _ in 0..step.events {
            let Some(message) = or_stop(stop, next_event(messages)).await else {
                return Ok(());
            };
            let channel = message?;
            *channels.entry(channel).or_default() += 1;
        }
        if step.events == 0 {
            let Some(dead) = or_stop(stop, dead_letter(pg)).await else {
                return Ok(());
            };
            dead?;
        }
        if or_stop(stop, tokio::time::sleep(PAUSE)).await.is_none() {
            return Ok(());
        }
    }
    summary(pg, &channels)
}

/// `Some(output)` of `fut`, or `None` once `stop` turns true.
async fn or_stop<T>(
    stop: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = fut => Some(out),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Waits for the next event, prints it, and returns its channel.
async fn next_event(messages: &mut broadcast::Receiver<Message>) -> Result<String, Error> {
    let message = tokio::time::timeout(DEADLINE, messages.recv())
        .await
        .map_err(|_| format!("no event arrived within {DEADLINE:?}"))??;
    let channel = message.channel.to_string();
    let payload = message.value.as_string().unwrap_or_default();
    println!(
        "{}",
        clip(format!("   → {channel:<34} {}", describe(&payload)))
    );
    Ok(channel)
}

/// The parts of an event the demo shows.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shown<'a> {
    operation: &'a str,
    record_id: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    old: Option<&'a RawValue>,
}

/// `OPERATION recordId fields`: for an UPDATE the changed fields as old → new, otherwise the
/// row without its null fields. Numbers are shown as PostgreSQL wrote them.
fn describe(payload: &str) -> String {
    let Ok(event) = serde_json::from_str::<Shown>(payload) else {
        return payload.to_string();
    };
    let data = fields(event.data);
    let shown = match fields(event.old) {
        old if event.operation == "UPDATE" && !old.is_empty() => old
            .iter()
            .map(|(k, v)| format!("{k}: {v} → {}", data.get(k).map_or("?", |n| n.get())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => data
            .iter()
            .filter(|(_, v)| v.get() != "null")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    format!(
        "{:<6} {:<7} {shown}",
        event.operation,
        event.record_id.unwrap_or_default()
    )
}

fn fields(object: Option<&RawValue>) -> BTreeMap<String, &RawValue> {
    object
        .and_then(|o| serde_json::from_str(o.get()).ok())
        .unwrap_or_default()
}

/// Cuts a line to [`MAX_LINE`] characters.
fn clip(line: String) -> String {
    match line.char_indices().nth(MAX_LINE - 1) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// Waits for the dead letter of the last step and prints it.
async fn dead_letter(pg: &Postgres) -> Result<(), Error> {
    let deadline = Instant::now() + DEADLINE;
    let query = "SELECT reason || E'\\t' || coalesce(error, '') FROM sluice.dead_letter ORDER BY id DESC LIMIT 1";
    loop {
        let row = pg.psql(DB, query)?;
        if let Some((reason, error)) = row.trim_end().split_once('\t') {
            println!("   ✗ not published; parked in sluice.dead_letter");
            println!("     reason: {reason}");
            println!("{}", clip(format!("     error:  {error}")));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no dead letter appeared within {DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn summary(pg: &Postgres, channels: &BTreeMap<String, usize>) -> Result<(), Error> {
    let events: usize = channels.values().sum();
    let dead: usize = pg
        .psql(DB, "SELECT count(*) FROM sluice.dead_letter")?
        .trim()
        .parse()?;
    let s = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "\nSummary: {events} events on {} channels, {dead} dead letter{}",
        channels.len(),
        s(dead)
    );
    for (channel, n) in channels {
        println!("   {channel:<34} {n} event{}", s(*n));
    }
    println!("\nRun it yourself: write sluice.toml (see config.example.toml), then `sluice setup` and `sluice run`;");
    println!("watch with `sluice tail`.");
    Ok(())
}
