//! `check` in logical mode: wal_level, the REPLICATION privilege, the publication, the slot's
//! state and each table's replica identity, every failure with its fix.

use tokio_postgres::Client;

use super::{fail, ok, warn, Finding};
use crate::config::{Config, TableConfig};
use crate::pg;
use crate::setup::{quote_table, TableShape};

pub async fn check(
    client: &Client,
    config: &Config,
    tables: &[(&TableConfig, String)],
    version: i32,
) -> Vec<Finding> {
    let mut out = Vec::new();
    match client.query_one("SELECT current_setting('wal_level'), (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text", &[]).await {
        Ok(r) => {
            let (level, replication, user): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
            out.push(if level == "logical" {
                ok("wal_level: logical")
            } else {
                fail(format!("wal_level is {level}: set wal_level = logical in postgresql.conf and restart PostgreSQL"))
            });
            out.push(if replication {
                ok(format!("role {user}: may replicate"))
            } else {
                fail(format!("role {user} lacks REPLICATION: ALTER ROLE \"{user}\" REPLICATION"))
            });
        }
        Err(e) => out.push(fail(format!("postgres: {}", pg::describe(&e)))),
    }
    out.push(publication(client, &config.source.publication, tables).await);
    out.push(slot(client, &config.source.slot).await);
    out.extend(
        super::failover::check(client, &config.postgres.url, &config.source.slot, version).await,
    );
    for (t, table) in tables {
        out.extend(generated_columns(client, t, table, version).await);
    }
    out
}

/// pgoutput sends stored generated columns from PostgreSQL 18 on (setup publishes them), and
/// virtual ones never: events in logical mode lack what it does not send.
async fn generated_columns(
    client: &Client,
    t: &TableConfig,
    table: &str,
    version: i32,
) -> Vec<Finding> {
    let sql = "SELECT attname::text, attgenerated::text FROM pg_attribute \
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attgenerated <> '' \
        ORDER BY attnum";
    let rows = match client.query(sql, &[&quote_table(table)]).await {
        Ok(rows) => rows,
        Err(e) => return vec![fail(format!("table {table}: {}", pg::describe(&e)))],
    };
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| version < 180000 || r.get::<_, String>(1) == "v")
        .map(|r| r.get(0))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let why = if version < 180000 {
        "PostgreSQL before 18 does not replicate generated columns"
    } else {
        "PostgreSQL does not replicate virtual generated columns"
    };
    let routing: Vec<&str> = t
        .routing_columns()
        .map(|(c, _)| c)
        .filter(|c| missing.iter().any(|m| m == c))
        .collect();
    if !routing.is_empty() {
        return vec![fail(format!(
            "table {table}: routing column(s) {} are generated and logical mode cannot route by them: {why}; \
             use source.mode = \"trigger\", a STORED column on PostgreSQL 18+, a column written by the \
             application, or for the tenant its schema (tenant = {{ schema = \"...\" }})",
            routing.join(", ")
        ))];
    }
    vec![warn(format!(
        "table {table}: logical-mode events lack generated column(s) {}: {why} (trigger mode \
         has them; make them STORED on PostgreSQL 18+, or compute them in the consumer)",
        missing.join(", ")
    ))]
}

async fn publication(client: &Client, name: &str, tables: &[(&TableConfig, String)]) -> Finding {
    let names: Vec<String> = tables.iter().map(|(_, t)| quote_table(t)).collect();
    let sql = "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = $1), \
        (SELECT array_agg(t) FROM unnest($2::text[]) t WHERE NOT EXISTS (SELECT 1 FROM pg_publication_rel r \
         JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1 AND r.prrelid = to_regclass(t)))";
    match client.query_one(sql, &[&name, &names]).await {
        Ok(r) if r.get::<_, i64>(0) == 0 => {
            fail(format!("publication {name}: missing; run `sluice setup`"))
        }
        Ok(r) => match r.get::<_, Option<Vec<String>>>(1) {
            Some(missing) => fail(format!(
                "publication {name}: lacks {} of the {} configured tables ({}); run `sluice setup`",
                missing.len(),
                tables.len(),
                missing.join(", ")
            )),
            None => ok(format!("publication {name}: all {} tables", tables.len())),
        },
        Err(e) => fail(format!("publication {name}: {}", pg::describe(&e))),
    }
}

async fn slot(client: &Client, name: &str) -> Finding {
    let sql = "SELECT plugin::text, coalesce(wal_status, ''), active_pid, \
        pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) FROM pg_replication_slots WHERE slot_name = $1";
    let row = match client.query_opt(sql, &[&name]).await {
        Ok(Some(r)) => r,
        Ok(None) => return fail(format!("slot {name}: missing; run `sluice setup`")),
        Err(e) => return fail(format!("slot {name}: {}", pg::describe(&e))),
    };
    let (plugin, status, pid, retained): (String, String, Option<i32>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let retained = retained.unwrap_or_else(|| "0 bytes".into());
    if plugin != "pgoutput" {
        return fail(format!("slot {name}: uses plugin {plugin}, not pgoutput; drop it or choose another source.slot"));
    }
    if status == "lost" {
        return fail(format!("slot {name}: invalidated, its WAL is gone; `sluice setup --recreate-slot`, then backfill"));
    }
    let holder = pid.map_or("inactive".to_string(), |p| format!("in use by pid {p}"));
    ok(format!(
        "slot {name}: {holder}, wal_status {status}, retaining {retained} of WAL"
    ))
}

/// A table whose routing columns are outside its primary key needs REPLICA IDENTITY FULL.
pub async fn replica_identity(
    client: &Client,
    t: &TableConfig,
    table: &str,
    shape: &TableShape,
) -> Vec<Finding> {
    let routing: Vec<&str> = t.routing_columns().map(|(c, _)| c).collect();
    if routing
        .iter()
        .all(|c| shape.primary_key.iter().any(|k| k == c))
    {
        return Vec::new();
    }
    let sql = "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)";
    match client.query_one(sql, &[&quote_table(table)]).await {
        Ok(r) if r.get::<_, String>(0) == "f" => Vec::new(),
        Ok(_) => vec![fail(format!(
            "table {table}: DELETEs would lack {}; ALTER TABLE {} REPLICA IDENTITY FULL (or run `sluice setup`)",
            routing.join(", "),
            quote_table(table)
        ))],
        Err(e) => vec![fail(format!("table {table}: {}", pg::describe(&e)))],
    }
}
