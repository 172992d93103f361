//! Routing: which application(s) and which channel each change goes to.
//!
//! [`Router::compile`] turns the config's `[apps]` and `[[tables]]` into lookups once, and is
//! the check of everything routing needs (every problem at once, each with the text that
//! locates it in the file). A change becomes one event per matching app, each encoded with its
//! own `app`; a change that cannot be routed becomes a dead letter with its reason: no app
//! matched (`unroutable`), no tenant (`missing_tenant`), a tenant or a record id that could
//! leak into another tenant's pattern subscription (`invalid_tenant`, `invalid_key`: see
//! [`crate::channel`]), a value the source could not convert (`unconvertible_value`), or a
//! payload over the limit (`payload_too_large`).

mod compile;
mod moved;
pub mod preview;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

pub use compile::RouteProblem;
use schema::{raw_tenant, schema_tenant, Tenant};

use crate::channel::{is_safe_key, is_safe_tenant, Template, Values};
use crate::config::OnUnroutable;
use crate::dead_letter::{DeadLetter, Reason};
use crate::event::{Change, Operation};
use crate::json;

/// An event ready to publish.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: String,
    pub channel: String,
    pub app: Arc<str>,
    pub data_type: Arc<str>,
    pub table: Arc<str>,
    pub tenant: String,
    pub payload: Vec<u8>,
    /// Cache keys to delete in the same round trip.
    pub invalidate: Vec<String>,
    /// The change's place in its source's order (see [`order_key`]): what tells the publisher
    /// that Redis already has this event.
    pub key: String,
    pub record_id: Option<String>,
    /// The record leaves the channel (DELETE, MOVED_OUT): its state entry goes.
    pub removes: bool,
    /// The route keeps `sluice:state:{<channel>}`.
    pub state: bool,
}

/// What routing made of one change.
#[derive(Debug)]
pub enum Routed {
    Publish(Event),
    DeadLetter(DeadLetter),
    /// Unroutable with `on_unroutable = "drop"`.
    Dropped,
}

/// Why a change has no route: the dead-letter reason and the error text.
type Unrouted = (Reason, String);

#[derive(Debug)]
enum Rule {
    OperationCode(String),
    AnyOf(String),
    Fixed(Vec<Arc<str>>),
}

#[derive(Debug)]
struct TableRoute {
    /// `schema.table` as configured; for a pattern route, the glob (events name the table).
    table: Arc<str>,
    /// The table's own name (after the schema).
    name: String,
    /// The schema part is a glob (`tenant_*`): the route covers every matching schema.
    pattern: bool,
    data_type: Arc<str>,
    tenant: Tenant,
    rule: Rule,
    channel: Template,
    invalidate: Vec<Template>,
    /// The channel or a cache key names `{id}`: the record id must then be safe.
    uses_id: bool,
    /// Keep `sluice:state:{<channel>}`.
    state: bool,
}

/// The compiled routing table.
#[derive(Debug)]
pub struct Router {
    tables: HashMap<String, TableRoute>,
    /// Routes whose schema is a glob, in config order: the first that matches wins (a table
    /// configured by its own name wins over every pattern).
    patterns: Vec<TableRoute>,
    /// (prefix, app), longest prefix first.
    prefixes: Vec<(String, Arc<str>)>,
    max_payload: usize,
    on_unroutable: OnUnroutable,
}

impl Router {
    /// The app an operation code belongs to: the longest matching prefix wins.
    pub fn app_for_code(&self, code: &str) -> Option<&Arc<str>> {
        self.prefixes
            .iter()
            .find(|(p, _)| code.starts_with(p.as_str()))
            .map(|(_, a)| a)
    }

    /// The tenant written in a change's row, as the table's route names it (even when unsafe);
    /// `None` for an unrouted table or a row without one.
    pub fn tenant_of(&self, change: &Change) -> Option<String> {
        raw_tenant(change, self.lookup(&change.table)?)
    }

