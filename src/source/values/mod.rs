//! Column values from PostgreSQL's text output to the JSON that `to_jsonb` gives.
//!
//! Logical replication (pgoutput, text format) sends each column as the text output of its
//! type. Trigger mode publishes `to_jsonb(row)`; so that both modes publish equal JSON, every
//! value is rewritten here the way `to_jsonb` would print it. The walsender session is pinned
//! to `DateStyle = 'ISO, MDY'`, `TimeZone = 'UTC'`, `IntervalStyle = 'postgres'` and
//! `extra_float_digits = 1`, and the rules below (checked against PostgreSQL 15) rely on that:
//!
//! * `int2/4/8`, `float4/8`, `numeric`: a JSON number, spelled as `numeric_out(numeric_in(text))`
//!   (jsonb keeps numbers as `numeric`), so float `1e+100` becomes `1` and 100 zeros, `1.5e-07`
//!   becomes `0.00000015`, `-0` becomes `0`, and numeric `3.00` stays `3.00`. `NaN`,
//!   `Infinity` and `-Infinity` become JSON strings.
//! * `timestamp`: `T` between date and time (`2026-01-02T03:04:05`, `0044-03-15T03:00:00 BC`);
//!   `timestamptz` also writes a whole-hour offset as `+00:00`. `infinity` stays as it is.
//! * `json`: normalised as jsonb does it: duplicate keys keep the last value, keys are ordered
//!   by length then bytes, numbers are rewritten as above; strings are kept as written.
//! * `jsonb`: its text output is already normalised, so it is embedded after validation.
//! * arrays: the array literal is parsed (quotes, backslashes, unquoted `NULL`, nested
//!   dimensions, `[lo:hi]=` bounds, which `to_jsonb` drops, elements separated by the element
//!   type's delimiter: `;` for `box`) and each element is converted by its element kind.
//! * `int2vector`, `oidvector`: their space-separated elements as a JSON array (numbers for
//!   `int2vector`, strings for `oidvector`, as for `oid`).
//! * composite types: the record literal is parsed (quotes, doubled quotes, backslashes, an
//!   empty field as NULL, nested records and arrays) into an object keyed by attribute name,
//!   each field converted by its attribute's kind.
//! * everything else (`text`, `bpchar` with its padding, `date`, `time`, `timetz`, `interval`,
//!   `bytea` as `\x..`, `oid`, `uuid`, enums, ...): its text output as a JSON string.
//!
//! Known differences: types with a cast to json (e.g. `hstore`) become objects in `to_jsonb`
//! but strings here; json nested deeper than 64 levels keeps the spelling of its deeper numbers
//! (`1e2`, not `100`); json that jsonb rejects (`\u0000`) is passed on where `to_jsonb` fails.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::value::RawValue;

use array::{write_array, write_vector};
use record::write_record;

/// How a column's text is turned into JSON, resolved once per type OID.
///
/// `Int`, `Numeric` and `Float` become numbers (`NaN` and infinities strings), `Bool` a
/// boolean, `Json` and `Jsonb` embedded JSON, `Timestamp` and `TimestampTz` ISO 8601 strings
/// with a `T`; every other kind becomes its text output as a JSON string.
#[rustfmt::skip]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool, Int, Numeric, Float, Text, Json, Jsonb, Date, Time, TimeTz, Timestamp, TimestampTz,
    Bytea, Interval,
    /// Anything else whose to_jsonb is its text output as a JSON string (uuid, enums, inet,
    /// money, bit, oid, ...).
    OtherText,
    /// One- or multi-dimensional array of elements of this kind, separated by this byte (the
    /// element type's `typdelim`: `,` but for `box`, whose elements hold commas, `;`).
    Array(Box<Kind>, u8),
    /// `int2vector` or `oidvector`: elements of this kind separated by spaces (`1 2 3`).
    Vector(Box<Kind>),
    /// A composite type (or a domain over one): its attributes, in order, dropped ones left
    /// out (as `record_out` leaves them out).
    Composite(Vec<Field>),
}

/// An attribute of a composite type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: Kind,
}

