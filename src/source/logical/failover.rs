//! Failover slots (PostgreSQL 17+): the stall that `synchronized_standby_slots` can cause.
//!
//! A primary with `synchronized_standby_slots` does not let logical decoding of a failover
//! slot get ahead of the physical standby slots it lists, so what Sluice has read is always on
//! those standbys too. But when a listed slot is missing, invalidated, or inactive (its standby
//! is down), decoding of every failover slot waits for it, indefinitely, and PostgreSQL says so
//! only in its server log. [`standby_stall`] names that case for `/readyz` and `sluice check`.

use tokio_postgres::Client;

/// The listed standby slots that hold failover slots back, each with what is wrong with it;
/// empty when the slot named `$1` is no failover slot or nothing is wrong. PostgreSQL 17+.
const STALL: &str = "WITH listed AS ( \
      SELECT trim(n) AS name FROM unnest(string_to_array(current_setting('synchronized_standby_slots'), ',')) n \
      WHERE trim(n) <> '') \
    SELECT l.name || ' (' || CASE WHEN s.slot_name IS NULL THEN 'missing' \
        WHEN s.slot_type <> 'physical' THEN 'not a physical slot' \
        WHEN s.wal_status = 'lost' THEN 'invalidated' ELSE 'inactive' END || ')' \
    FROM listed l LEFT JOIN pg_replication_slots s ON s.slot_name = l.name \
    WHERE (s.slot_name IS NULL OR s.slot_type <> 'physical' OR s.wal_status = 'lost' OR NOT s.active) \
      AND coalesce((SELECT failover FROM pg_replication_slots WHERE slot_name = $1), false) \
    ORDER BY 1";

/// The server's `server_version_num`.
pub async fn server_version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let q = "SELECT current_setting('server_version_num')::int";
    Ok(client.query_one(q, &[]).await?.get(0))
}

/// One sentence naming the standby slots that stall decoding of failover slot `slot`, if any.
pub async fn standby_stall(
    client: &Client,
    slot: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    if server_version(client).await? < 170000 {
        return Ok(None);
    }
    let listed: Vec<String> = client
        .query(STALL, &[&slot])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if listed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "logical decoding of failover slot {slot} is stalled: synchronized_standby_slots lists {}, \
         and PostgreSQL holds changes back until such a slot catches up (saying so only in its \
         server log); start the standby or remove the slot from synchronized_standby_slots",
        listed.join(", ")
    )))
}
