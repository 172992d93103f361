//! Where each value of the effective config came from: a line of the file (the key's own
//! line, found from the parser's spans, never a comment that mentions it), an environment
//! variable, or the default. Errors are placed with it, and `sluice config` prints it.

use std::collections::HashMap;
use std::fmt;

use toml_edit::{Item, Table, Value};

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The file, at this line (1-based).
    File(usize),
    /// This environment variable.
    Env(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(line) => write!(f, "line {line}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The origin of every key path (`postgres.url`, `tables[2].app`, `apps.crm`).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    lines: HashMap<String, usize>,
    env: HashMap<String, String>,
}

impl Origins {
    /// The lines of every key, table header and array element of `text` (empty when it does
    /// not parse: the parse error has its own line).
    pub fn of_text(text: &str) -> Origins {
        let mut lines = HashMap::new();
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            table(doc.as_table(), "", text, &mut lines);
        }
        Origins {
            lines,
            env: HashMap::new(),
        }
    }

    /// Records that `path`'s value came from `var`.
    pub fn set_env(&mut self, path: &str, var: &str) {
        self.env.insert(path.to_string(), var.to_string());
    }

    /// Where `path`'s value came from.
    pub fn of(&self, path: &str) -> Origin {
        if let Some(var) = self.env.get(path) {
            return Origin::Env(var.clone());
        }
        self.lines
            .get(path)
            .map_or(Origin::Default, |&line| Origin::File(line))
    }

    /// Where a problem about `path` is reported: the variable that set it, or the line of the
    /// key (or of the nearest enclosing key or header), else line 1.
    pub fn locate(&self, path: &str) -> Origin {
        let mut at = path;
        loop {
            match self.of(at) {
                Origin::Default => {}
                found => return found,
            }
            match at.rfind(['.', '[']) {
                Some(cut) => at = &at[..cut],
                None => return Origin::File(1),
            }
        }
    }

    /// The line of a key in the file, if the file has it.
    pub fn line(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let at = span?.start.min(text.len());
    Some(text[..at].matches('\n').count() + 1)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn table(t: &Table, path: &str, text: &str, out: &mut HashMap<String, usize>) {
    for (name, _) in t.iter() {
        let Some((key, item)) = t.get_key_value(name) else {
            continue;
        };
        let here = join(path, name);
        // a table's header line if it has one, else the key's (a dotted or inline key)
        let line = match item {
            Item::Table(sub) => line_of(text, sub.span()).or(line_of(text, key.span())),
            _ => line_of(text, key.span()),
        };
        if let Some(line) = line {
            out.entry(here.clone()).or_insert(line);
        }
        self::item(item, &here, text, out);
    }
}

fn item(i: &Item, path: &str, text: &str, out: &mut HashMap<String, usize>) {
    match i {
        Item::Table(t) => table(t, path, text, out),
        Item::ArrayOfTables(array) => {
            for (n, t) in array.iter().enumerate() {
                let here = format!("{path}[{n}]");
                if let Some(line) = line_of(text, t.span()) {
                    out.insert(here.clone(), line);
                }
                table(t, &here, text, out);
            }
        }
        Item::Value(v) => value(v, path, text, out),
        Item::None => {}
    }
}

fn value(v: &Value, path: &str, text: &str, out: &mut HashMap<String, usize>) {
    match v {
        Value::InlineTable(t) => {
            for (name, _) in t.iter() {
                if let Some((key, inner)) = t.get_key_value(name) {
                    let here = join(path, name);
                    if let Some(line) = line_of(text, key.span()) {
                        out.insert(here.clone(), line);
                    }
                    item(inner, &here, text, out);
                }
            }
        }
        Value::Array(array) => {
            for (n, element) in array.iter().enumerate() {
                let here = format!("{path}[{n}]");
                if let Some(line) = line_of(text, element.span()) {
                    out.insert(here.clone(), line);
                }
                value(element, &here, text, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_own_line_not_a_comment_mentioning_it() {
        let text = "# batch_size: how many\n[source]\n# batch_size = 5 was too few\nbatch_size = 0\n\
                    [[tables]]\ntable = \"a\"\n[[tables]]\ntable = \"b\"\napp = { fixed = [\"x\"] }\n\
                    [apps.crm]\nprefixes = [\"crm.\"]\n";
        let o = Origins::of_text(text);
        assert_eq!(o.of("source"), Origin::File(2));
        assert_eq!(o.of("source.batch_size"), Origin::File(4));
        assert_eq!(o.of("tables[1]"), Origin::File(7));
        assert_eq!(o.of("tables[1].app.fixed"), Origin::File(9));
        assert_eq!(o.of("tables[1].app.fixed[0]"), Origin::File(9));
        assert_eq!(o.of("apps.crm.prefixes"), Origin::File(11));
        assert_eq!(o.of("source.mode"), Origin::Default);
        assert_eq!(o.locate("tables[1].channel"), Origin::File(7));
        assert_eq!(o.locate("history.ttl"), Origin::File(1));
    }

    #[test]
    fn a_variable_wins_over_the_file() {
        let mut o = Origins::of_text("[http]\nlisten = \"x\"\n");
        o.set_env("http.listen", "SLUICE_HTTP_LISTEN");
        assert_eq!(
            o.of("http.listen"),
            Origin::Env("SLUICE_HTTP_LISTEN".into())
        );
        assert_eq!(
            o.locate("http.listen"),
            Origin::Env("SLUICE_HTTP_LISTEN".into())
        );
    }
}
