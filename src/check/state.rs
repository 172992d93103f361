//! `check` beyond the schema: the role's privileges on Sluice's own tables, the server settings
//! that decide whether a stalled slot can fill the disk, and what is waiting for an operator
//! (open dead letters, a backlog). Each finding says what to do.

use std::time::Duration;

use tokio_postgres::Client;

use super::{fail, ok, warn, Finding};
use crate::config::{Config, SourceMode};
use crate::pg;

pub async fn check(client: &Client, config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(privileges(client, config).await);
    if config.source.mode == SourceMode::Logical {
        out.extend(wal_settings(client, config.source.status_interval).await);
    }
    out.push(dead_letters(client).await);
    out
}

/// The privileges `run` and the recovery commands need on the sluice tables, checked only
/// where the table exists (a missing one is reported as "run setup" already).
async fn privileges(client: &Client, config: &Config) -> Vec<Finding> {
    let mut needs = vec![
        ("sluice.checkpoint", "SELECT,UPDATE"),
        ("sluice.dead_letter", "SELECT,INSERT,UPDATE,DELETE"),
    ];
    if config.source.mode == SourceMode::Trigger || config.source.keep_history {
        needs.push(("sluice.change_log", "SELECT,INSERT,DELETE"));
    }
    let sql = "SELECT to_regclass($1) IS NULL OR has_table_privilege(current_user, $1, $2)";
    let mut missing = Vec::new();
    for (table, privileges) in needs {
        match client.query_one(sql, &[&table, &privileges]).await {
            Ok(r) if r.get::<_, bool>(0) => {}
            Ok(_) => missing.push(format!("GRANT {privileges} ON {table} TO CURRENT_USER")),
            Err(e) => return vec![fail(format!("privileges: {}", pg::describe(&e)))],
        }
    }
    if config.source.mode == SourceMode::Logical && config.source.keep_history {
        if let Ok(r) = client
            .query_one("SELECT to_regclass('sluice.change_log') IS NULL", &[])
            .await
        {
            if r.get::<_, bool>(0) {
                return vec![fail(
                    "source.keep_history: sluice.change_log is missing; run `sluice setup`",
                )];
            }
        }
    }
    match missing.is_empty() {
        true => vec![ok(
            "privileges: the role may read and write the sluice tables",
        )],
        false => vec![fail(format!(
            "privileges missing on the sluice tables; as their owner: {}",
            missing.join("; ")
        ))],
    }
}

/// Whether WAL kept for a stalled slot is bounded, and whether status updates come often
/// enough for the walsender not to time the connection out.
async fn wal_settings(client: &Client, status_interval: Duration) -> Vec<Finding> {
    let sql = "SELECT current_setting('max_slot_wal_keep_size'), \
        extract(epoch FROM current_setting('wal_sender_timeout')::interval)::float8";
    let (keep, timeout): (String, f64) = match client.query_one(sql, &[]).await {
        Ok(r) => (r.get(0), r.get(1)),
        Err(e) => return vec![fail(format!("wal settings: {}", pg::describe(&e)))],
    };
    let mut out = vec![if keep == "-1" {
        warn(
            "max_slot_wal_keep_size = -1: a slot that stops moving keeps WAL until the disk is full; \
             set it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB') and rely on source.max_retained_wal to alert first",
        )
    } else {
        ok(format!(
            "max_slot_wal_keep_size = {keep}: WAL kept for the slot is bounded"
        ))
    }];
    if timeout > 0.0 && status_interval.as_secs_f64() * 2.0 > timeout {
        out.push(fail(format!(
            "source.status_interval ({}) is over half of wal_sender_timeout ({timeout}s): the server may drop the stream; lower status_interval",
            humantime::format_duration(status_interval)
        )));
    }
    out
}

/// Open dead letters, by reason: not a failure, but someone should look.
async fn dead_letters(client: &Client) -> Finding {
    let sql = "SELECT coalesce(string_agg(reason || ' ' || n, ', ' ORDER BY n DESC), ''), coalesce(sum(n), 0)::int8 \
        FROM (SELECT reason, count(*) AS n FROM sluice.dead_letter WHERE resolved_at IS NULL GROUP BY reason) r";
    if !matches!(client.query_one("SELECT to_regclass('sluice.dead_letter') IS NOT NULL", &[]).await, Ok(r) if r.get::<_, bool>(0))
    {
        return ok("dead letters: table not set up yet");
    }
    match client.query_one(sql, &[]).await {
        Ok(r) if r.get::<_, i64>(1) == 0 => ok("dead letters: none open"),
        Ok(r) => warn(format!(
            "dead letters: {} open ({}); see `sluice dead-letters list`, fix the cause, then `sluice replay dead-letters`",
            r.get::<_, i64>(1),
            r.get::<_, String>(0)
        )),
        Err(e) => fail(format!("dead letters: {}", pg::describe(&e))),
    }
}
