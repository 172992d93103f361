//! From pgoutput messages to [`Change`]s: each relation's columns with the value kind of their
//! type, rows as `to_jsonb`-equal JSON, `old` and `changedFields` where the stream carries an old
//! row, unchanged TOAST columns listed apart (never shown as null).

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::event::{Change, Fault, Operation, SourceRef};
use crate::source::lsn;
use crate::source::pgoutput::{fmt_timestamp, Column, OldTuple, Relation, TupleData};
use crate::source::values::{write_json, Kind};

use super::types::TypeCache;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("change for relation {0} arrived before its Relation message")]
    UnknownRelation(u32),
    #[error("looking up type or relation {oid}: {source}")]
    Type {
        oid: u32,
        source: tokio_postgres::Error,
    },
}

/// One column of a relation.
#[derive(Debug, Clone)]
struct Col {
    /// `"name":`, escaped once.
    key: String,
    name: String,
    kind: Kind,
    /// Part of the replica identity (every column under REPLICA IDENTITY FULL).
    is_key: bool,
    /// Part of the primary key: what `recordId` is made of.
    in_pk: bool,
}

/// A relation as the stream described it.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    cols: Vec<Col>,
}

/// The transaction being read.
#[derive(Debug, Clone)]
pub struct Txn {
    pub final_lsn: u64,
    pub xid: u32,
    pub timestamp: String,
    pub index: u32,
}

impl Txn {
    pub fn new(final_lsn: u64, xid: u32, commit_ts: i64) -> Txn {
        Txn {
            final_lsn,
            xid,
            timestamp: fmt_timestamp(commit_ts),
            index: 0,
        }
    }
}

/// Relations and the value kinds of their types, rebuilt on every Relation message and
/// cleared on reconnect.
#[derive(Default)]
pub struct Schema {
    tables: HashMap<u32, Table>,
    types: TypeCache,
}

const PRIMARY_KEY: &str = "SELECT a.attname::text FROM pg_index i \
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
    WHERE i.indrelid = $1 AND i.indisprimary";

impl Schema {
    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Records a Relation message, resolving types that are not built in through `client`.
    pub async fn observe(&mut self, rel: &Relation, client: &Client) -> Result<(), ConvertError> {
        let pk: Vec<String> = client
            .query(PRIMARY_KEY, &[&rel.id])
            .await
            .map_err(|source| ConvertError::Type {
                oid: rel.id,
                source,
            })?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut kinds = Vec::with_capacity(rel.columns.len());
        for c in &rel.columns {
            kinds.push(self.types.kind(c.type_oid, client).await?);
        }
        self.insert(rel, &pk, kinds);
        Ok(())
    }

    /// Records a relation whose primary key and column kinds (one per column) are already
    /// known: what [`Schema::observe`] does once it looked them up. The decode benchmark
    /// builds its schema this way, without a server.
    pub fn insert(&mut self, rel: &Relation, pk: &[String], kinds: Vec<Kind>) {
        let cols = rel
            .columns
            .iter()
            .zip(kinds)
            .map(|(c, kind)| {
                let key = format!(
                    "{}:",
                    serde_json::to_string(&c.name).expect("a string serialises")
                );
                let in_pk = if pk.is_empty() {
                    c.is_key()
                } else {
                    pk.contains(&c.name)
                };
                Col {
                    key,
                    name: c.name.clone(),
                    kind,
                    is_key: c.is_key(),
                    in_pk,
                }
            })
            .collect();
        self.tables.insert(
            rel.id,
            Table {
                name: rel.qualified_name(),
                cols,
            },
        );
    }

    pub fn table(&self, id: u32) -> Result<&Table, ConvertError> {
        self.tables
            .get(&id)
            .ok_or(ConvertError::UnknownRelation(id))
    }
}

impl Table {
    /// The row as a JSON object; `keys_only` keeps just the replica-identity columns (a 'K' tuple).
    /// A value that cannot be converted is written as its raw text (a JSON string) and reported
    /// in `fault` (the first one only), so the change can be dead-lettered with it.
    fn row(
        &self,
        tuple: &TupleData,
        keys_only: bool,
        fault: &mut Option<Fault>,
    ) -> (String, Vec<String>) {
        let mut out = String::with_capacity(256);
        let mut unchanged = Vec::new();
        out.push('{');
        for (col, value) in self.cols.iter().zip(&tuple.columns) {
            if keys_only && !col.is_key {
                continue;
            }
            if matches!(value, Column::UnchangedToast) {
                unchanged.push(col.name.clone());
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&col.key);
            self.value(col, value, &mut out, fault);
        }
        out.push('}');
        (out, unchanged)
    }

