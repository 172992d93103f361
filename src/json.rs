//! Reading a few fields out of a row's JSON without building a tree of it.
//!
//! Rows arrive as JSON text (`to_jsonb(row)`); the router needs two or three of their columns
//! and the event embeds the rest verbatim, so values stay exactly as PostgreSQL wrote them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Finds `wanted` keys in a JSON object; `out[i]` is the raw value of `wanted[i]`, if present.
pub fn fields<'a>(
    json: &'a str,
    wanted: &[&str],
) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    let mut out = vec![None; wanted.len()];
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserializer::deserialize_map(
        &mut de,
        Picker {
            wanted,
            out: &mut out,
        },
    )?;
    Ok(out)
}

/// Every key of a JSON object with its raw value, in document order.
pub fn entries(json: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    serde_json::from_str::<Entries<'_>>(json).map(|e| e.0)
}

struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    out.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct Picker<'w, 'o, 'a> {
    wanted: &'w [&'w str],
    out: &'o mut Vec<Option<&'a RawValue>>,
}

impl<'de, 'w, 'o> Visitor<'de> for Picker<'w, 'o, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.wanted.iter().position(|w| *w == key) {
                Some(i) => self.out[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de, 'w, 'o> DeserializeSeed<'de> for Picker<'w, 'o, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// A boolean, array or object where text or a number was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotScalar;

/// A scalar JSON value as text: strings unescaped, numbers verbatim; `None` for null,
/// [`NotScalar`] for booleans, arrays and objects.
pub fn scalar_text(raw: &RawValue) -> Result<Option<Cow<'_, str>>, NotScalar> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'_, str>>(text)
            .map(Some)
            .map_err(|_| NotScalar),
        Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(text))),
        Some(b'n') => Ok(None),
        _ => Err(NotScalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_wanted_fields_and_keeps_numbers_exact() {
        let row = r#"{"a": 1.10, "b": {"x": [1, 2]}, "c": "q\"uote", "d": null}"#;
        let got = fields(row, &["c", "a", "zz", "d"]).unwrap();
        assert_eq!(got[0].unwrap().get(), r#""q\"uote""#);
        assert_eq!(got[1].unwrap().get(), "1.10");
        assert!(got[2].is_none());
        assert_eq!(got[3].unwrap().get(), "null");
    }

    #[test]
    fn scalar_text_unescapes_strings_only() {
        let v: Vec<Box<RawValue>> = ["\"a\\nb\"", "42", "null", "true"]
            .iter()
            .map(|s| RawValue::from_string(s.to_string()).unwrap())
            .collect();
        assert_eq!(scalar_text(&v[0]).unwrap().unwrap(), "a\nb");
        assert_eq!(scalar_text(&v[1]).unwrap().unwrap(), "42");
        assert_eq!(scalar_text(&v[2]).unwrap(), None);
        assert!(scalar_text(&v[3]).is_err());
    }

    #[test]
    fn entries_keep_order() {
        let e = entries(r#"{"b": 2, "a": "x"}"#).unwrap();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["b", "a"]);
    }
}
