//! Dead letters printed for a person: an aligned table, or one record. Tenants, tables and
//! errors come from captured rows, i.e. from whoever can write one; every value is cleaned
//! ([`clean`]) so that an escape sequence in a tenant cannot drive the operator's terminal.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

/// The titles of `list`'s columns, in the order of its query.
const TITLES: [&str; 10] = [
    "id", "created", "reason", "app", "tenant", "table", "event id", "attempts", "error",
    "resolved",
];
/// The widest each column may get, in characters; longer values are cut with `…`. The error
/// takes what the line has left.
const CAPS: [usize; 10] = [12, 19, 17, 16, 24, 32, 24, 8, usize::MAX, 19];
/// The line width when no terminal says otherwise (output to a file or a pipe).
const DEFAULT_WIDTH: usize = 160;
/// The error column gets at least this much, however narrow the terminal.
const MIN_ERROR: usize = 20;

/// An aligned table of `list`'s rows (columns as [`TITLES`]); with `all`, the resolved time
/// comes before the error.
pub fn table(rows: &[Vec<Option<String>>], all: bool, width: usize) -> String {
    let mut order: Vec<usize> = (0..8).collect();
    if all {
        order.push(9);
    }
    order.push(8);
    let titles: Vec<String> = order.iter().map(|&i| TITLES[i].to_string()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            order
                .iter()
                .map(|&i| cut(&clean(r[i].as_deref().unwrap_or("-")), CAPS[i]))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..order.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .chain([titles[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let used: usize = widths[..widths.len() - 1].iter().map(|w| w + 2).sum();
    let error_width = width.saturating_sub(used).max(MIN_ERROR);
    let mut out = String::new();
    for line in std::iter::once(&titles).chain(&cells) {
        let (error, rest) = line.split_last().expect("at least one column");
        for (cell, w) in rest.iter().zip(&widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(&cut(error, error_width));
        out.push('\n');
    }
    out
}

/// One dead letter, a `label  value` line per column (`-` for NULL).
pub fn record(labels: &[&str], values: &[Option<String>]) -> String {
    labels
        .iter()
        .zip(values)
        .map(|(l, v)| format!("{l:<16} {}\n", clean(v.as_deref().unwrap_or("-"))))
        .collect()
}

/// Control characters (and the invisible ones that reorder text) replaced by `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect()
}

/// As [`clean`], keeping line breaks (a pretty-printed payload).
pub fn clean_lines(s: &str) -> String {
    s.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// At most `max` characters, the last one `…` when something was cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How wide a table line may be: `$COLUMNS`, else the terminal's width, else [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    if let Some(w) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return w;
    }
    if std::io::stdout().is_terminal() {
        if let Some(w) = terminal_columns() {
            return w;
        }
    }
    DEFAULT_WIDTH
}

/// The terminal's columns as `stty size` reports them (`rows cols`).
fn terminal_columns() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, error: &str) -> Vec<Option<String>> {
        let mut r: Vec<Option<String>> = [
            "7",
            "2026-11-22 10:00:00",
            "invalid_tenant",
            "",
            "",
            "public.roles",
            "cl:9",
            "1",
        ]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect();
        r[3] = None;
        r[4] = Some(tenant.into());
        r.extend([Some(error.to_string()), None]);
        r
    }

    #[test]
    fn the_table_is_aligned_cleaned_and_fits_the_width() {
        let rows = [
            row("a:b", "short"),
            row("\x1b[31mred\nline\u{202E}", &"x".repeat(500)),
        ];
        let text = table(&rows, false, 120);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "one line per row and a title line: {text}");
        assert!(
            lines[0].starts_with("id  created              reason          "),
            "{}",
            lines[0]
        );
        assert!(
            !text.contains('\x1b') && !text.contains('\u{202E}'),
            "{text:?}"
        );
        assert!(lines[2].contains("?[31mred?line?"), "{}", lines[2]);
        assert!(lines.iter().all(|l| l.chars().count() <= 120), "{text}");
        assert!(lines[2].ends_with('…'));
        assert_eq!(
            lines[1].find("public.roles"),
            lines[0].find("table"),
            "columns are aligned"
        );
        let all = table(&rows, true, 200);
        assert!(
            all.lines()
                .next()
                .unwrap()
                .ends_with("attempts  resolved  error"),
            "{all}"
        );
    }

    #[test]
    fn a_record_shows_null_as_a_dash() {
        assert_eq!(
            record(&["app", "tenant_id"], &[None, Some("t\u{7}1".into())]),
            "app              -\ntenant_id        t?1\n"
        );
        assert_eq!(
            clean_lines("{\n  \"a\": \"\u{1b}\"\n}"),
            "{\n  \"a\": \"?\"\n}"
        );
    }
}