    /// Routes one change, appending what it became to `out`; `buf` is a reused scratch buffer.
    pub fn route(&self, change: &Change, out: &mut Vec<Routed>, buf: &mut Vec<u8>) {
        let Some(route) = self.lookup(&change.table) else {
            return out.push(self.dead(
                change,
                None,
                Reason::Unroutable,
                format!("table {} has no route", change.table),
                buf,
            ));
        };
        if let Some(fault) = &change.fault {
            return out.push(self.dead(
                change,
                Some(route),
                Reason::UnconvertibleValue,
                fault.to_string(),
                buf,
            ));
        }
        let (tenant, apps) = match self.resolve(route, change) {
            Ok(found) => found,
            Err((Reason::Unroutable, _)) if self.on_unroutable == OnUnroutable::Drop => {
                return out.push(Routed::Dropped)
            }
            Err((reason, why)) => {
                return out.push(self.dead(change, Some(route), reason, why, buf))
            }
        };
        let first = out.len();
        for app in apps {
            out.push(self.event(route, change, app, &tenant, buf));
        }
        if change.old.is_some() {
            let now: Vec<String> = out[first..]
                .iter()
                .filter_map(|r| match r {
                    Routed::Publish(e) => Some(e.channel.clone()),
                    _ => None,
                })
                .collect();
            self.moved_out(route, change, &now, out, buf);
        }
    }

    fn event(
        &self,
        route: &TableRoute,
        change: &Change,
        app: Arc<str>,
        tenant: &str,
        buf: &mut Vec<u8>,
    ) -> Routed {
        let id = change.record_id.as_deref().unwrap_or("");
        let table: Arc<str> = match route.pattern {
            true => Arc::from(change.table.as_str()),
            false => route.table.clone(),
        };
        let values = Values {
            app: &app,
            tenant,
            data_type: &route.data_type,
            table: &table,
            id,
        };
        change.encode_into(Some(&app), Some(tenant), &route.data_type, buf);
        if route.uses_id && !is_safe_key(id) {
            let error = format!("record id {:?} (the {{id}} of a channel or cache key) does not match ^[A-Za-z0-9][A-Za-z0-9._,-]{{0,127}}$", truncate(id));
            return Routed::DeadLetter(DeadLetter::new(
                change,
                None,
                Some(&app),
                Some(tenant),
                buf,
                Reason::InvalidKey,
                error,
            ));
        }
        let channel = route.channel.render(&values);
        if buf.len() > self.max_payload {
            let error = format!(
                "payload is {} bytes, over delivery.max_payload_bytes = {}",
                buf.len(),
                self.max_payload
            );
            return Routed::DeadLetter(DeadLetter::new(
                change,
                Some(channel),
                Some(&app),
                Some(tenant),
                buf,
                Reason::PayloadTooLarge,
                error,
            ));
        }
        let invalidate = route.invalidate.iter().map(|k| k.render(&values)).collect();
        Routed::Publish(Event {
            event_id: change.event_id.clone(),
            channel,
            app,
            data_type: route.data_type.clone(),
            table,
            tenant: tenant.to_string(),
            payload: buf.clone(),
            invalidate,
            key: order_key(change),
            record_id: change.record_id.clone(),
            removes: matches!(change.operation, Operation::Delete | Operation::MovedOut),
            state: route.state,
        })
    }

    fn dead(
        &self,
        change: &Change,
        route: Option<&TableRoute>,
        reason: Reason,
        error: String,
        buf: &mut Vec<u8>,
    ) -> Routed {
        let data_type = route.map_or("", |r| &r.data_type);
        change.encode_into(None, None, data_type, buf);
        let tenant = route.and_then(|r| raw_tenant(change, r));
        Routed::DeadLetter(DeadLetter::new(
            change,
            None,
            None,
            tenant.as_deref(),
            buf,
            reason,
            error,
        ))
    }

