//! `check` in logical mode: wal_level, the REPLICATION privilege, the publication, the slot's
//! state and each table's replica identity, every failure with its fix.

use tokio_postgres::Client;

use super::{fail, ok, Finding};
use crate::config::{Config, TableConfig};
use crate::pg;
use crate::setup::{quote_table, TableShape};

pub async fn check(client: &Client, config: &Config) -> Vec<Finding> {
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
    out.push(publication(client, &config.source.publication, config.tables.len()).await);
    out.push(slot(client, &config.source.slot).await);
    out
}

async fn publication(client: &Client, name: &str, tables: usize) -> Finding {
    let sql = "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = $1), (SELECT count(*) FROM pg_publication_tables WHERE pubname = $1)";
    match client.query_one(sql, &[&name]).await {
        Ok(r) if r.get::<_, i64>(0) == 0 => {
            fail(format!("publication {name}: missing; run `sluice setup`"))
        }
        Ok(r) if (r.get::<_, i64>(1) as usize) < tables => fail(format!(
            "publication {name}: holds {} of the {tables} configured tables; run `sluice setup`",
            r.get::<_, i64>(1)
        )),
        Ok(_) => ok(format!("publication {name}: all {tables} tables")),
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
    let routing: Vec<&str> = std::iter::once(t.tenant.as_str())
        .chain(t.app.column())
        .collect();
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
