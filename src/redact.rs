//! Passwords out of everything Sluice prints or stores: logs, `sluice check` lines, error
//! messages, `sluice.checkpoint.last_error`.
//!
//! A password can sit in a connection string in several places, and each is masked as `***`:
//!
//! * a URL's user info: `postgresql://u:secret@h/db`, `redis://:secret@h`, `redis://u:secret@h`;
//! * a URL's query: `postgres://u@h/db?password=secret`, `redis://h?password=secret` (any key
//!   ending in `password`, so libpq's `sslpassword` too);
//! * libpq's key=value form: `host=h password=secret`, `password = 'se cret'`.
//!
//! [`url`] masks a connection string; [`text`] masks arbitrary text (an error message that may
//! hold a connection string, or a password a library echoed), given the passwords the config
//! holds ([`secrets`]). Nothing here knows about the rest of Sluice.

use std::ops::Range;

use crate::tls::pg_url::percent_decode;

/// What a password is replaced with.
pub const MASK: &str = "***";

/// Known secrets shorter than this are not masked wherever they occur in [`text`] (a
/// one-letter password would turn every message into asterisks); they are still masked where
/// they stand as a password.
const MIN_SECRET: usize = 4;

/// A postgres/redis URL or a libpq key=value string with every password masked.
pub fn url(s: &str) -> String {
    replace(s, &spans(s))
}

/// `s` with every known secret in `secrets`, and every password in a URL or `password=` within
/// it, masked.
pub fn text(s: &str, secrets: &[&str]) -> String {
    let mut known: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|x| x.chars().count() >= MIN_SECRET)
        .collect();
    known.sort_by_key(|x| std::cmp::Reverse(x.len())); // a secret inside a longer one goes last
    let mut out = s.to_string();
    for secret in known {
        out = out.replace(secret, MASK);
    }
    replace(&out, &embedded_spans(&out))
}

/// The passwords in these connection strings, as written and as the server gets them
/// (percent-decoded, unquoted): what [`text`] should mask.
pub fn secrets(urls: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in urls {
        for span in spans(s) {
            let raw = &s[span];
            for form in [raw.to_string(), percent_decode(raw), unquote(raw)] {
                if !form.is_empty() && !out.contains(&form) {
                    out.push(form);
                }
            }
        }
    }
    out
}

/// The password spans of a whole connection string: a URL's, or key=value's.
fn spans(s: &str) -> Vec<Range<usize>> {
    match scheme_len(s) {
        Some(_) => url_spans(s, 0..s.len()),
        None => keyword_spans(s),
    }
}

/// The length of `s`'s leading `scheme://`, if it starts with one.
fn scheme_len(s: &str) -> Option<usize> {
    let at = s.find("://")?;
    let scheme = &s[..at];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(at + 3)
}

/// The password spans of the URL `s[within]`: in its user info and its query.
fn url_spans(s: &str, within: Range<usize>) -> Vec<Range<usize>> {
    let url = &s[within.clone()];
    let Some(start) = scheme_len(url) else {
        return Vec::new();
    };
    let rest = &url[start..];
    let mut out = Vec::new();
    let mut after = 0;
    if let Some(at) = user_info_end(rest) {
        after = at + 1;
        if let Some(colon) = rest[..at].find(':') {
            out.push(within.start + start + colon + 1..within.start + start + at);
        }
    }
    if let Some(q) = rest[after..].find('?') {
        let query_start = within.start + start + after + q + 1;
        let query_end = rest[after + q..]
            .find('#')
            .map_or(within.end, |h| within.start + start + after + q + h);
        out.extend(query_spans(s, query_start..query_end));
    }
    out
}

/// Where a URL's user info ends (its `@`), after the `scheme://`. A password may hold an
/// unencoded `@`, `/` or `?`, so this is the last `@` before the query; failing that, the
/// first `@` that follows neither a path nor a query parameter.
fn user_info_end(rest: &str) -> Option<usize> {
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    rest[..query].rfind('@').or_else(|| {
        rest.find('@')
            .filter(|&at| !rest[..at].contains(['/', '=', '&']))
    })
}

