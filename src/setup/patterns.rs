//! Tables named by pattern (`table = "tenant_*.leads"`): which existing tables a pattern
//! covers, the rows of `sluice.table_patterns`, and the event trigger [`EVENT_TRIGGER`] that
//! captures matching tables created later. The SQL side is `sql/004_table_patterns.sql`.

use tokio_postgres::Client;

use super::literal;
use crate::config::{qualify, Config, SourceMode, TableConfig};

/// The functions and the pattern table, in every setup.
pub const SQL: &str = include_str!("../../sql/004_table_patterns.sql");

/// The event trigger that captures matching tables created after setup.
pub const EVENT_TRIGGER: &str = "sluice_tables";

/// Creates [`EVENT_TRIGGER`]; only a superuser may.
const CREATE_EVENT_TRIGGER: &str = "DO $sluice$ BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        DROP EVENT TRIGGER IF EXISTS sluice_tables;
        CREATE EVENT TRIGGER sluice_tables ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION sluice.on_table_ddl();
    END IF;
END $sluice$;
";

/// The tables (`schema.table`) that exist and match a pattern entry, leaving out those
/// configured by name and partitions (routed as their root).
const MATCHES: &str = "SELECT n.nspname || '.' || c.relname FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relname = $1 AND n.nspname LIKE $2 AND n.nspname <> 'sluice' \
      AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND NOT (n.nspname || '.' || c.relname = ANY ($3)) \
    ORDER BY 1";

/// The schema glob as a LIKE pattern: `*` is `%`, and LIKE's own `%`, `_` and `\` are escaped.
pub fn like(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The existing tables an entry's pattern covers (the first pattern that matches a table
/// takes it, as routing does).
pub async fn matches(
    client: &Client,
    config: &Config,
    entry: usize,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let exact: Vec<String> = config
        .tables
        .iter()
        .filter(|t| !t.is_pattern())
        .map(|t| qualify(&t.table))
        .collect();
    let mut taken = Vec::new();
    for t in config.tables[..=entry].iter().filter(|t| t.is_pattern()) {
        let (glob, name) = split(t);
        let found: Vec<String> = client
            .query(MATCHES, &[&name, &like(&glob), &exact])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if std::ptr::eq(t, &config.tables[entry]) {
            return Ok(found.into_iter().filter(|f| !taken.contains(f)).collect());
        }
        taken.extend(found);
    }
    Ok(Vec::new())
}

fn split(t: &TableConfig) -> (String, String) {
    let table = qualify(&t.table);
    let (glob, name) = table.split_once('.').unwrap_or_default();
    (glob.to_string(), name.to_string())
}

/// Fills `sluice.table_patterns`: the tables configured by name first (the event trigger
/// leaves them alone), then each pattern in config order.
pub fn register(config: &Config) -> String {
    let mut rows = Vec::new();
    for (i, t) in config.tables.iter().enumerate() {
        let (schema, name) = split(t);
        let (position, schema, mode) = match (t.is_pattern(), config.source.mode) {
            (false, _) => (-1, like(&schema), "skip"),
            (true, SourceMode::Logical) => (i as i64, like(&schema), "logical"),
            (true, SourceMode::Trigger) => (i as i64, like(&schema), "trigger"),
        };
        let routing: Vec<String> = t.routing_columns().map(|(c, _)| literal(c)).collect();
        rows.push(format!(
            "({position}, {}, {}, '{mode}', {}, {}, ARRAY[{}]::text[])",
            literal(&schema),
            literal(&name),
            literal(&config.source.publication),
            literal(t.tenant.column().unwrap_or("")),
            routing.join(", ")
        ));
    }
    format!(
        "\n-- the tables named by pattern, for the event trigger (sql/004_table_patterns.sql)\n\
         DELETE FROM sluice.table_patterns;\nINSERT INTO sluice.table_patterns \
         (position, schema_like, table_name, mode, publication, tenant_column, routing) VALUES\n  {}\n\
         ON CONFLICT DO NOTHING;\n",
        rows.join(",\n  ")
    )
}

/// The event trigger, when a superuser runs setup; otherwise a warning that tables created
/// from now on are captured only when setup runs again.
pub async fn event_trigger(client: &Client) -> Result<String, tokio_postgres::Error> {
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if !superuser {
        tracing::warn!(
            event_trigger = EVENT_TRIGGER,
            "not a superuser: the event trigger that captures tables created from now on that match a [[tables]] pattern is not installed; \
             run `sluice setup` again after creating one (before writing to it), or once as a superuser"
        );
    }
    Ok(CREATE_EVENT_TRIGGER.to_string())
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(like("tenant_*"), "tenant\\_%");
        assert_eq!(like("a%b*"), "a\\%b%");
    }
}
