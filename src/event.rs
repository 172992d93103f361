//! A captured change, whatever the source, and the JSON event it becomes.
//!
//! The envelope is the contract's: camelCase keys, `data` embedded verbatim as the source
//! produced it (PostgreSQL's `to_jsonb(row)`), `eventId` stable across retries and restarts.

use serde::Serialize;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
    Snapshot,
    /// Not a change of the source: the row's tenant or app changed, and this event tells the
    /// old channel to drop it (see `route`).
    MovedOut,
}

impl Operation {
    /// Every operation, for the metrics registered at startup.
    pub const ALL: [Operation; 5] = [
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Truncate,
        Operation::Snapshot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Truncate => "TRUNCATE",
            Operation::Snapshot => "SNAPSHOT",
            Operation::MovedOut => "MOVED_OUT",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Some(match s {
            "INSERT" => Operation::Insert,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "TRUNCATE" => Operation::Truncate,
            "SNAPSHOT" => Operation::Snapshot,
            "MOVED_OUT" => Operation::MovedOut,
            _ => return None,
        })
    }
}

/// Where a change came from, as shown in the event's `source` object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceRef {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    /// trigger mode: the `sluice.change_log` id
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// A value of a change's row that the source could not turn into JSON (a type it cannot read,
/// text that is not UTF-8 in a `SQL_ASCII` database): the change is dead-lettered with reason
/// `unconvertible_value`, its payload holding the value's raw text as a JSON string, and the
/// stream goes on. Never fatal: one odd value must not stop every change behind it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {error}")]
pub struct Fault {
    pub column: String,
    pub error: String,
}

/// One committed change of one row (or one TRUNCATE), before routing.
#[derive(Debug, Clone)]
pub struct Change {
    pub event_id: String,
    pub operation: Operation,
    /// `schema.table`
    pub table: String,
    pub record_id: Option<String>,
    /// The row after the change (for DELETE the row before; `null` for TRUNCATE), as JSON
    /// text the source produced: `to_jsonb`'s output or its equal.
    pub data: String,
    /// Previous values of the changed columns, as a JSON object, when the source knows them.
    pub old: Option<String>,
    pub changed_fields: Option<Vec<String>>,
    /// TOASTed columns an UPDATE did not touch (left out of `data`).
    pub unchanged_columns: Vec<String>,
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    pub source: SourceRef,
    /// Set when an operator command re-publishes the change (`"change_log"`, `"dead_letter"`):
    /// the event keeps its `eventId` and says `"replay"`, so consumers can tell.
    pub replay: Option<&'static str>,
    /// The first value that could not be converted, if any (see [`Fault`]).
    pub fault: Option<Fault>,
}

impl Change {
    /// Writes the event JSON for one app into `buf` (cleared first). Written by hand: `data`
    /// and `old` are embedded verbatim, and nothing is parsed or re-checked on the hot path.
    pub fn encode_into(
        &self,
        app: Option<&str>,
        tenant: Option<&str>,
        data_type: &str,
        buf: &mut Vec<u8>,
    ) {
        buf.clear();
        buf.reserve(self.data.len() + 256);
        buf.extend_from_slice(b"{\"eventId\":");
        string(buf, &self.event_id);
        buf.extend_from_slice(b",\"operation\":\"");
        buf.extend_from_slice(self.operation.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"app\":");
        opt_string(buf, app);
        buf.extend_from_slice(b",\"tenantId\":");
        opt_string(buf, tenant);
        buf.extend_from_slice(b",\"dataType\":");
        string(buf, data_type);
        buf.extend_from_slice(b",\"table\":");
        string(buf, &self.table);
        buf.extend_from_slice(b",\"recordId\":");
        opt_string(buf, self.record_id.as_deref());
        buf.extend_from_slice(b",\"data\":");
        buf.extend_from_slice(self.data.as_bytes());
        if let Some(old) = &self.old {
            buf.extend_from_slice(b",\"old\":");
            buf.extend_from_slice(old.as_bytes());
        }
        if let Some(fields) = &self.changed_fields {
            buf.extend_from_slice(b",\"changedFields\":");
            strings(buf, fields);
        }
        if !self.unchanged_columns.is_empty() {
            buf.extend_from_slice(b",\"unchangedColumns\":");
            strings(buf, &self.unchanged_columns);
        }
        buf.extend_from_slice(b",\"timestamp\":");
        string(buf, &self.timestamp);
        buf.extend_from_slice(b",\"source\":");
        serde_json::to_writer(&mut *buf, &self.source).expect("serialising to memory cannot fail");
        if let Some(replay) = self.replay {
            buf.extend_from_slice(b",\"replay\":");
            string(buf, replay);
        }
        buf.push(b'}');
    }
}

fn string(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(buf, s).expect("serialising to memory cannot fail");
}

fn opt_string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn strings(buf: &mut Vec<u8>, list: &[String]) {
    buf.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(buf, s);
    }
    buf.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn envelope_matches_the_contract_shape() {
        let change = Change {
            event_id: "cl:3".into(),
            operation: Operation::Update,
            table: "public.credit_configurations".into(),
            record_id: Some("config-789".into()),
            data: raw(r#"{"credit_cost": 3.00}"#),
            old: Some(raw(r#"{"credit_cost":2.50}"#)),
            changed_fields: Some(vec!["credit_cost".into()]),
            unchanged_columns: vec![],
            timestamp: "2026-11-22T10:00:00.123456Z".into(),
            source: SourceRef {
                mode: "trigger",
                lsn: None,
                xid: Some(1234),
                id: Some(3),
            },
            replay: None,
            fault: None,
        };
        let mut buf = Vec::new();
        change.encode_into(Some("crm"), Some("tenant-123"), "credit-configs", &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["eventId"], "cl:3");
        assert_eq!(v["operation"], "UPDATE");
        assert_eq!(v["tenantId"], "tenant-123");
        assert_eq!(v["dataType"], "credit-configs");
        assert_eq!(v["changedFields"][0], "credit_cost");
        assert_eq!(v["source"]["xid"], 1234);
        assert!(v.get("unchangedColumns").is_none());
        assert!(v.get("replay").is_none());
        // numbers are embedded verbatim, not re-rendered
        assert!(std::str::from_utf8(&buf)
            .unwrap()
            .contains(r#""data":{"credit_cost": 3.00}"#));
    }

    #[test]
    fn a_replayed_event_says_so_and_keeps_its_id() {
        let mut change = Change {
            event_id: "0/16B3748:2".into(),
            operation: Operation::Insert,
            table: "public.t".into(),
            record_id: None,
            data: raw("{}"),
            old: None,
            changed_fields: None,
            unchanged_columns: vec![],
            timestamp: "2026-11-22T10:00:00.000000Z".into(),
            source: SourceRef {
                mode: "logical",
                lsn: Some("0/16B3748".into()),
                xid: Some(7),
                id: None,
            },
            replay: Some("change_log"),
            fault: None,
        };
        let mut buf = Vec::new();
        change.encode_into(Some("crm"), Some("t1"), "t", &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            (v["eventId"].as_str(), v["replay"].as_str()),
            (Some("0/16B3748:2"), Some("change_log"))
        );
        change.replay = None;
        change.encode_into(Some("crm"), Some("t1"), "t", &mut buf);
        assert!(!std::str::from_utf8(&buf).unwrap().contains("replay"));
    }

    #[test]
    fn operations_round_trip() {
        for op in [
            Operation::Insert,
            Operation::Update,
            Operation::Delete,
            Operation::Truncate,
            Operation::Snapshot,
        ] {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
    }
}
