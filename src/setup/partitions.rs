//! Partitioned tables: what `setup` adds for them. The SQL side is `sql/003_partitions.sql`,
//! whose header has the argument: each partition of a captured table gets copies of its
//! capture triggers (trigger mode) or its `REPLICA IDENTITY FULL` (logical mode), now by
//! `setup` and later by the event trigger [`EVENT_TRIGGER`] as partitions are added.

use tokio_postgres::Client;

use super::{literal, quote_table};

/// The functions, in every setup.
pub const SQL: &str = include_str!("../../sql/003_partitions.sql");

/// The event trigger that covers partitions added after setup.
pub const EVENT_TRIGGER: &str = "sluice_partitions";

/// Creates [`EVENT_TRIGGER`] when a configured table is partitioned, and only a superuser may.
const CREATE_EVENT_TRIGGER: &str = "DO $sluice$ BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        DROP EVENT TRIGGER IF EXISTS sluice_partitions;
        CREATE EVENT TRIGGER sluice_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION sluice.on_ddl_command_end();
    END IF;
END $sluice$;
";

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("{}", crate::pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("table {table} is a partition of {parent}, which is configured too: its changes are published as {parent}'s; keep one of them in [[tables]]")]
    Nested { table: String, parent: String },
}

/// Whether a table is partitioned, and its ancestors as `schema.table` (none unless it is a
/// partition).
const PLACE: &str = "SELECT c.relkind = 'p', \
    (SELECT array_agg(n.nspname || '.' || a.relname) FROM pg_partition_ancestors(c.oid) p \
     JOIN pg_class a ON a.oid = p.relid JOIN pg_namespace n ON n.oid = a.relnamespace WHERE p.relid <> c.oid) \
    FROM pg_class c WHERE c.oid = to_regclass($1)";

const SUPERUSER: &str = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user";

/// Setup's statements for the partitions of the configured tables (`schema.table`, each
/// known to exist): one `sluice.cover_partitions` call per partitioned table, then the event
/// trigger. A configured partition of another configured table is an error: its changes can
/// only go to one route.
pub async fn plan(client: &Client, tables: &[String]) -> Result<String, PartitionError> {
    let mut sql = String::new();
    for table in tables {
        let Some(row) = client.query_opt(PLACE, &[&quote_table(table)]).await? else {
            continue;
        };
        let (partitioned, ancestors): (bool, Option<Vec<String>>) = (row.get(0), row.get(1));
        if let Some(parent) = ancestors
            .unwrap_or_default()
            .into_iter()
            .find(|a| tables.contains(a))
        {
            return Err(PartitionError::Nested {
                table: table.clone(),
                parent,
            });
        }
        if partitioned {
            sql.push_str(&format!(
                "SELECT sluice.cover_partitions({});\n",
                literal(&quote_table(table))
            ));
        }
    }
    if sql.is_empty() {
        return Ok(sql);
    }
    if !client.query_one(SUPERUSER, &[]).await?.get::<_, bool>(0) {
        tracing::warn!(
            event_trigger = EVENT_TRIGGER,
            "not a superuser: the event trigger that covers partitions created from now on is not installed; \
             run `sluice setup` again after adding a partition, or once as a superuser"
        );
    }
    Ok(format!("\n-- the partitions of the configured tables (sql/003_partitions.sql)\n{sql}{CREATE_EVENT_TRIGGER}"))
}

/// The event trigger: `None` when it is not installed, else whether it is enabled.
pub async fn event_trigger(client: &Client) -> Result<Option<bool>, tokio_postgres::Error> {
    let sql = "SELECT evtenabled <> 'D' FROM pg_event_trigger WHERE evtname = $1";
    Ok(client
        .query_opt(sql, &[&EVENT_TRIGGER])
        .await?
        .map(|r| r.get(0)))
}
