//! The dead-letter table: events that cannot be delivered for a reason of their own.
//!
//! They are written in the same statement that moves the source's progress past them, so a
//! change is either published, parked here, or still ahead of the checkpoint: never lost.

use crate::event::Change;

/// Why an event was parked. The strings are stable: they are metric labels and the
/// `reason` column operators filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Unroutable,
    MissingTenant,
    InvalidTenant,
    PayloadTooLarge,
    PublishRejected,
    InvalidKey,
    UnconvertibleValue,
}

impl Reason {
    /// Every reason, for the metrics registered at startup.
    pub const ALL: [Reason; 7] = [
        Reason::Unroutable,
        Reason::MissingTenant,
        Reason::InvalidTenant,
        Reason::PayloadTooLarge,
        Reason::PublishRejected,
        Reason::InvalidKey,
        Reason::UnconvertibleValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unroutable => "unroutable",
            Reason::MissingTenant => "missing_tenant",
            Reason::InvalidTenant => "invalid_tenant",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::PublishRejected => "publish_rejected",
            Reason::InvalidKey => "invalid_key",
            Reason::UnconvertibleValue => "unconvertible_value",
        }
    }
}

/// One row for `sluice.dead_letter`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub event_id: String,
    pub channel: Option<String>,
    pub app: Option<String>,
    pub tenant: Option<String>,
    pub table: String,
    /// The event JSON as it would have been published.
    pub payload: String,
    pub reason: Reason,
    pub error: String,
    pub attempts: i32,
}

impl DeadLetter {
    pub fn new(
        change: &Change,
        channel: Option<String>,
        app: Option<&str>,
        tenant: Option<&str>,
        payload: &[u8],
        reason: Reason,
        error: String,
    ) -> DeadLetter {
        DeadLetter {
            event_id: change.event_id.clone(),
            channel,
            app: app.map(str::to_string),
            tenant: tenant.map(str::to_string),
            table: change.table.clone(),
            payload: String::from_utf8_lossy(payload).into_owned(),
            reason,
            error,
            attempts: 1,
        }
    }
}

/// The statement that inserts a batch of dead letters (arrays, one per column: one round trip),
/// run with the checkpoint update in the same statement, so both land or neither. A payload
/// that `jsonb` cannot hold (a `json` value with `\u0000`, a lone surrogate escape) goes into
/// `payload_text` instead, byte for byte: failing here would stop the daemon on every restart.
pub const INSERT_BATCH: &str = "INSERT INTO sluice.dead_letter \
    (event_id, channel, app, tenant_id, table_name, payload, payload_text, reason, error, attempts) \
    SELECT e, c, a, t, tb, j, CASE WHEN j IS NULL THEN p END, r, er, n \
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[]) \
    AS d(e, c, a, t, tb, p, r, er, n), LATERAL (SELECT sluice.jsonb_or_null(p) AS j) x";

/// The columns of a batch, in the order of [`INSERT_BATCH`]'s parameters.
#[derive(Default)]
pub struct Columns {
    pub event_id: Vec<String>,
    pub channel: Vec<Option<String>>,
    pub app: Vec<Option<String>>,
    pub tenant: Vec<Option<String>>,
    pub table: Vec<String>,
    pub payload: Vec<String>,
    pub reason: Vec<&'static str>,
    pub error: Vec<String>,
    pub attempts: Vec<i32>,
}

impl Columns {
    pub fn from_letters(letters: &[DeadLetter]) -> Columns {
        let mut c = Columns::default();
        for d in letters {
            c.event_id.push(d.event_id.clone());
            c.channel.push(d.channel.clone());
            c.app.push(d.app.clone());
            c.tenant.push(d.tenant.as_ref().map(|t| strip_nul(t)));
            c.table.push(d.table.clone());
            c.payload.push(d.payload.clone());
            c.reason.push(d.reason.as_str());
            c.error.push(strip_nul(&d.error));
            c.attempts.push(d.attempts);
        }
        c
    }

    /// The nine parameters of [`INSERT_BATCH`], in order; a statement built on it appends its own.
    pub fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.event_id,
            &self.channel,
            &self.app,
            &self.tenant,
            &self.table,
            &self.payload,
            &self.reason,
            &self.error,
            &self.attempts,
        ]
    }
}

/// PostgreSQL text cannot hold NUL; a tenant made of control characters must still be parked.
fn strip_nul(s: &str) -> String {
    s.replace('\0', "\\u0000")
}
