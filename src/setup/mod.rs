//! `sluice setup`: creates or upgrades every SQL object Sluice needs, idempotently, and
//! attaches the capture trigger to every configured table and its partitions (see
//! [`crate::setup::partitions`]). `--dry-run` prints the SQL.

use tokio_postgres::Client;

pub mod partitions;
pub mod patterns;

use crate::config::{qualify, Config, SourceMode, TableConfig};

const SCHEMA: &str = include_str!("../../sql/001_schema.sql");
const CHANGE_LOG: &str = include_str!("../../sql/002_change_log.sql");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{}", crate::pg::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("table {0} named in the config does not exist in this database")]
    NoTable(String),
    #[error("table {table} has no column {column} (named by {key} in the config)")]
    NoColumn {
        table: String,
        column: String,
        key: &'static str,
    },
    #[error(transparent)]
    Partitions(#[from] crate::setup::partitions::PartitionError),
}

/// What a table looks like in the catalog.
pub struct TableShape {
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
}

const COLUMNS: &str = "SELECT attname::text FROM pg_attribute \
    WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum";
const PRIMARY_KEY: &str = "SELECT a.attname::text FROM pg_index i \
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
    WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
    ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// Reads a table's columns and primary key; `None` if the table does not exist.
pub async fn table_shape(
    client: &Client,
    table: &str,
) -> Result<Option<TableShape>, tokio_postgres::Error> {
    let name = quote_table(table);
    let columns: Vec<String> = client
        .query(COLUMNS, &[&name])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if columns.is_empty() {
        return Ok(None);
    }
    let primary_key = client
        .query(PRIMARY_KEY, &[&name])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(TableShape {
        columns,
        primary_key,
    }))
}

/// What `setup` runs: one transaction, then (logical mode) the slot, which PostgreSQL only
/// creates in a transaction that has written nothing.
pub struct Plan {
    pub transaction: String,
    pub slot: Option<String>,
}

impl Plan {
    /// Drops the slot before creating it again (only on the operator's explicit request).
    pub fn recreate_slot(&mut self, name: &str) -> Result<(), String> {
        let create = self
            .slot
            .take()
            .ok_or("--recreate-slot applies to logical mode only")?;
        let drop = format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}", literal(name));
        self.slot = Some(format!("{drop};\n{create}"));
        Ok(())
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "BEGIN;\n{}\nCOMMIT;", self.transaction)?;
        match &self.slot {
            Some(slot) => writeln!(
                f,
                "\n-- the replication slot, in a transaction of its own\n{slot};"
            ),
            None => Ok(()),
        }
    }
}

/// Builds the whole setup, checking that every configured table and column exists.
pub async fn plan(client: &Client, config: &Config) -> Result<Plan, SetupError> {
    let logical = config.source.mode == SourceMode::Logical;
    let mut sql = format!("{SCHEMA}\n");
    if !logical || config.source.keep_history {
        sql.push_str(CHANGE_LOG);
    }
    sql.push_str(crate::setup::partitions::SQL);
    sql.push_str(patterns::SQL);
    let (mut tables, mut names) = (Vec::new(), Vec::new());
    for (i, t) in config.tables.iter().enumerate() {
        let covered = match t.is_pattern() {
            true => patterns::matches(client, config, i).await?,
            false => vec![qualify(&t.table)],
        };
        for table in covered {
            sql.push_str(&capture(client, t, &table, logical).await?);
            tables.push(quote_table(&table));
            names.push(table);
        }
    }
    let patterned = config.tables.iter().any(TableConfig::is_pattern);
    if patterned {
        sql.push_str(&patterns::register(config));
    }
    let mut partitions = crate::setup::partitions::plan(client, &names).await?;
    if patterned {
        partitions.push_str(&patterns::event_trigger(client).await?);
    }
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if !logical {
        sql.push_str(&partitions);
        return Ok(Plan {
            transaction: sql,
            slot: None,
        });
    }
    sql.push_str(&publication(&config.source.publication, &tables, version));
    sql.push_str(&partitions);
    sql.push_str(&format!(
        "\nINSERT INTO sluice.checkpoint (name, position) VALUES ({}, 'start') ON CONFLICT (name) DO NOTHING;\n",
        literal(&config.source.slot)
    ));
    Ok(Plan {
        transaction: sql,
        slot: Some(create_slot(&config.source.slot, version)),
    })
}

/// What captures one existing table: its replica identity (logical mode) or its capture
/// triggers (trigger mode), after checking that it has the columns routing reads.
async fn capture(
    client: &Client,
    t: &TableConfig,
    table: &str,
    logical: bool,
) -> Result<String, SetupError> {
    let shape = table_shape(client, table)
        .await?
        .ok_or_else(|| SetupError::NoTable(table.to_string()))?;
    check_columns(t, table, &shape)?;
    if shape.primary_key.is_empty() {
        tracing::warn!(table = %table, "no primary key: recordId will be empty and UPDATE events carry no old values");
    }
    Ok(match logical {
        true => replica_identity(t, table, &shape),
        false => triggers(table, t.tenant.column().unwrap_or(""), &shape.primary_key),
    })
}

/// The slot; from PostgreSQL 17 on a failover slot, which a standby with
/// `sync_replication_slots = on` keeps a copy of, so Sluice goes on from it after a promotion.
fn create_slot(name: &str, version: i32) -> String {
    let failover = if version >= 170000 {
        ", false, false, true"
    } else {
        ""
    };
    format!(
        "SELECT pg_create_logical_replication_slot({name}, 'pgoutput'{failover}) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {name})",
        name = literal(name)
    )
}

