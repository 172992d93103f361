//! Rows that move. An UPDATE can change a row's tenant or app; the new channel gets the row,
//! and the old one would keep it forever. So each old channel the row no longer reaches gets
//! a `MOVED_OUT` event: the row as it was (the new row with the old values of the changed
//! columns laid over it), under its old tenant and app, so the consumers there drop it.
//!
//! It needs the old values of the routing columns: logical mode has them with
//! `REPLICA IDENTITY FULL` (which `setup` sets when routing columns are outside the key),
//! trigger mode always.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{Routed, Router, TableRoute};
use crate::event::{Change, Operation};
use crate::json;

impl Router {
    /// Appends a `MOVED_OUT` event for every channel the row was on before `change` and is not
    /// on after it (`now`: the channels its events go to).
    pub(super) fn moved_out(
        &self,
        route: &TableRoute,
        change: &Change,
        now: &[String],
        out: &mut Vec<Routed>,
        buf: &mut Vec<u8>,
    ) {
        let Some(old) = change
            .old
            .as_deref()
            .filter(|_| change.operation == Operation::Update)
        else {
            return;
        };
        let routing: Vec<&str> = route
            .tenant
            .column()
            .into_iter()
            .chain(super::rule_column(&route.rule))
            .collect();
        if !json::fields(old, &routing).is_ok_and(|found| found.iter().any(Option::is_some)) {
            return; // no routing column changed
        }
        let Some(data) = before(&change.data, old) else {
            return;
        };
        let prior = Change {
            operation: Operation::MovedOut,
            data,
            old: None,
            changed_fields: None,
            unchanged_columns: Vec::new(),
            ..change.clone()
        };
        let Ok((tenant, apps)) = self.resolve(route, &prior) else {
            return; // the row had no route before: nobody holds it
        };
        for app in apps {
            if let Routed::Publish(e) = self.event(route, &prior, app, &tenant, buf) {
                if !now.contains(&e.channel) {
                    out.push(Routed::Publish(e));
                }
            }
        }
    }
}

/// The row before an UPDATE: `data` with the old values laid over it, each value's JSON text
/// kept as it was.
fn before(data: &str, old: &str) -> Option<String> {
    let mut row: BTreeMap<String, &RawValue> = serde_json::from_str(data).ok()?;
    let old: BTreeMap<String, &RawValue> = serde_json::from_str(old).ok()?;
    row.extend(old);
    serde_json::to_string(&row).ok()
}

#[cfg(test)]
mod tests {
    use super::before;

    #[test]
    fn the_row_before_keeps_every_value_as_written() {
        let row = before(
            r#"{"id":"r1","tenant_id":"t2","n":3.00}"#,
            r#"{"tenant_id":"t1"}"#,
        )
        .unwrap();
        assert_eq!(row, r#"{"id":"r1","n":3.00,"tenant_id":"t1"}"#);
        assert_eq!(before("[]", "{}"), None);
    }
}
