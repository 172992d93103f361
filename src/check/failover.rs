//! `check` on PostgreSQL 17+: is the slot a failover slot, does `synchronized_standby_slots`
//! protect it or, with a missing or inactive standby slot, stall it (see
//! `source::logical::failover`), and does each standby that `postgres.url` lists beside the
//! primary keep a synchronised copy of it (`pg_replication_slots.synced` there).

use tokio_postgres::Client;

use super::{fail, ok, warn, Finding};
use crate::pg;
use crate::source::logical::failover::standby_stall;
use crate::source::replication::hosts::{self, Target};
use crate::tls::postgres::MakeRustls;

/// How long one standby may take to answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const SLOT: &str = "SELECT failover FROM pg_replication_slots WHERE slot_name = $1";
/// On a standby: is it one, and is its copy of the slot synchronised from the primary.
const STANDBY: &str = "SELECT pg_is_in_recovery(), \
    coalesce((SELECT synced FROM pg_replication_slots WHERE slot_name = $1), false)";

pub async fn check(client: &Client, url: &str, slot: &str, version: i32) -> Vec<Finding> {
    if version < 170000 {
        return Vec::new();
    }
    match findings(client, slot).await {
        Ok(mut out) if out.len() > 1 => {
            out.extend(standbys(url, slot).await);
            out
        }
        Ok(out) => out,
        Err(e) => vec![fail(format!("failover: {}", pg::describe(&e)))],
    }
}

/// What each other host of `postgres.url` says about its copy of the slot.
async fn standbys(url: &str, slot: &str) -> Vec<Finding> {
    let Ok((config, tls)) = crate::tls::postgres::config(url) else {
        return Vec::new();
    };
    let Ok(targets) = hosts::targets(&config) else {
        return Vec::new();
    };
    if targets.len() < 2 {
        return vec![warn(format!(
            "slot {slot}: postgres.url names one host; list the standby too (host=a,b with \
             target_session_attrs=read-write) so Sluice follows a promotion and check can see \
             the standby synchronise the slot"
        ))];
    }
    let mut out = Vec::new();
    for target in targets {
        match standby(&config, &tls, &target, slot).await {
            Ok(None) => {}
            Ok(Some(true)) => out.push(ok(format!(
                "slot {slot}: standby {target} synchronises it (synced)"
            ))),
            Ok(Some(false)) => out.push(warn(format!(
                "slot {slot}: standby {target} has no synchronised copy; set \
                 sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name, \
                 and dbname in primary_conninfo there"
            ))),
            Err(e) => out.push(warn(format!("standby {target}: cannot ask it: {e}"))),
        }
    }
    out
}

/// `None` for a primary; for a standby, whether its copy of the slot is synchronised.
async fn standby(
    config: &tokio_postgres::Config,
    tls: &crate::tls::postgres::PgTls,
    target: &Target,
    slot: &str,
) -> Result<Option<bool>, pg::PgError> {
    let mut one = tokio_postgres::Config::new();
    one.host(&target.host).port(target.port);
    if let Ok(addr) = target.addr.parse() {
        one.hostaddr(addr);
    }
    one.user(config.get_user().unwrap_or("postgres"));
    one.password(config.get_password().unwrap_or_default());
    if let Some(db) = config.get_dbname() {
        one.dbname(db);
    }
    one.ssl_mode(config.get_ssl_mode());
    let connector = MakeRustls::new(tls).map_err(|e| pg::PgError::Tls(e.to_string()))?;
    let (client, connection) = tokio::time::timeout(TIMEOUT, one.connect(connector))
        .await
        .map_err(|_| pg::PgError::Timeout(TIMEOUT))??;
    let task = tokio::spawn(connection);
    let row = client.query_one(STANDBY, &[&slot]).await;
    task.abort();
    let row = row?;
    Ok(row.get::<_, bool>(0).then(|| row.get(1)))
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
