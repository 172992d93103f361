//! Composite values (`record_out`'s text, `(1,"a b",)`) as JSON objects.
//!
//! The literal is read as `record_in` reads it: fields between parentheses, separated by
//! commas; an empty field is NULL (a quoted empty one, `""`, is the empty string); inside a
//! field, double quotes group text (`""` within them is one `"`) and a backslash takes the next
//! character as it is, quoted or not. Whitespace is kept, except around the parentheses.

use std::borrow::Cow;

use super::{clip, write_str, write_value, Field, ValueError};

/// Appends a record literal as a JSON object with one member per attribute of `fields`, in
/// their order, each value converted by its attribute's kind.
pub(super) fn write_record(
    fields: &[Field],
    text: &str,
    out: &mut String,
) -> Result<(), ValueError> {
    let mut reader = RecordReader {
        text,
        pos: 0,
        fields: fields.len(),
    };
    reader.skip_space();
    reader.expect(b'(')?;
    out.push('{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            reader.expect(b',')?;
            out.push(',');
        }
        write_str(&field.name, out);
        out.push(':');
        match reader.field()? {
            Some(value) => write_value(&field.kind, &value, out)?,
            None => out.push_str("null"),
        }
    }
    reader.expect(b')')?;
    reader.skip_space();
    if reader.pos != text.len() {
        return Err(reader.error());
    }
    out.push('}');
    Ok(())
}

/// A cursor over a record literal of a type with `fields` attributes.
struct RecordReader<'a> {
    text: &'a str,
    pos: usize,
    fields: usize,
}

impl<'a> RecordReader<'a> {
    fn error(&self) -> ValueError {
        ValueError::Record {
            at: self.pos,
            fields: self.fields,
            text: clip(self.text),
        }
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len()
            - rest
                .trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
                .len();
    }

    /// Steps over `byte`, which must come next.
    fn expect(&mut self, byte: u8) -> Result<(), ValueError> {
        if self.text.as_bytes().get(self.pos) != Some(&byte) {
            return Err(self.error());
        }
        self.pos += 1;
        Ok(())
    }

    /// Reads one field up to the `,` or `)` after it: None if it is empty (NULL).
    fn field(&mut self) -> Result<Option<Cow<'a, str>>, ValueError> {
        let rest = &self.text[self.pos..];
        let plain = rest.find([',', ')', '"', '\\']).unwrap_or(rest.len());
        if rest[plain..].starts_with([',', ')']) {
            self.pos += plain;
            return Ok((plain > 0).then_some(Cow::Borrowed(&rest[..plain])));
        }
        let (mut value, mut quoted) = (String::with_capacity(rest.len()), false);
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                ',' | ')' if !quoted => {
                    self.pos += i;
                    return Ok(Some(Cow::Owned(value)));
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                // Within quotes, `""` is one quote.
                '"' if quoted && chars.next_if(|&(_, next)| next == '"').is_some() => {
                    value.push('"')
                }
                '"' => quoted = !quoted,
                _ => value.push(c),
            }
        }
        self.pos = self.text.len();
        Err(self.error())
    }
}
