//! `check` on PostgreSQL 17+: is the slot a failover slot, does a standby synchronise it, and
//! does `synchronized_standby_slots` protect it or, with a missing or inactive standby slot,
//! stall it (see `source::logical::failover`).

use tokio_postgres::Client;

use super::{fail, ok, warn, Finding};
use crate::pg;
use crate::source::logical::failover::standby_stall;

const SLOT: &str = "SELECT failover FROM pg_replication_slots WHERE slot_name = $1";
/// A standby with `sync_replication_slots = on` runs a slotsync worker connected to us.
const SYNCING: &str = "SELECT coalesce(client_addr::text, 'local') FROM pg_stat_activity \
    WHERE application_name LIKE '%slotsync worker' ORDER BY 1";

pub async fn check(client: &Client, slot: &str, version: i32) -> Vec<Finding> {
    if version < 170000 {
        return Vec::new();
    }
    match findings(client, slot).await {
        Ok(out) => out,
        Err(e) => vec![fail(format!("failover: {}", pg::describe(&e)))],
    }
}

async fn findings(client: &Client, slot: &str) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let Some(row) = client.query_opt(SLOT, &[&slot]).await? else {
        return Ok(Vec::new()); // the slot line already says it is missing
    };
    if !row.get::<_, bool>(0) {
        return Ok(vec![warn(format!(
            "slot {slot}: not a failover slot, so no standby keeps it and a promotion loses it; \
             with the daemon stopped, run ALTER_REPLICATION_SLOT {slot} (FAILOVER true) on a \
             replication connection (psql \"dbname=... replication=database\")"
        ))]);
    }
    let mut out = vec![ok(format!("slot {slot}: failover slot"))];
    let syncing: Vec<String> = client
        .query(SYNCING, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    out.push(if syncing.is_empty() {
        warn(format!(
            "slot {slot}: no standby synchronises it (no slotsync worker is connected); on the \
             standby set sync_replication_slots = on, hot_standby_feedback = on, \
             primary_slot_name, and dbname in primary_conninfo"
        ))
    } else {
        ok(format!(
            "slot {slot}: a standby synchronises it (slotsync worker from {})",
            syncing.join(", ")
        ))
    });
    let listed: String = client
        .query_one("SELECT current_setting('synchronized_standby_slots')", &[])
        .await?
        .get(0);
    out.push(match standby_stall(client, slot).await? {
        Some(why) => warn(why),
        None if listed.trim().is_empty() => warn(
            "synchronized_standby_slots is empty: Sluice may publish changes a standby has not \
             received yet, which a promotion of that standby loses; list its physical slot there",
        ),
        None => ok(format!(
            "synchronized_standby_slots: {listed}; decoding waits for them, and they are active"
        )),
    });
    Ok(out)
}