    /// The tenant and the apps of a change, or why there are none.
    fn resolve(
        &self,
        route: &TableRoute,
        change: &Change,
    ) -> Result<(String, Vec<Arc<str>>), Unrouted> {
        if change.operation == Operation::Truncate {
            return Err((
                Reason::MissingTenant,
                "TRUNCATE carries no tenant to route by".into(),
            ));
        }
        let wanted: Vec<&str> = route
            .tenant
            .column()
            .into_iter()
            .chain(rule_column(&route.rule))
            .collect();
        let found = json::fields(&change.data, &wanted)
            .map_err(|e| (Reason::Unroutable, format!("row is not a JSON object: {e}")))?;
        let (tenant, rest) = match &route.tenant {
            Tenant::Column(col) => (tenant_of(found[0], col)?, &found[1..]),
            Tenant::Schema(pattern) => (schema_tenant(change, route, pattern)?, &found[..]),
        };
        let apps = match &route.rule {
            Rule::Fixed(apps) => apps.clone(),
            Rule::OperationCode(col) => vec![self.code_app(rest[0], col)?],
            Rule::AnyOf(col) => self.any_of_apps(rest[0], col)?,
        };
        Ok((tenant, apps))
    }

    fn code_app(
        &self,
        raw: Option<&serde_json::value::RawValue>,
        col: &str,
    ) -> Result<Arc<str>, Unrouted> {
        let code = match raw.map(json::scalar_text) {
            Some(Ok(Some(code))) => code,
            Some(Ok(None)) | None => {
                return Err((
                    Reason::Unroutable,
                    format!("operation code column {col} is NULL"),
                ))
            }
            Some(Err(json::NotScalar)) => {
                return Err((
                    Reason::Unroutable,
                    format!("operation code column {col} is not text"),
                ))
            }
        };
        self.app_for_code(&code).cloned().ok_or_else(|| {
            (
                Reason::Unroutable,
                format!(
                    "no app has a prefix of operation code {:?}",
                    truncate(&code)
                ),
            )
        })
    }

    fn any_of_apps(
        &self,
        raw: Option<&serde_json::value::RawValue>,
        col: &str,
    ) -> Result<Vec<Arc<str>>, Unrouted> {
        let entries: Vec<Option<String>> = match raw {
            Some(r) => serde_json::from_str::<Option<Vec<Option<String>>>>(r.get())
                .map_err(|_| {
                    (
                        Reason::Unroutable,
                        format!("column {col} is not an array of text"),
                    )
                })?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut apps: Vec<Arc<str>> = Vec::new();
        for app in entries
            .iter()
            .flatten()
            .filter_map(|e| self.app_for_code(e))
        {
            if !apps.contains(app) {
                apps.push(app.clone());
            }
        }
        if apps.is_empty() {
            return Err((
                Reason::Unroutable,
                format!("no entry of {col} matches an app prefix"),
            ));
        }
        Ok(apps)
    }
}

/// A change's place in its source's order, as text Redis can compare: in logical mode `L` +
/// the commit LSN and the index in the transaction, fixed-width hex, so it grows with commit
/// order; in trigger mode the `change_log` id, whose order is not commit order (the publisher
/// uses it as a name there, never as a bound).
pub fn order_key(change: &Change) -> String {
    if let Some(id) = change.source.id {
        return id.to_string();
    }
    let (lsn, index) = change
        .event_id
        .rsplit_once(':')
        .unwrap_or((&change.event_id, "0"));
    match (crate::source::lsn::parse(lsn), index.parse::<u32>()) {
        (Some(lsn), Ok(index)) => format!("L{lsn:016x}{index:08x}"),
        _ => change.event_id.clone(),
    }
}

fn rule_column(rule: &Rule) -> Option<&str> {
    match rule {
        Rule::OperationCode(c) | Rule::AnyOf(c) => Some(c),
        Rule::Fixed(_) => None,
    }
}

fn tenant_of(raw: Option<&serde_json::value::RawValue>, col: &str) -> Result<String, Unrouted> {
    let text = match raw.map(json::scalar_text) {
        Some(Ok(Some(t))) => t,
        Some(Ok(None)) | None => {
            return Err((
                Reason::MissingTenant,
                format!("tenant column {col} is NULL"),
            ))
        }
        Some(Err(json::NotScalar)) => {
            return Err((
                Reason::InvalidTenant,
                format!("tenant column {col} is not a text or number"),
            ))
        }
    };
    if !is_safe_tenant(&text) {
        return Err((
            Reason::InvalidTenant,
            format!(
                "tenant {:?} does not match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$",
                truncate(&text)
            ),
        ));
    }
    Ok(text.into_owned())
}

pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
