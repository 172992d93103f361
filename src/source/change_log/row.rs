//! One `sluice.change_log` row as the [`Change`] it records.
//!
//! Text is read as bytes and checked here, not by the client library: a `SQL_ASCII` database
//! stores whatever bytes a writer sent, and one row that is not UTF-8 must become a dead letter
//! (its text made readable with U+FFFD, the fault named), not an error that stops the reader on
//! every restart.

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use super::{ChangeLogError, Meta};
use crate::event::{Change, Fault, Operation, SourceRef};
use crate::json;

/// A text column read as bytes: valid UTF-8, or made so with replacement characters.
struct Text {
    text: String,
    valid: bool,
}

impl<'a> FromSql<'a> for Text {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Text, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match std::str::from_utf8(raw) {
            Ok(text) => Text {
                text: text.to_string(),
                valid: true,
            },
            Err(_) => Text {
                text: String::from_utf8_lossy(raw).into_owned(),
                valid: false,
            },
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads text column `i`, noting the first column that was not UTF-8 in `fault`.
fn text(
    row: &Row,
    i: usize,
    name: &str,
    fault: &mut Option<Fault>,
) -> Result<Option<String>, ChangeLogError> {
    let value: Option<Text> = row.try_get(i)?;
    Ok(value.map(|t| {
        if !t.valid {
            let error =
                "not UTF-8 (a SQL_ASCII database holds bytes in no encoding); shown with U+FFFD"
                    .to_string();
            fault.get_or_insert_with(|| Fault {
                column: name.to_string(),
                error,
            });
        }
        t.text
    }))
}

/// A `sluice.change_log` row (selected as [`crate::change_log_columns!`]) as the change it
/// records: a trigger row, or a history row logical mode wrote (it keeps its published
/// `eventId`).
pub fn change_of(row: &Row) -> Result<Change, ChangeLogError> {
    let id: i64 = row.try_get(0)?;
    let malformed = |why: String| ChangeLogError::Malformed { id, why };
    let mut fault = None;
    let op: String = row.try_get(3)?;
    let operation =
        Operation::parse(&op).ok_or_else(|| malformed(format!("unknown operation {op:?}")))?;
    let event_id: Option<String> = row.try_get(8)?;
    let history = match (&event_id, text(row, 9, "meta", &mut fault)?) {
        (Some(_), Some(meta)) => {
            Some(serde_json::from_str::<Meta>(&meta).map_err(|e| malformed(format!("meta: {e}")))?)
        }
        _ => None,
    };
    let raw = |m: &Meta, new: bool| {
        if new {
            m.raw_new.clone()
        } else {
            m.raw_old.clone()
        }
    };
    let new_row = text(row, 5, "new_row", &mut fault)?
        .or_else(|| history.as_ref().and_then(|m| raw(m, true)));
    let old_row = text(row, 6, "old_row", &mut fault)?
        .or_else(|| history.as_ref().and_then(|m| raw(m, false)));
    let (old, changed) = match (operation, &history, &old_row, &new_row) {
        (Operation::Update, Some(meta), _, _) => (old_row.clone(), meta.changed_fields.clone()),
        (Operation::Update, None, Some(old), Some(new)) => {
            let (old, changed) = diff(old, new).map_err(|e| malformed(e.to_string()))?;
            (Some(old), Some(changed))
        }
        _ => (None, None),
    };
    let data = match operation {
        Operation::Delete => old_row,
        Operation::Truncate => Some(new_row.unwrap_or_else(|| "null".into())),
        _ => new_row,
    }
    .ok_or_else(|| malformed(format!("{op} without a row")))?;
    let source = match &history {
        Some(meta) => meta.source(),
        None => SourceRef {
            mode: "trigger",
            lsn: None,
            xid: row.try_get::<_, String>(1)?.parse().ok(),
            id: Some(id),
        },
    };
    Ok(Change {
        event_id: event_id.unwrap_or_else(|| format!("cl:{id}")),
        operation,
        table: text(row, 2, "table_name", &mut fault)?.unwrap_or_default(),
        record_id: text(row, 4, "record_id", &mut fault)?,
        data,
        old,
        changed_fields: changed,
        unchanged_columns: history.map(|m| m.unchanged_columns).unwrap_or_default(),
        timestamp: row.try_get(7)?,
        source,
        replay: None,
        fault,
    })
}

/// The columns whose value differs between two `to_jsonb` rows (jsonb prints equal values
/// identically, so comparing the text is comparing the values), and their old values.
fn diff(old: &str, new: &str) -> Result<(String, Vec<String>), serde_json::Error> {
    let before = json::entries(old)?;
    let mut changed = Vec::new();
    let mut out = String::with_capacity(64);
    out.push('{');
    for (key, value) in json::entries(new)? {
        let previous = before.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if previous.map(|p| p.get()) == Some(value.get()) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&key)?);
        out.push(':');
        out.push_str(previous.map_or("null", |p| p.get()));
        changed.push(key.into_owned());
    }
    out.push('}');
    Ok((out, changed))
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_lists_changed_columns_with_their_old_values() {
        let old = r#"{"a": 1, "b": "x", "c": 2.50, "d": {"k": [1]}}"#;
        let new = r#"{"a": 2, "b": "x", "c": 3.00, "d": {"k": [1]}, "e": true}"#;
        let (before, changed) = diff(old, new).unwrap();
        assert_eq!(before, r#"{"a":1,"c":2.50,"e":null}"#);
        assert_eq!(changed, ["a", "c", "e"]);
        let (before, changed) = diff(old, old).unwrap();
        assert_eq!((before.as_str(), changed.len()), ("{}", 0));
    }
}
