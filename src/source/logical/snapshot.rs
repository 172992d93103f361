//! `SNAPSHOT` changes in logical mode: the rows `sluice backfill` emits into the WAL.
//!
//! A backfill chunk runs `pg_logical_emit_message(true, 'sluice.snapshot', content)` once per
//! row, in the same transaction that locks the chunk `FOR SHARE`. The messages are
//! transactional, so they arrive inside that transaction, at its commit LSN: a concurrent
//! UPDATE of a locked row commits later, so its event follows the row's snapshot (the full
//! argument is in `recover::backfill`). Each message becomes one [`Change`] that takes the
//! next index of its transaction, exactly as a row change does, so its `eventId` is
//! `<commit LSN>:<index>` and stable across re-streaming.
//!
//! The content is a JSON object written by the backfill:
//! `{"table": "public.t", "id": "<record key>", "row": <to_jsonb(row)>}`; `row` becomes the
//! event's `data` verbatim, `id` its `recordId`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::convert::Txn;
use crate::event::{Change, Operation, SourceRef};
use crate::source::lsn;

/// The prefix of backfill messages.
pub const PREFIX: &str = "sluice.snapshot";

#[derive(Deserialize)]
struct Content<'a> {
    table: String,
    id: Option<String>,
    #[serde(borrow)]
    row: &'a RawValue,
}

/// A backfill message that is not `{table, id, row}`.
#[derive(Debug, thiserror::Error)]
#[error("snapshot message is not {{table, id, row}}: {0}")]
pub struct SnapshotError(#[from] serde_json::Error);

/// The change a snapshot message of transaction `txn` stands for; takes the next index.
pub fn change(content: &[u8], txn: &mut Txn) -> Result<Change, SnapshotError> {
    let c: Content<'_> = serde_json::from_slice(content)?;
    let index = txn.index;
    txn.index += 1;
    let at = lsn::format(txn.final_lsn);
    Ok(Change {
        event_id: format!("{at}:{index}"),
        operation: Operation::Snapshot,
        table: c.table,
        record_id: c.id,
        data: c.row.get().to_string(),
        old: None,
        changed_fields: None,
        unchanged_columns: Vec::new(),
        timestamp: txn.timestamp.clone(),
        source: SourceRef {
            mode: "logical",
            lsn: Some(at),
            xid: Some(u64::from(txn.xid)),
            id: None,
        },
        replay: None,
        fault: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_a_snapshot_with_the_next_index_and_the_row_verbatim() {
        let mut txn = Txn::new(0x16B3748, 7, 0);
        txn.index = 2;
        let content =
            br#"{"table" : "public.t", "id" : "k1,2", "row" : {"a": 1.10, "b": [1, "x"]}}"#;
        let c = change(content, &mut txn).unwrap();
        assert_eq!(
            (c.event_id.as_str(), c.operation, c.table.as_str()),
            ("0/16B3748:2", Operation::Snapshot, "public.t")
        );
        assert_eq!(
            (c.record_id.as_deref(), c.data.as_str()),
            (Some("k1,2"), r#"{"a": 1.10, "b": [1, "x"]}"#)
        );
        assert_eq!(
            c.source,
            SourceRef {
                mode: "logical",
                lsn: Some("0/16B3748".into()),
                xid: Some(7),
                id: None
            }
        );
        assert_eq!(c.timestamp, txn.timestamp);
        assert_eq!(
            txn.index, 3,
            "the next change of the transaction gets the next index"
        );
    }

    #[test]
    fn malformed_content_is_an_error_and_takes_no_index() {
        let mut txn = Txn::new(1, 1, 0);
        assert!(change(b"not json", &mut txn).is_err());
        assert!(change(br#"{"table": "public.t"}"#, &mut txn).is_err());
        assert_eq!(txn.index, 0);
    }
}
