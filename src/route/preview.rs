//! `sluice route`: what a row would become (channels, cache keys, or the dead-letter reason),
//! through the same compiled [`Router`] the daemon uses, without connecting to anything.

use std::fmt::Write;
use std::process::ExitCode;

use serde_json::{Map, Value};

use super::{Routed, Router};
use crate::config::{qualify, Config};
use crate::event::{Change, Operation, SourceRef};

/// Exit status when the change would be dead-lettered.
pub const DEAD_LETTER: u8 = 1;
/// Exit status when the arguments are wrong (an unknown table, a row that is not JSON).
pub const BAD_INPUT: u8 = 2;
/// Exit status when nothing would be published or parked (`delivery.on_unroutable = "drop"`).
pub const NOTHING: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table, as a [[tables]] entry names it ("public." when no schema is given)
    #[arg(long)]
    pub table: String,
    /// The row as a JSON object, as to_jsonb(row) gives it (for DELETE, the row before), e.g.
    /// '{"id": 7, "tenant_id": "t1", "operation_code": "crm.leads.create"}'
    #[arg(long)]
    pub row: String,
    /// The operation
    #[arg(long, value_enum, ignore_case = true, default_value = "insert")]
    pub operation: Op,
    /// UPDATE: the previous values of the changed columns, as a JSON object; a routing column
    /// among them shows the MOVED_OUT events of the channels the row leaves
    #[arg(long)]
    pub old: Option<String>,
    /// The record id, for {id} in a channel or cache key [default: the row's "id"]
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

/// Routes the row, prints what it becomes and returns the exit status: 0 when it would be
/// published, else [`DEAD_LETTER`], [`NOTHING`] or [`BAD_INPUT`].
pub fn run(config: &Config, router: &Router, args: &Args) -> ExitCode {
    let change = match change(config, router, args) {
        Ok(change) => change,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    let mut routed = Vec::new();
    router.route(&change, &mut routed, &mut Vec::new());
    let (text, code) = describe(&routed);
    print!("{text}");
    ExitCode::from(code)
}

/// The change the daemon would read for this row.
fn change(config: &Config, router: &Router, args: &Args) -> Result<Change, String> {
    let table = qualify(&args.table);
    if router.lookup(&table).is_none() {
        let known: Vec<String> = config.tables.iter().map(|t| qualify(&t.table)).collect();
        return Err(format!(
            "no [[tables]] entry for {table}; the configured tables are {}",
            known.join(", ")
        ));
    }
    let row = object("--row", &args.row)?;
    let old = args
        .old
        .as_deref()
        .map(|o| object("--old", o))
        .transpose()?;
    let operation = args.operation.into();
    Ok(Change {
        event_id: "preview".into(),
        operation,
        table,
        record_id: args.id.clone().or_else(|| record_id(&row)),
        data: match operation {
            Operation::Truncate => "null".into(),
            _ => Value::Object(row).to_string(),
        },
        changed_fields: old.as_ref().map(|o| o.keys().cloned().collect()),
        old: old.map(|o| Value::Object(o).to_string()),
        unchanged_columns: Vec::new(),
        timestamp: "1970-01-01T00:00:00.000000Z".into(),
        source: SourceRef {
            mode: config.source.mode.as_str(),
            lsn: None,
            xid: None,
            id: None,
        },
        replay: None,
        fault: None,
    })
}

impl From<Op> for Operation {
    fn from(op: Op) -> Operation {
        match op {
            Op::Insert => Operation::Insert,
            Op::Update => Operation::Update,
            Op::Delete => Operation::Delete,
            Op::Truncate => Operation::Truncate,
        }
    }
}

/// The row's `id`, the usual primary key, when it is a string or a number.
fn record_id(row: &Map<String, Value>) -> Option<String> {
    match row.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn object(flag: &str, text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("{flag} must be a JSON object, not {other}")),
        Err(e) => Err(format!("{flag} is not JSON: {e}")),
    }
}

/// One line per outcome (and per cache key), and the exit status.
fn describe(routed: &[Routed]) -> (String, u8) {
    let mut out = String::new();
    for r in routed {
        line(&mut out, r);
    }
    let dead = routed.iter().any(|r| matches!(r, Routed::DeadLetter(_)));
    let published = routed.iter().any(|r| matches!(r, Routed::Publish(_)));
    if routed.is_empty() {
        out.push_str("nothing: the route names no app\n");
    }
    let code = match (dead, published) {
        (true, _) => DEAD_LETTER,
        (false, true) => 0,
        (false, false) => NOTHING,
    };
    (out, code)
}

fn line(out: &mut String, routed: &Routed) {
    let _ = match routed {
        Routed::Publish(e) => {
            let moved = String::from_utf8_lossy(&e.payload).contains("\"operation\":\"MOVED_OUT\"");
            let what = if moved {
                "MOVED_OUT, the row leaves this channel: "
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "publish {}  ({what}app {}, tenant {}, {} bytes)",
                e.channel,
                e.app,
                e.tenant,
                e.payload.len()
            );
            e.invalidate
                .iter()
                .try_for_each(|key| writeln!(out, "  invalidate {key}"))
        }
        Routed::DeadLetter(d) => writeln!(out, "dead letter {}: {}", d.reason.as_str(), d.error),
        Routed::Dropped => writeln!(
            out,
            "dropped: no app matches, and delivery.on_unroutable = \"drop\""
        ),
    };
}