/// The value spans of password parameters in the query `s[query]` (`a=1&password=x`).
fn query_spans(s: &str, query: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut pos = query.start;
    for pair in s[query.clone()].split('&') {
        if let Some(eq) = pair.find('=') {
            if is_password_key(&percent_decode(&pair[..eq])) {
                out.push(pos + eq + 1..pos + pair.len());
            }
        }
        pos += pair.len() + 1;
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with("password")
}

/// The value spans of `...password = value` in `s`, libpq's key=value syntax.
fn keyword_spans(s: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((_, value)) = next_keyword(s, from, false) {
        from = value.end.max(from + 1);
        out.push(value);
    }
    out
}

/// The next `...password = value` at or after `from`: where its key starts, and its value. A
/// value is single-quoted (with `\` escapes) or runs to the next whitespace; `in_text`, less
/// trailing punctuation (`at password=x: refused`).
fn next_keyword(s: &str, mut from: usize, in_text: bool) -> Option<(usize, Range<usize>)> {
    const KEY: &str = "password";
    loop {
        let key = from + s.get(from..)?.to_ascii_lowercase().find(KEY)?;
        from = key + KEY.len();
        let Some(value) = s[from..].trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let start = s.len() - value.len();
        let mut len = value_len(value);
        if in_text && !value.starts_with('\'') {
            len = value[..len].trim_end_matches(TRAILING).len();
        }
        return Some((key, start..start + len));
    }
}

/// Punctuation that ends a URL or a bare value in free text rather than belonging to it.
const TRAILING: [char; 5] = [':', ',', ';', '.', ')'];

/// The length of the key=value value at the start of `s`.
fn value_len(s: &str) -> usize {
    let Some(body) = s.strip_prefix('\'') else {
        return s.find(char::is_whitespace).unwrap_or(s.len());
    };
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => return i + 2,
            _ => {}
        }
    }
    s.len()
}

/// The next URL in free text at or after `from`: from its scheme to the next whitespace or
/// `"`, less trailing punctuation.
fn next_url(s: &str, mut from: usize) -> Option<Range<usize>> {
    loop {
        let sep = from + s.get(from..)?.find("://")?;
        from = sep + 3;
        let start = s[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let token_end = s[sep..]
            .find(|c: char| c.is_whitespace() || c == '"')
            .map_or(s.len(), |i| sep + i);
        let end = start + s[start..token_end].trim_end_matches(TRAILING).len();
        if scheme_len(&s[start..end]).is_some() {
            return Some(start..end);
        }
    }
}

/// The password spans in free text: of URLs, and of key=value passwords outside them,
/// whichever comes first (a quoted value may hold `://`, a URL's query `password=`).
fn embedded_spans(s: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let keyword = next_keyword(s, pos, true);
        let url = next_url(s, pos);
        let keyword_first = match (&keyword, &url) {
            (Some((key, _)), Some(url)) => *key < url.start,
            (keyword, _) => keyword.is_some(),
        };
        if let (true, Some((key, value))) = (keyword_first, keyword) {
            pos = value.end.max(key + 1);
            out.push(value);
        } else if let Some(url) = url {
            pos = url.end.max(url.start + 1);
            out.extend(url_spans(s, url));
        } else {
            return out;
        }
    }
}

/// `s` with each span replaced by [`MASK`]; spans are in order and do not overlap.
fn replace(s: &str, spans: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for span in spans {
        out.push_str(&s[from..span.start]);
        out.push_str(MASK);
        from = span.end;
    }
    out.push_str(&s[from..]);
    out
}

/// A key=value value without its quotes and escapes.
fn unquote(s: &str) -> String {
    let Some(body) = s.strip_prefix('\'') else {
        return s.to_string();
    };
    let body = body.strip_suffix('\'').unwrap_or(body);
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        out.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    out
}

#[cfg(test)]
mod tests;
