//! `check` for partitioned tables: every partition of a configured table carries copies of its
//! capture triggers (trigger mode) or its `REPLICA IDENTITY FULL` and the publication sends its
//! changes as the table's (logical mode), and the event trigger that covers partitions added
//! later is installed (see sql/003_partitions.sql).

use tokio_postgres::{Client, Row};

use super::{fail, ok, warn, Finding};
use crate::config::{qualify, Config, SourceMode};
use crate::pg;
use crate::setup::partitions::EVENT_TRIGGER;
use crate::setup::quote_table;

/// Each partition of $1, at any depth: its name, whether its replica identity is FULL, how
/// many of the three capture trigger copies log its changes as $2; and whether $1 is FULL.
const PARTITIONS: &str = "SELECT t.relid::regclass::text, k.relreplident = 'f', \
    (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = t.relid AND g.tgfoid = to_regproc('sluice.capture') \
       AND g.tgname IN ('sluice_capture_insert', 'sluice_capture_update', 'sluice_capture_delete') \
       AND convert_from(substring(g.tgargs FROM 1 FOR position('\\x00'::bytea IN g.tgargs) - 1), getdatabaseencoding()) = $2), \
    (SELECT relreplident = 'f' FROM pg_class WHERE oid = to_regclass($1)) \
    FROM pg_partition_tree(to_regclass($1)) t JOIN pg_class k ON k.oid = t.relid WHERE t.level > 0 ORDER BY t.level, 1";

pub async fn check(client: &Client, config: &Config) -> Vec<Finding> {
    let logical = config.source.mode == SourceMode::Logical;
    let (mut out, mut partitioned) = (Vec::new(), false);
    for t in &config.tables {
        let table = qualify(&t.table);
        match client
            .query(PARTITIONS, &[&quote_table(&table), &table])
            .await
        {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                partitioned = true;
                out.extend(partitions(&table, &rows, logical));
            }
            Err(e) => out.push(fail(format!("table {table}: {}", pg::describe(&e)))),
        }
    }
    if partitioned && logical {
        out.push(via_root(client, &config.source.publication).await);
    }
    if partitioned {
        out.push(event_trigger(client).await);
    }
    out
}

fn partitions(table: &str, rows: &[Row], logical: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in rows {
        let (name, full, copies, table_full): (String, bool, i64, Option<bool>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if logical && table_full == Some(true) && !full {
            out.push(fail(format!(
                "table {table}: partition {name} lacks the table's REPLICA IDENTITY FULL, so its DELETEs would lack the routing columns; run `sluice setup`"
            )));
        }
        if !logical && copies < 3 {
            out.push(fail(format!(
                "table {table}: partition {name} has {copies} of its 3 capture triggers, so writes aimed at it are not all captured; run `sluice setup`"
            )));
        }
    }
    if out.is_empty() {
        let what = if logical {
            "replica identity"
        } else {
            "capture triggers"
        };
        out.push(ok(format!(
            "table {table}: its {} partitions have their {what}",
            rows.len()
        )));
    }
    out
}

/// A partition's changes must carry its partitioned table's name, which routes them.
async fn via_root(client: &Client, publication: &str) -> Finding {
    match client.query_opt("SELECT pubviaroot FROM pg_publication WHERE pubname = $1", &[&publication]).await {
        Ok(Some(r)) if r.get::<_, bool>(0) => ok(format!("publication {publication}: publishes partitions' changes as their partitioned table's")),
        Ok(Some(_)) => fail(format!(
            "publication {publication}: publish_via_partition_root is off, so partitions' changes carry their own names and are dead-lettered as unroutable; run `sluice setup`"
        )),
        Ok(None) => ok(format!("publication {publication}: missing (reported above)")),
        Err(e) => fail(format!("publication {publication}: {}", pg::describe(&e))),
    }
}

async fn event_trigger(client: &Client) -> Finding {
    match crate::setup::partitions::event_trigger(client).await {
        Ok(Some(true)) => ok(format!("event trigger {EVENT_TRIGGER}: partitions added later are covered as they are created")),
        Ok(_) => warn(format!(
            "event trigger {EVENT_TRIGGER}: missing or disabled, so a partition added later is not covered until `sluice setup` runs again; \
             run setup once as a superuser to install it"
        )),
        Err(e) => fail(format!("event trigger {EVENT_TRIGGER}: {}", pg::describe(&e))),
    }
}