/// Built-in array types and their element types.
#[rustfmt::skip]
const ARRAYS: [(u32, u32); 24] = [
    (1000, 16), (1001, 17), (1002, 18), (1003, 19), (1016, 20), (1005, 21), (1007, 23),
    (1009, 25), (1028, 26), (199, 114), (143, 142), (1021, 700), (1022, 701), (1014, 1042),
    (1015, 1043), (1182, 1082), (1183, 1083), (1115, 1114), (1185, 1184), (1187, 1186),
    (1270, 1266), (1231, 1700), (2951, 2950), (3807, 3802),
];

impl Kind {
    /// The kind of a built-in type OID, if known: bool, bytea, int2/4/8, oid, text, varchar,
    /// bpchar, name, "char", xml, json, jsonb, float4/8, numeric, date, time, timetz,
    /// timestamp, timestamptz, interval, uuid, and their array types. Unknown OIDs return
    /// None (the caller resolves enums, domains and other arrays via the catalog and builds a
    /// Kind itself).
    pub fn of_builtin(oid: u32) -> Option<Kind> {
        match ARRAYS.iter().find(|(array, _)| *array == oid) {
            Some(&(_, element)) => scalar_kind(element).map(|k| Kind::Array(Box::new(k), b',')),
            None => scalar_kind(oid),
        }
    }
}

/// The kind of a built-in scalar type.
fn scalar_kind(oid: u32) -> Option<Kind> {
    Some(match oid {
        16 => Kind::Bool,
        17 => Kind::Bytea,
        20 | 21 | 23 => Kind::Int,
        18 | 19 | 25 | 142 | 1042 | 1043 => Kind::Text,
        // to_jsonb treats oid as text, not as a number.
        26 | 2950 => Kind::OtherText,
        114 => Kind::Json,
        700 | 701 => Kind::Float,
        1082 => Kind::Date,
        1083 => Kind::Time,
        1114 => Kind::Timestamp,
        1184 => Kind::TimestampTz,
        1186 => Kind::Interval,
        1266 => Kind::TimeTz,
        1700 => Kind::Numeric,
        3802 => Kind::Jsonb,
        _ => return None,
    })
}

/// A column text that cannot be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// A `bool` text other than `t` or `f`.
    #[error("not a boolean: {0:?}")]
    Bool(String),
    /// A number text that is not a decimal number, or one beyond numeric's range.
    #[error("not a number: {0:?}")]
    Number(String),
    /// A malformed array literal; `at` is the byte offset where reading stopped.
    #[error("malformed array literal at byte {at}: {text:?}")]
    Array { at: usize, text: String },
    /// A malformed record literal, or one whose field count is not the type's (`fields`,
    /// as the type was when its Relation message was read).
    #[error("malformed record literal at byte {at} (the type has {fields} attributes): {text:?}")]
    Record {
        at: usize,
        fields: usize,
        text: String,
    },
    /// A `json` or `jsonb` text that is not JSON.
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
}

/// At most this many array dimensions (PostgreSQL's MAXDIM).
const MAX_DIMS: usize = 6;

/// Deeper json is embedded without normalising (its numbers keep their spelling).
const MAX_JSON_DEPTH: usize = 64;

/// Largest scale a numeric has (NUMERIC_DSCALE_MAX).
const MAX_SCALE: i64 = 16383;

/// Most digits before the point a numeric has (its weight limit).
const MAX_INT_DIGITS: i64 = 131072;

/// Appends the JSON that to_jsonb gives for a value whose text output is `text`. On error
/// `out` is left as it was.
pub fn write_json(kind: &Kind, text: &str, out: &mut String) -> Result<(), ValueError> {
    let len = out.len();
    let result = write_value(kind, text, out);
    if result.is_err() {
        out.truncate(len);
    }
    result
}

/// [`write_json`] without the clean-up on error.
fn write_value(kind: &Kind, text: &str, out: &mut String) -> Result<(), ValueError> {
    match kind {
        Kind::Bool => match text {
            "t" => out.push_str("true"),
            "f" => out.push_str("false"),
            _ => return Err(ValueError::Bool(clip(text))),
        },
        Kind::Int | Kind::Numeric | Kind::Float => write_number(text, out)?,
        Kind::Json => write_json_text(text, out, 0)?,
        Kind::Jsonb => {
            let raw: &RawValue = serde_json::from_str(text)?;
            out.push_str(raw.get());
        }
        Kind::Timestamp => write_timestamp(text, false, out),
        Kind::TimestampTz => write_timestamp(text, true, out),
        Kind::Array(element, delimiter) => write_array(element, *delimiter, text, out)?,
        Kind::Vector(element) => write_vector(element, text, out)?,
        Kind::Composite(fields) => write_record(fields, text, out)?,
        Kind::Text
        | Kind::Date
        | Kind::Time
        | Kind::TimeTz
        | Kind::Bytea
        | Kind::Interval
        | Kind::OtherText => write_str(text, out),
    }
    Ok(())
}

