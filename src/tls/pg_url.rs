//! libpq's TLS parameters in `postgres.url`: operators already know them from psql, and a
//! URL that works there works here. tokio-postgres knows only `disable`/`prefer`/`require`
//! and rejects `sslrootcert`, `sslcert` and `sslkey`, so ours are taken out of the URL here
//! before it is parsed, in either form:
//! `postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem` or
//! `host=h sslmode=verify-full sslrootcert=/ca.pem`.

/// The parameters Sluice handles itself.
const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// `url` without our parameters, and their values in the order found.
pub(super) fn take_params(url: &str) -> (String, Vec<(String, String)>) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        take_from_query(url)
    } else {
        take_from_key_values(url)
    }
}

fn take_from_query(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        if OURS.contains(&key.as_str()) {
            taken.push((key, percent_decode(value)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

/// `%XX` escapes of a URL part decoded (invalid ones kept as written).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key = value` pairs separated by spaces; a value may be single-quoted with `\` escapes.
fn take_from_key_values(text: &str) -> (String, Vec<(String, String)>) {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_string();
        let after_eq = rest[key_end..]
            .trim_start()
            .strip_prefix('=')
            .map(str::trim_start);
        let Some(after_eq) = after_eq else {
            // Not key=value: leave the text as it is for tokio-postgres to report.
            return (text.to_string(), Vec::new());
        };
        let (value, quoted, remainder) = key_value(after_eq);
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(format!("{key}={quoted}"));
        }
        rest = remainder.trim_start();
    }
    (kept.join(" "), taken)
}

/// The value at the start of `s`: (unescaped, as written, what follows).
fn key_value(s: &str) -> (String, &str, &str) {
    if let Some(body) = s.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' => return (value, &s[..i + 2], &body[i + 1..]),
                c => value.push(c),
            }
        }
        return (value, s, "");
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (s[..end].to_string(), &s[..end], &s[end..])
}

#[cfg(test)]
mod tests {
    use super::take_params;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn takes_our_parameters_out_of_a_url() {
        let (rest, taken) = take_params("postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca%20b.pem");
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(
            taken,
            pairs(&[("sslmode", "verify-full"), ("sslrootcert", "/etc/ca b.pem")])
        );
        let (rest, taken) = take_params("postgresql://h/db?sslmode=require");
        assert_eq!(
            (rest.as_str(), taken),
            ("postgresql://h/db", pairs(&[("sslmode", "require")]))
        );
        assert_eq!(take_params("postgres://h/db").0, "postgres://h/db");
    }

    #[test]
    fn takes_our_parameters_out_of_key_values() {
        let (rest, taken) = take_params(
            "host=h  sslmode = verify-ca password='a b\\'c' sslrootcert='/x y/ca.pem' dbname=app",
        );
        assert_eq!(rest, "host=h password='a b\\'c' dbname=app");
        assert_eq!(
            taken,
            pairs(&[("sslmode", "verify-ca"), ("sslrootcert", "/x y/ca.pem")])
        );
        let odd = "host h";
        assert_eq!(take_params(odd), (odd.to_string(), Vec::new()));
    }
}