/// A DELETE carries only the replica identity: routing columns outside the primary key need
/// `REPLICA IDENTITY FULL`.
fn replica_identity(t: &TableConfig, table: &str, shape: &TableShape) -> String {
    let covered = !shape.primary_key.is_empty()
        && t.routing_columns()
            .all(|(c, _)| shape.primary_key.iter().any(|k| k == c));
    if covered {
        return String::new();
    }
    format!("\n-- {table}: routing columns outside the primary key must reach DELETE events\nALTER TABLE {} REPLICA IDENTITY FULL;\n", quote_table(table))
}

/// Creates the publication, or resets it to exactly the configured tables. A partition's
/// changes are published as its partitioned table's (PostgreSQL 13+), whose name routes them.
/// From PostgreSQL 18 on, stored generated columns are published too, so `data` holds them as
/// `to_jsonb(row)` and trigger mode do; before 18 pgoutput cannot send them (`check` says so).
fn publication(name: &str, tables: &[String], version: i32) -> String {
    let list = tables.join(", ");
    let options = if version >= 180000 {
        "publish_via_partition_root = true, publish_generated_columns = stored"
    } else {
        "publish_via_partition_root = true"
    };
    if tables.is_empty() {
        // only patterns, none of whose tables exists yet: an empty publication they join
        return format!(
            "\nDO $sluice$ DECLARE r regclass; BEGIN\n  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {lit}) THEN\n    \
             FOR r IN SELECT prrelid::regclass FROM pg_publication_rel JOIN pg_publication p ON p.oid = prpubid WHERE p.pubname = {lit} LOOP\n      \
             EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', {lit}, r);\n    END LOOP;\n    ALTER PUBLICATION {id} SET ({options});\n  \
             ELSE\n    CREATE PUBLICATION {id} WITH ({options});\n  END IF;\nEND $sluice$;\n",
            lit = literal(name),
            id = ident(name)
        );
    }
    format!(
        "\nDO $sluice$ BEGIN\n  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {lit}) THEN\n    \
         ALTER PUBLICATION {id} SET TABLE {list};\n    ALTER PUBLICATION {id} SET ({options});\n  \
         ELSE\n    CREATE PUBLICATION {id} FOR TABLE {list} WITH ({options});\n  END IF;\nEND $sluice$;\n",
        lit = literal(name),
        id = ident(name)
    )
}

fn check_columns(t: &TableConfig, table: &str, shape: &TableShape) -> Result<(), SetupError> {
    for (column, key) in t.routing_columns() {
        if !shape.columns.iter().any(|c| c == column) {
            return Err(SetupError::NoColumn {
                table: table.to_string(),
                column: column.to_string(),
                key,
            });
        }
    }
    Ok(())
}

/// The four capture triggers of one table (statement-level; see sql/002_change_log.sql), which
/// log its changes under the name `table` (`schema.table`, as routes name it).
pub fn triggers(table: &str, tenant: &str, key: &[String]) -> String {
    let target = quote_table(table);
    let args: Vec<String> = [table, tenant]
        .into_iter()
        .chain(key.iter().map(String::as_str))
        .map(literal)
        .collect();
    let call = format!("EXECUTE FUNCTION sluice.capture({})", args.join(", "));
    let mut sql = format!("\n-- capture {table}\n");
    for (name, event, referencing) in [
        (
            "sluice_capture_insert",
            "INSERT",
            "REFERENCING NEW TABLE AS new_table ",
        ),
        (
            "sluice_capture_update",
            "UPDATE",
            "REFERENCING OLD TABLE AS old_table NEW TABLE AS new_table ",
        ),
        (
            "sluice_capture_delete",
            "DELETE",
            "REFERENCING OLD TABLE AS old_table ",
        ),
        ("sluice_capture_truncate", "TRUNCATE", ""),
    ] {
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {name} ON {target};\nCREATE TRIGGER {name} AFTER {event} ON {target} {referencing}FOR EACH STATEMENT {call};\n"
        ));
    }
    sql
}

/// Applies the plan: its transaction, then the slot.
pub async fn apply(client: &Client, plan: &Plan) -> Result<(), SetupError> {
    client
        .batch_execute(&format!("BEGIN;\n{}\nCOMMIT;", plan.transaction))
        .await?;
    if let Some(slot) = &plan.slot {
        for statement in slot.split(";\n") {
            client.batch_execute(statement).await?;
        }
    }
    Ok(())
}

/// `schema.table` with each part quoted as an identifier.
pub fn quote_table(table: &str) -> String {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    format!("{}.{}", ident(schema), ident(name))
}

/// An SQL identifier, quoted.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal, quoted.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_quote_names_and_pass_table_tenant_then_key() {
        let sql = triggers("public.roles", "tenant_id", &["role_id".into()]);
        assert!(sql.contains("AFTER UPDATE ON \"public\".\"roles\" REFERENCING OLD TABLE AS old_table NEW TABLE AS new_table"));
        assert!(sql.contains("sluice.capture('public.roles', 'tenant_id', 'role_id')"));
        assert_eq!(sql.matches("CREATE TRIGGER").count(), 4);
        assert_eq!(quote_table("a\"b.c"), "\"a\"\"b\".\"c\"");
    }
}