/// The first 64 characters of a text, for error messages.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Appends `s` as a JSON string.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    escape_into(s, out);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string.
fn escape_into(s: &str, out: &mut String) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends a number the way jsonb prints it: `NaN` and infinities as strings, anything else
/// as `numeric_out(numeric_in(text))`: no exponent, scale `max(0, fraction digits -
/// exponent)`, leading zeros dropped, and no sign on zero.
fn write_number(text: &str, out: &mut String) -> Result<(), ValueError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        write_str(text, out);
        return Ok(());
    }
    let (negative, int, frac, exponent) =
        split_number(text).ok_or_else(|| ValueError::Number(clip(text)))?;
    let digit = |i: i64| -> char {
        let (int, frac) = (int.as_bytes(), frac.as_bytes());
        let at = |s: &[u8], i: i64| usize::try_from(i).ok().and_then(|i| s.get(i).copied());
        char::from(
            at(int, i)
                .or_else(|| at(frac, i - int.len() as i64))
                .unwrap_or(b'0'),
        )
    };
    let point = (int.len() as i64).saturating_add(exponent);
    let scale = (frac.len() as i64).saturating_sub(exponent).max(0);
    let nonzero = int.bytes().chain(frac.bytes()).position(|b| b != b'0');
    let first = nonzero.map_or(point, |i| (i as i64).min(point));
    if scale > MAX_SCALE || point - first > MAX_INT_DIGITS {
        return Err(ValueError::Number(clip(text)));
    }
    if negative && nonzero.is_some() {
        out.push('-');
    }
    if first >= point {
        out.push('0');
    }
    out.extend((first..point).map(digit));
    if scale > 0 {
        out.push('.');
        out.extend((point..point + scale).map(digit));
    }
    Ok(())
}

/// A decimal number's sign, integer digits, fraction digits and exponent.
fn split_number(text: &str) -> Option<(bool, &str, &str, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid = !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac);
    valid.then_some((negative, int, frac, exponent))
}

/// Appends a `timestamp[tz]` as `to_jsonb` prints it: `T` for the first space, a whole-hour
/// offset (`+05`) as `+05:00`, a ` BC` suffix kept; `infinity` and `-infinity` unchanged.
fn write_timestamp(text: &str, with_zone: bool, out: &mut String) {
    let Some((date, rest)) = text.split_once(' ') else {
        return write_str(text, out);
    };
    let (time, era) = match rest.strip_suffix(" BC") {
        Some(time) => (time, " BC"),
        None => (rest, ""),
    };
    out.push('"');
    escape_into(date, out);
    out.push('T');
    escape_into(time, out);
    if with_zone && time.rfind(['+', '-']).is_some_and(|i| time.len() - i == 3) {
        out.push_str(":00");
    }
    out.push_str(era);
    out.push('"');
}

/// Appends a `json` text normalised as jsonb would store it (see the module doc).
fn write_json_text(text: &str, out: &mut String, depth: usize) -> Result<(), ValueError> {
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    let first = text.bytes().next();
    if depth == 0 && !matches!(first, Some(b'{' | b'[')) {
        let _: &RawValue = serde_json::from_str(text)?;
    }
    match first {
        Some(b'{') if depth < MAX_JSON_DEPTH => {
            // A map keeps the last value of a duplicate key, as jsonb does.
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by_key(|(key, _)| key.len());
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                out.push_str(if i == 0 { "" } else { "," });
                write_str(&key, out);
                out.push(':');
                write_json_text(value.get(), out, depth + 1)?;
            }
            out.push('}');
        }
        Some(b'[') if depth < MAX_JSON_DEPTH => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                out.push_str(if i == 0 { "" } else { "," });
                write_json_text(item.get(), out, depth + 1)?;
            }
            out.push(']');
        }
        Some(b'-' | b'0'..=b'9') => write_number(text, out)?,
        _ => out.push_str(text),
    }
    Ok(())
}

mod array;
mod record;
#[cfg(test)]
mod tests;
