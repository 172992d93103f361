//! `sluice check`: validates the config and the servers, one line per finding, each failure
//! with what to do about it. Exit status 1 when anything failed.

use std::fmt;

mod encryption;
mod failover;
mod logical;
mod partitions;
mod state;

use crate::config::{qualify, Config, SourceMode, TableConfig};
use crate::setup::table_shape;
use crate::{pg, redact};

/// One finding. A warning does not fail the check: it works, but an operator should know.
pub struct Finding {
    pub ok: bool,
    pub warn: bool,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match (self.ok, self.warn) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok  ",
        };
        write!(f, "{label} {}", self.text)
    }
}

pub(crate) fn ok(text: impl Into<String>) -> Finding {
    Finding {
        ok: true,
        warn: false,
        text: text.into(),
    }
}

pub(crate) fn warn(text: impl Into<String>) -> Finding {
    Finding {
        ok: true,
        warn: true,
        text: text.into(),
    }
}

pub(crate) fn fail(text: impl Into<String>) -> Finding {
    Finding {
        ok: false,
        warn: false,
        text: text.into(),
    }
}

/// Runs every check; the config itself was validated when it was loaded.
pub async fn check(config: &Config) -> Vec<Finding> {
    let mut out = vec![ok(format!(
        "config: {} tables, {} apps, mode {}",
        config.tables.len(),
        config.apps.len(),
        config.source.mode.as_str()
    ))];
    out.extend(check_postgres(config).await);
    out.extend(encryption::redis(&config.redis, &config.history).await);
    let secrets = redact::secrets(&[&config.postgres.url, &config.redis.url]);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    out.into_iter()
        .map(|f| Finding {
            text: redact::text(&f.text, &secrets),
            ..f
        })
        .collect()
}

async fn check_postgres(config: &Config) -> Vec<Finding> {
    let url = redact::url(&config.postgres.url);
    let conn = match pg::connect(&config.postgres.url, config.postgres.connect_timeout).await {
        Ok(c) => c,
        Err(e @ pg::PgError::Tls(_)) => return vec![fail(format!("postgres {url}: {e}"))],
        Err(e) => {
            return vec![fail(format!(
            "postgres {url}: {e}; check postgres.url (or DATABASE_URL) and that the server runs"
        ))]
        }
    };
    let mut out = vec![
        ok(format!("postgres {url}: connected")),
        encryption::postgres(&conn.client, &config.postgres.url).await,
    ];
    let version: i32 = match conn
        .client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
    {
        Ok(r) => r.get(0),
        Err(e) => return vec![fail(format!("postgres: {}", pg::describe(&e)))],
    };
    out.push(if version >= 130000 {
        ok(format!("postgres version {}", version / 10000))
    } else {
        fail(format!(
            "postgres version {} is too old: Sluice needs PostgreSQL 13 or newer",
            version / 10000
        ))
    });
    let logical = config.source.mode == SourceMode::Logical;
    out.push(check_schema(&conn.client, logical).await);
    let tables = match covered(&conn.client, config).await {
        Ok(tables) => tables,
        Err(e) => return vec![fail(format!("postgres: {}", pg::describe(&e)))],
    };
    out.extend(patterns(config, &tables));
    if logical {
        out.extend(logical::check(&conn.client, config, &tables, version).await);
    }
    for (t, table) in &tables {
        out.extend(check_table(&conn.client, t, table, logical).await);
    }
    out.extend(partitions::check(&conn.client, config).await);
    out.extend(state::check(&conn.client, config).await);
    out
}

async fn check_schema(client: &tokio_postgres::Client, logical: bool) -> Finding {
    let sql = if logical {
        "SELECT to_regclass('sluice.dead_letter') IS NOT NULL"
    } else {
        "SELECT to_regclass('sluice.change_log') IS NOT NULL AND to_regclass('sluice.dead_letter') IS NOT NULL \
         AND EXISTS (SELECT 1 FROM sluice.checkpoint WHERE name = 'change_log')"
    };
    match client
        .query_one("SELECT to_regclass('sluice.checkpoint') IS NOT NULL", &[])
        .await
    {
        Ok(r) if r.get::<_, bool>(0) => {}
        Ok(_) => return fail("schema sluice: missing; run `sluice setup`"),
        Err(e) => return fail(format!("schema sluice: {}", pg::describe(&e))),
    }
    match client.query_one(sql, &[]).await {
        Ok(r) if r.get::<_, bool>(0) => ok("schema sluice: present"),
        Ok(_) => fail("schema sluice: incomplete; run `sluice setup`"),
        Err(e) => fail(format!("schema sluice: {}", pg::describe(&e))),
    }
}

/// Every table the config covers, with its entry: each table named, and each existing table
/// a pattern matches.
async fn covered<'a>(
    client: &tokio_postgres::Client,
    config: &'a Config,
) -> Result<Vec<(&'a TableConfig, String)>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for (i, t) in config.tables.iter().enumerate() {
        match t.is_pattern() {
            true => out.extend(
                crate::setup::patterns::matches(client, config, i)
                    .await?
                    .into_iter()
                    .map(|table| (t, table)),
            ),
            false => out.push((t, qualify(&t.table))),
        }
    }
    Ok(out)
}

/// How many tables each pattern covers; a warning for one that covers none.
fn patterns(config: &Config, tables: &[(&TableConfig, String)]) -> Vec<Finding> {
    let patterns = config.tables.iter().filter(|t| t.is_pattern());
    patterns
        .map(|t| {
            let n = tables.iter().filter(|(c, _)| std::ptr::eq(*c, t)).count();
            match n {
                0 => warn(format!("pattern {}: matches no table yet", t.table)),
                n => ok(format!("pattern {}: matches {n} table(s)", t.table)),
            }
        })
        .collect()
}

async fn check_table(
    client: &tokio_postgres::Client,
    t: &TableConfig,
    table: &str,
    logical: bool,
) -> Vec<Finding> {
    let table = table.to_string();
    let shape = match table_shape(client, &table).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return vec![fail(format!(
                "table {table}: does not exist; create it or remove it from [[tables]]"
            ))]
        }
        Err(e) => return vec![fail(format!("table {table}: {}", pg::describe(&e)))],
    };
    let mut out = Vec::new();
    for (column, key) in t.routing_columns() {
        if !shape.columns.iter().any(|c| c == column) {
            out.push(fail(format!(
                "table {table}: no column {column} (its {key} in the config)"
            )));
        }
    }
    if shape.primary_key.is_empty() {
        out.push(fail(format!(
            "table {table}: no primary key; add one so events carry a recordId and old values"
        )));
    }
    if logical {
        out.extend(logical::replica_identity(client, t, &table, &shape).await);
        if out.is_empty() {
            out.push(ok(format!(
                "table {table}: columns, primary key and replica identity fit the routes"
            )));
        }
        return out;
    }
    let triggers: i64 = match client
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname LIKE 'sluice_capture_%'", &[&crate::setup::quote_table(&table)])
        .await
    {
        Ok(r) => r.get(0),
        Err(e) => return vec![fail(format!("table {table}: {}", pg::describe(&e)))],
    };
    if triggers < 4 {
        out.push(fail(format!(
            "table {table}: capture triggers missing ({triggers} of 4); run `sluice setup`"
        )));
    }
    if out.is_empty() {
        out.push(ok(format!(
            "table {table}: columns, primary key and capture triggers present"
        )));
    }
    out
}
