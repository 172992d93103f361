//! Logical mode's replay history (`source.keep_history`): every change Sluice published is also
//! written into `sluice.change_log`, with the `eventId` it was published under, so
//! `sluice replay change-log` can re-publish it later exactly as it went out the first time.
//!
//! A batch is written in one statement after Redis acknowledged it and before the slot is
//! confirmed past it. A crash in between streams the batch again; the unique index on
//! `event_id` makes its second write a no-op. Rows are pruned after `source.retention`.
//!
//! A row that `jsonb` cannot hold (a `json` value with `\u0000`) must not stop the daemon: when
//! the batch's statement fails on such data, it is written again with each row that `jsonb`
//! rejects kept as its JSON text in `meta` (`rawNew`, `rawOld`), which the change_log reader
//! reads back byte for byte. The slower statement runs only for such a batch.

use std::time::Duration;

use crate::event::{Change, Operation};
use crate::pg::{Conn, PgError};
use crate::route::Router;
use crate::source::change_log::Meta;

const INSERT: &str = "INSERT INTO sluice.change_log \
    (event_id, table_name, operation, record_id, tenant_id, new_row, old_row, meta, created_at) \
    SELECT e, tb, op, r, t, n::jsonb, o::jsonb, m::jsonb, ts::timestamptz \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
    AS h(e, tb, op, r, t, n, o, m, ts) \
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING";

/// [`INSERT`], for a batch with a row that `jsonb` rejects.
const INSERT_SAFELY: &str = "INSERT INTO sluice.change_log \
    (event_id, table_name, operation, record_id, tenant_id, new_row, old_row, meta, created_at) \
    SELECT e, tb, op, r, t, nj, oj, \
        m::jsonb || jsonb_strip_nulls(jsonb_build_object('rawNew', CASE WHEN nj IS NULL THEN n END, \
                                                         'rawOld', CASE WHEN oj IS NULL THEN o END)), \
        ts::timestamptz \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
    AS h(e, tb, op, r, t, n, o, m, ts), \
    LATERAL (SELECT sluice.jsonb_or_null(n) AS nj, sluice.jsonb_or_null(o) AS oj) x \
    ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING";

/// History past retention among the 10,000 oldest rows: ids follow commit order here, so a
/// short primary-key scan finds them, also when nothing is due.
const PRUNE: &str = "DELETE FROM sluice.change_log WHERE id IN (SELECT id FROM \
    (SELECT id, created_at FROM sluice.change_log ORDER BY id LIMIT 10000) oldest \
    WHERE created_at < now() - make_interval(secs => $1))";

/// The columns of one batch, in the order of [`INSERT`]'s parameters.
#[derive(Default)]
struct Columns {
    event_id: Vec<String>,
    table: Vec<String>,
    operation: Vec<&'static str>,
    record_id: Vec<Option<String>>,
    tenant: Vec<Option<String>>,
    new_row: Vec<Option<String>>,
    old_row: Vec<Option<String>>,
    meta: Vec<String>,
    timestamp: Vec<String>,
}

impl Columns {
    fn push(&mut self, change: &Change, router: &Router) {
        let (new_row, old_row) = match change.operation {
            Operation::Delete => (None, Some(change.data.clone())),
            Operation::Update => (Some(change.data.clone()), change.old.clone()),
            _ => (Some(change.data.clone()), None),
        };
        let meta = Meta {
            changed_fields: change.changed_fields.clone(),
            unchanged_columns: change.unchanged_columns.clone(),
            lsn: change.source.lsn.clone(),
            xid: change.source.xid,
            raw_new: None,
            raw_old: None,
        };
        self.event_id.push(change.event_id.clone());
        self.table.push(change.table.clone());
        self.operation.push(change.operation.as_str());
        self.record_id.push(change.record_id.clone());
        self.tenant
            .push(router.tenant_of(change).map(|t| t.replace('\0', "\\u0000")));
        self.new_row.push(new_row);
        self.old_row.push(old_row);
        self.meta
            .push(serde_json::to_string(&meta).expect("serialising to memory cannot fail"));
        self.timestamp.push(change.timestamp.clone());
    }
}

/// Writes a delivered batch into the history, in one statement (two for a batch with a row
/// `jsonb` rejects, see the module doc).
pub async fn write(conn: &Conn, router: &Router, changes: &[Change]) -> Result<(), PgError> {
    let mut c = Columns::default();
    changes.iter().for_each(|change| c.push(change, router));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &c.event_id,
        &c.table,
        &c.operation,
        &c.record_id,
        &c.tenant,
        &c.new_row,
        &c.old_row,
        &c.meta,
        &c.timestamp,
    ];
    match conn.bounded(conn.client.execute(INSERT, &params)).await {
        Err(PgError::Postgres(e)) if e.code().is_some_and(|c| c.code().starts_with("22")) => {
            tracing::debug!(error = %crate::pg::describe(&e), "a history row is not valid jsonb; keeping it as text");
            conn.bounded(conn.client.execute(INSERT_SAFELY, &params))
                .await?;
            Ok(())
        }
        other => other.map(drop),
    }
}

/// Deletes history older than `retention`, in chunks; returns how many rows went.
pub async fn prune(conn: &Conn, retention: Duration) -> Result<u64, PgError> {
    let mut total = 0;
    loop {
        let n = conn
            .bounded(conn.client.execute(PRUNE, &[&retention.as_secs_f64()]))
            .await?;
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}
