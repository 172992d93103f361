//! Array literals (`array_out`'s text) as JSON arrays.

use std::borrow::Cow;

use super::{clip, write_value, Kind, ValueError, MAX_DIMS};

/// Appends an array literal (`{1,2}`, `{{"a b",NULL}}`, `[0:1]={1,2}`) whose elements are
/// separated by `delimiter` as a JSON array.
pub(super) fn write_array(
    element: &Kind,
    delimiter: u8,
    text: &str,
    out: &mut String,
) -> Result<(), ValueError> {
    let mut reader = ArrayReader {
        text,
        pos: 0,
        delimiter,
    };
    if text.starts_with('[') {
        reader.pos = text.find('=').ok_or_else(|| reader.error())? + 1;
    }
    reader.skip_space();
    reader.array(element, out, 1)?;
    reader.skip_space();
    if reader.pos != text.len() {
        return Err(reader.error());
    }
    Ok(())
}

/// Appends a vector's text (`1 2 3`, `int2vectorout`'s and `oidvectorout`'s) as a JSON array.
pub(super) fn write_vector(element: &Kind, text: &str, out: &mut String) -> Result<(), ValueError> {
    out.push('[');
    for (i, item) in text.split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value(element, item, out)?;
    }
    out.push(']');
    Ok(())
}

/// A cursor over an array literal.
struct ArrayReader<'a> {
    text: &'a str,
    pos: usize,
    delimiter: u8,
}

impl ArrayReader<'_> {
    fn error(&self) -> ValueError {
        ValueError::Array {
            at: self.pos,
            text: clip(self.text),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while matches!(
            self.peek(),
            Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
        ) {
            self.pos += 1;
        }
    }

    /// Reads `{...}` at dimension `dim`, nested dimensions included.
    fn array(&mut self, element: &Kind, out: &mut String, dim: usize) -> Result<(), ValueError> {
        if dim > MAX_DIMS || self.peek() != Some(b'{') {
            return Err(self.error());
        }
        self.pos += 1;
        out.push('[');
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push(']');
            return Ok(());
        }
        loop {
            self.skip_space();
            if self.peek() == Some(b'{') {
                self.array(element, out, dim + 1)?;
            } else {
                self.element(element, out)?;
            }
            self.skip_space();
            match self.peek() {
                Some(b) if b == self.delimiter => out.push(','),
                Some(b'}') => break,
                _ => return Err(self.error()),
            }
            self.pos += 1;
        }
        self.pos += 1;
        out.push(']');
        Ok(())
    }

    /// Reads one element, quoted or not; an unquoted `NULL` (any case) is null.
    fn element(&mut self, element: &Kind, out: &mut String) -> Result<(), ValueError> {
        let quoted = self.peek() == Some(b'"');
        self.pos += usize::from(quoted);
        let (start, mut escaped) = (self.pos, false);
        loop {
            match self.peek() {
                None => return Err(self.error()),
                Some(b'\\') => (self.pos, escaped) = (self.pos + 2, true),
                Some(b'"') if quoted => break,
                Some(b) if !quoted && (b == self.delimiter || b == b'}') => break,
                Some(b'"' | b'{') if !quoted => return Err(self.error()),
                Some(_) => self.pos += 1,
            }
        }
        let mut raw = &self.text[start..self.pos];
        if quoted {
            self.pos += 1;
        } else {
            raw = raw.trim_end_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
            if raw.is_empty() {
                return Err(self.error());
            }
            if raw.eq_ignore_ascii_case("NULL") && !escaped {
                out.push_str("null");
                return Ok(());
            }
        }
        let value = if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        write_value(element, &value, out)
    }
}

/// Drops the backslash before each escaped character.
fn unescape(raw: &str) -> String {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        value.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    value
}
