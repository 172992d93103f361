//! `cargo run --example stack -- [--mode trigger|logical] [--redis URL] [--sql FILE]`: the
//! servers the consumer SDKs' test suites run against, without the daemon.
//!
//! It starts a throwaway PostgreSQL (temp dir, free port; and a throwaway Redis unless
//! `--redis` names one the caller runs), creates database `app` with the seed tables
//! (`tests/fixtures/seed.sql`) and `--sql`'s statements, writes `sluice.toml` routing them
//! (the seed's three tables, plus `[[tables]]` entries from `--config-extra FILE`), applies
//! `sluice setup`, and prints one JSON line:
//!
//! ```json
//! {"database_url": "...", "redis_url": "...", "config": "/tmp/.../sluice.toml", "sluice": "/.../target/debug/sluice"}
//! ```
//!
//! The caller runs (and kills, and restarts) `sluice run --config <config>` itself. Everything
//! is stopped and deleted when stdin closes, or on SIGTERM/SIGINT.

use std::io::Read;
use std::path::PathBuf;

use sluice::config::Config;
use sluice::testkit::{Postgres, Redis};

type Error = Box<dyn std::error::Error>;

const SEED: &str = include_str!("../tests/fixtures/seed.sql");
const DB: &str = "app";

struct Args {
    mode: String,
    redis: Option<String>,
    sql: Option<PathBuf>,
    extra: Option<PathBuf>,
}

fn args() -> Result<Args, Error> {
    let mut out = Args {
        mode: "logical".into(),
        redis: None,
        sql: None,
        extra: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mode" => out.mode = value,
            "--redis" => out.redis = Some(value),
            "--sql" => out.sql = Some(value.into()),
            "--config-extra" => out.extra = Some(value.into()),
            other => {
                return Err(format!(
                    "unknown flag {other}; see the doc at the top of examples/stack.rs"
                )
                .into())
            }
        }
    }
    Ok(out)
}

fn config(pg: &str, redis: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"[postgres]
url = "{pg}"
[redis]
url = "{redis}"
[source]
mode = "{mode}"
poll_interval = "50ms"
heartbeat_interval = "1s"
status_interval = "1s"
[delivery]
max_backoff = "1s"
[http]
listen = ""
[apps]
crm = {{ prefixes = ["crm.", "user-management", "role-management"] }}
hrms = {{ prefixes = ["hrms."] }}
finance = {{ prefixes = ["finance."] }}
[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = {{ operation_code = "operation_code" }}
state = true
[[tables]]
table = "public.roles"
type = "roles"
tenant = "tenant_id"
app = {{ any_of = "permissions" }}
state = true
[[tables]]
table = "public.users"
type = "users"
tenant = "tenant_id"
app = {{ fixed = ["crm", "hrms"] }}
{extra}
"#
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let pg = Postgres::start()?;
    let own_redis = match &args.redis {
        Some(_) => None,
        None => Some(Redis::start()?),
    };
    let redis_url = args
        .redis
        .clone()
        .unwrap_or_else(|| own_redis.as_ref().expect("started").url());
    pg.psql("postgres", &format!("CREATE DATABASE {DB}"))?;
    pg.psql(DB, SEED)?;
    if let Some(sql) = &args.sql {
        pg.psql(DB, &std::fs::read_to_string(sql)?)?;
    }
    let extra = match &args.extra {
        Some(path) => std::fs::read_to_string(path)?,
        None => String::new(),
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sluice.toml");
    let text = config(&pg.url_for(DB), &redis_url, &args.mode, &extra);
    std::fs::write(&path, &text)?;
    let config = Config::parse(&text, &path)?;
    config.validate(&path)?;
    let conn = sluice::pg::connect(&config.postgres.url, config.postgres.connect_timeout).await?;
    let plan = sluice::setup::plan(&conn.client, &config).await?;
    sluice::setup::apply(&conn.client, &plan).await?;
    drop(conn);
    let exe = std::env::current_exe()?;
    let sluice = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|debug| debug.join("sluice"))
        .ok_or("no target directory")?;
    let line = serde_json::json!({"database_url": pg.url_for(DB), "redis_url": redis_url, "config": path, "sluice": sluice});
    println!("{line}");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stdin_closed => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
