//! The table a backfill reads: its route, its primary key (with types, from the catalog), and
//! the SQL of the row count and of one chunk.

use tokio_postgres::Client;

use crate::config::{qualify, Config, TenantFrom};
use crate::source::logical::snapshot;

/// The alias of the table's rows in the generated SQL: unlikely to be one of its columns (a
/// column of the alias' name would shadow the row in `to_jsonb(alias)`).
const ROW: &str = "sluice_row";

/// What `--tenant` and `--where` select.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub tenant: Option<&'a str>,
    /// Operator-trusted SQL, appended as `AND (<sql>)`.
    pub sql: Option<&'a str>,
}

/// A routed table with a primary key.
#[derive(Debug, Clone)]
pub struct Target {
    /// `schema.table`, as events name it.
    pub table: String,
    quoted: String,
    /// The tenant column, or (tenant from the schema) the table's tenant.
    tenant: Result<String, Option<String>>,
    /// Primary-key columns in key order, with their SQL types.
    keys: Vec<(String, String)>,
}

const KEY_TYPES: &str =
    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_index i \
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
    WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
    ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// Finds the table's route and its key, or says in one line why it cannot be backfilled.
pub async fn resolve(client: &Client, config: &Config, table: &str) -> Result<Target, String> {
    let table = qualify(table);
    let pattern = |t: &&crate::config::TableConfig| {
        let glob = qualify(&t.table);
        let ((g, n), (s, m)) = (split(&glob), split(&table));
        t.is_pattern() && n == m && crate::route::schema::glob_matches(g, s)
    };
    let route = config.tables.iter().find(|t| qualify(&t.table) == table);
    let route = route.or_else(|| config.tables.iter().find(pattern)).ok_or_else(|| {
        format!("table {table} has no route in the config: add a [[tables]] entry for it (only routed tables can be backfilled)")
    })?;
    let quoted = crate::setup::quote_table(&table);
    let shape = crate::setup::table_shape(client, &table)
        .await
        .map_err(|e| crate::pg::describe(&e))?;
    if shape.is_none() {
        return Err(format!(
            "table {table} does not exist in this database; check the --table name"
        ));
    }
    let keys: Vec<(String, String)> = client
        .query(KEY_TYPES, &[&quoted])
        .await
        .map_err(|e| crate::pg::describe(&e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if keys.is_empty() {
        return Err(format!("table {table} has no primary key: backfill reads and resumes in key order; add a primary key first"));
    }
    let tenant = match &route.tenant {
        TenantFrom::Column(c) => Ok(c.clone()),
        TenantFrom::Schema { schema } => {
            let pattern =
                crate::route::schema::SchemaTenant::new(schema).map_err(|e| e.to_string())?;
            Err(pattern.tenant(split(&table).0).map(str::to_string))
        }
    };
    Ok(Target {
        table,
        quoted,
        tenant,
        keys,
    })
}

/// `schema.table` into its two parts.
fn split(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

impl Target {
    /// Splits a `--after` key (composite keys joined by ',') into one text per key column.
    pub fn parse_key(&self, key: &str) -> Result<Vec<String>, String> {
        let parts: Vec<String> = key.split(',').map(str::to_string).collect();
        if parts.len() != self.keys.len() {
            let names: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
            return Err(format!(
                "--after {key:?} has {} part(s) but the key of {} is ({})",
                parts.len(),
                self.table,
                names.join(", ")
            ));
        }
        Ok(parts)
    }

    /// `SELECT count(*)` of the rows a backfill from `after` would read.
    pub fn count_sql(&self, filter: Filter<'_>, after: Option<&[String]>) -> (String, Vec<String>) {
        let (condition, params) = self.condition(filter, after);
        (
            format!(
                "SELECT count(*) FROM {} {ROW} WHERE {condition}",
                self.quoted
            ),
            params,
        )
    }

    /// One chunk: lock the next `limit` rows after `after` FOR SHARE and write their snapshot
    /// into the stream (`logical`: WAL messages; otherwise `sluice.change_log` rows). Returns
    /// one row per snapshotted row, in key order, holding its key as `text[]`.
    pub fn chunk_sql(
        &self,
        logical: bool,
        filter: Filter<'_>,
        after: Option<&[String]>,
        limit: i64,
    ) -> (String, Vec<String>) {
        let (condition, params) = self.condition(filter, after);
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(k, _)| format!("{ROW}.{}", ident(k)))
            .collect();
        let text: Vec<String> = keys.iter().map(|k| format!("{k}::text")).collect();
        let chunk = format!(
            "WITH chunk AS MATERIALIZED (SELECT to_jsonb({ROW}) AS r, ARRAY[{}] AS k FROM {} {ROW} WHERE {condition} \
             ORDER BY {} LIMIT {limit} FOR SHARE OF {ROW})",
            text.join(", "),
            self.quoted,
            keys.join(", ")
        );
        let write = if logical { self.emit() } else { self.insert() };
        (format!("{chunk}{write}"), params)
    }

    /// Logical mode: one transactional message per row (content: see `logical::snapshot`).
    /// The record key is the key columns' text, as pgoutput sends them.
    fn emit(&self) -> String {
        format!(
            "\nSELECT k, pg_logical_emit_message(true, {}, \
             json_build_object('table', {}, 'id', array_to_string(k, ','), 'row', r)::text) FROM chunk",
            literal(snapshot::PREFIX),
            literal(&self.table)
        )
    }

    /// Trigger mode: the rows `sluice.capture()` would write, with operation SNAPSHOT.
    fn insert(&self) -> String {
        let names: Vec<String> = self.keys.iter().map(|(k, _)| literal(k)).collect();
        format!(
            ",\nins AS (INSERT INTO sluice.change_log (table_name, operation, record_id, tenant_id, new_row) \
             SELECT {}, 'SNAPSHOT', sluice.record_key(r, ARRAY[{}]::text[]), r ->> {}, r FROM chunk)\nSELECT k FROM chunk",
            literal(&self.table),
            names.join(", "),
            literal(self.tenant.as_deref().unwrap_or(""))
        )
    }

    /// The WHERE condition and its text parameters ($1, $2, ...).
    fn condition(&self, filter: Filter<'_>, after: Option<&[String]>) -> (String, Vec<String>) {
        let mut parts = vec!["true".to_string()];
        let mut params = Vec::new();
        if let Some(tenant) = filter.tenant {
            params.push(tenant.to_string());
            parts.push(match &self.tenant {
                Ok(column) => format!("{ROW}.{}::text = $1::text", ident(column)),
                Err(of_schema) => format!(
                    "{}::text = $1::text",
                    literal(of_schema.as_deref().unwrap_or(""))
                ),
            });
        }
        if let Some(sql) = filter.sql {
            parts.push(format!("({sql})"));
        }
        if let Some(after) = after {
            let columns: Vec<String> = self
                .keys
                .iter()
                .map(|(k, _)| format!("{ROW}.{}", ident(k)))
                .collect();
            let values: Vec<String> = self
                .keys
                .iter()
                .zip(after)
                .enumerate()
                .map(|(i, ((_, ty), _))| format!("${}::text::{ty}", params.len() + i + 1))
                .collect();
            params.extend(after.iter().cloned());
            parts.push(format!(
                "({}) > ({})",
                columns.join(", "),
                values.join(", ")
            ));
        }
        (parts.join(" AND "), params)
    }
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            table: "public.t".into(),
            quoted: "\"public\".\"t\"".into(),
            tenant: Ok("tenant_id".into()),
            keys: vec![
                ("a".into(), "bigint".into()),
                ("b\"x".into(), "text".into()),
            ],
        }
    }

    #[test]
    fn the_condition_numbers_tenant_then_key_parameters() {
        let after = ["42".to_string(), "x".to_string()];
        let filter = Filter {
            tenant: Some("t1"),
            sql: Some("n > 1"),
        };
        let (sql, params) = target().count_sql(filter, Some(&after));
        assert_eq!(
            sql,
            "SELECT count(*) FROM \"public\".\"t\" sluice_row WHERE true AND sluice_row.\"tenant_id\"::text = $1::text AND (n > 1) \
             AND (sluice_row.\"a\", sluice_row.\"b\"\"x\") > ($2::text::bigint, $3::text::text)"
        );
        assert_eq!(params, ["t1", "42", "x"]);
        let (sql, params) = target().count_sql(Filter::default(), None);
        assert!(sql.ends_with("WHERE true") && params.is_empty(), "{sql}");
    }

    #[test]
    fn a_chunk_locks_in_key_order_and_writes_into_the_stream() {
        let (sql, _) = target().chunk_sql(false, Filter::default(), None, 50);
        assert!(
            sql.contains(
                "ORDER BY sluice_row.\"a\", sluice_row.\"b\"\"x\" LIMIT 50 FOR SHARE OF sluice_row"
            ),
            "{sql}"
        );
        assert!(sql.contains("'SNAPSHOT', sluice.record_key(r, ARRAY['a', 'b\"x']::text[]), r ->> 'tenant_id', r"), "{sql}");
        let (sql, _) = target().chunk_sql(true, Filter::default(), None, 50);
        assert!(sql.contains("pg_logical_emit_message(true, 'sluice.snapshot', json_build_object('table', 'public.t'"), "{sql}");
        assert!(!sql.contains("change_log"), "{sql}");
    }

    #[test]
    fn a_resume_key_has_one_part_per_key_column() {
        assert_eq!(target().parse_key("42,x").unwrap(), ["42", "x"]);
        let err = target().parse_key("42").unwrap_err();
        assert!(err.contains("(a, b\"x)"), "{err}");
    }
}