    fn value(&self, col: &Col, value: &Column, out: &mut String, fault: &mut Option<Fault>) {
        let failed = match value {
            Column::Null | Column::UnchangedToast => {
                out.push_str("null");
                return;
            }
            Column::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => match write_json(&col.kind, text, out) {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                },
                Err(e) => {
                    format!("not UTF-8 ({e}; a SQL_ASCII database holds bytes in no encoding)")
                }
            },
            Column::Binary(_) => "binary values are not requested".to_string(),
        };
        let raw = match value {
            Column::Text(bytes) | Column::Binary(bytes) => String::from_utf8_lossy(bytes),
            _ => "".into(),
        };
        out.push_str(&serde_json::to_string(&raw).expect("a string serialises"));
        fault.get_or_insert_with(|| Fault {
            column: col.name.clone(),
            error: failed,
        });
    }

    /// The primary key (replica identity columns) as text, composite keys joined by ','.
    fn record_id(&self, tuple: &TupleData) -> Option<String> {
        let parts: Vec<std::borrow::Cow<'_, str>> = self
            .cols
            .iter()
            .zip(&tuple.columns)
            .filter(|(c, _)| c.in_pk)
            .filter_map(|(_, v)| match v {
                Column::Text(b) => Some(String::from_utf8_lossy(b)),
                _ => None,
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// Old values of the changed columns and their names, from an old and a new tuple.
    fn diff(
        &self,
        old: &TupleData,
        new: &TupleData,
        fault: &mut Option<Fault>,
    ) -> (String, Vec<String>) {
        let mut out = String::from("{");
        let mut changed = Vec::new();
        for ((col, before), after) in self.cols.iter().zip(&old.columns).zip(&new.columns) {
            if matches!(after, Column::UnchangedToast) || before == after {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&col.key);
            self.value(col, before, &mut out, fault);
            changed.push(col.name.clone());
        }
        out.push('}');
        (out, changed)
    }
}

/// One row change of the transaction `txn`. Never fails: a value it cannot convert becomes
/// the change's [`Fault`].
pub fn change(
    table: &Table,
    op: Operation,
    new: Option<&TupleData>,
    old: Option<&OldTuple>,
    txn: &mut Txn,
) -> Change {
    let (data_tuple, keys_only) = match (op, new, old) {
        (Operation::Delete, _, Some(OldTuple::Key(t))) => (Some(t), true),
        (Operation::Delete, _, Some(OldTuple::Old(t))) => (Some(t), false),
        (_, Some(t), _) => (Some(t), false),
        _ => (None, false),
    };
    let mut fault = None;
    let (data, unchanged) = match data_tuple {
        Some(t) => table.row(t, keys_only, &mut fault),
        None => ("null".to_string(), Vec::new()),
    };
    let (old_json, changed) = match (op, old, new) {
        (Operation::Update, Some(OldTuple::Old(o)), Some(n)) => {
            let (j, c) = table.diff(o, n, &mut fault);
            (Some(j), Some(c))
        }
        (Operation::Update, Some(OldTuple::Key(k)), _) => {
            (Some(table.row(k, true, &mut fault).0), None)
        }
        _ => (None, None),
    };
    let index = txn.index;
    txn.index += 1;
    Change {
        event_id: format!("{}:{index}", lsn::format(txn.final_lsn)),
        operation: op,
        table: table.name.clone(),
        record_id: data_tuple.and_then(|t| table.record_id(t)),
        data,
        old: old_json,
        changed_fields: changed,
        unchanged_columns: unchanged,
        timestamp: txn.timestamp.clone(),
        source: SourceRef {
            mode: "logical",
            lsn: Some(lsn::format(txn.final_lsn)),
            xid: Some(u64::from(txn.xid)),
            id: None,
        },
        replay: None,
        fault,
    }
}
