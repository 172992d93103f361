//! The type check of the merged file and environment, before serde: every problem names the
//! key (dotted path), what was found, what was expected and an example of the right form, so
//! no serde wording (`invalid type: string "1000", expected usize`) reaches an operator.

use toml::Value;

use super::origin::{Origin, Origins};
use super::schema::{self, found, Key, SECTIONS};
use super::Problem;

/// Every type problem of `root`.
pub(super) fn check(root: &toml::Table, origins: &Origins) -> Vec<Problem> {
    let mut out = Vec::new();
    for (name, value) in root {
        match name.as_str() {
            "apps" => apps(value, &mut out),
            "tables" => tables(value, &mut out),
            section if SECTIONS.contains(&section) => scalars(section, value, origins, &mut out),
            other => out.push(Problem::key(
                other,
                format!(
                    "unknown section [{other}]{}; the sections are {}, apps and tables",
                    suggest(other, SECTIONS.iter().copied().chain(["apps", "tables"])),
                    SECTIONS.join(", ")
                ),
            )),
        }
    }
    out
}

/// `path: found X, expected Y; write it like Z`
fn wrong(path: &str, found: &str, expected: &str, example: &str) -> Problem {
    Problem::key(
        path,
        format!("{path}: found {found}, expected {expected}; write it like {example}"),
    )
}

fn scalars(section: &str, value: &Value, origins: &Origins, out: &mut Vec<Problem>) {
    let Value::Table(table) = value else {
        let first = schema::section(section).next().expect("sections have keys");
        let example = format!("[{section}] with {}", first.file_example());
        return out.push(wrong(section, &found(value), "a table", &example));
    };
    for (name, value) in table {
        let path = format!("{section}.{name}");
        match schema::find(section, name) {
            Some(key) => out.extend(scalar(key, value, origins)),
            None => {
                let keys: Vec<&str> = schema::section(section).map(|k| k.name).collect();
                out.push(unknown(&path, &format!("[{section}]"), name, &keys))
            }
        }
    }
}

/// One scalar key's value against its type.
fn scalar(key: &Key, value: &Value, origins: &Origins) -> Option<Problem> {
    let expected = schema::mismatch(key.kind, value)?;
    let path = key.path();
    Some(match origins.of(&path) {
        Origin::Env(_) => {
            let raw = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            wrong(&path, &format!("{raw:?}"), &expected, &key.env_example())
        }
        _ => wrong(&path, &found(value), &expected, &key.file_example()),
    })
}

fn unknown(path: &str, context: &str, name: &str, keys: &[&str]) -> Problem {
    Problem::key(
        path,
        format!(
            "{path}: unknown key{}; {context} takes {}",
            suggest(name, keys.iter().copied()),
            keys.join(", ")
        ),
    )
}

/// ` (did you mean poll_interval?)` when a known name is a small typo away.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map_or_else(String::new, |(_, k)| format!(" (did you mean {k}?)"))
}

/// Levenshtein distance, for the few short names of the config.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn apps(value: &Value, out: &mut Vec<Problem>) {
    let Value::Table(apps) = value else {
        return out.push(wrong(
            "apps",
            &found(value),
            "a table of apps",
            "[apps] then crm = { prefixes = [\"crm.\"] }",
        ));
    };
    for (name, app) in apps {
        let path = format!("apps.{name}");
        let example = format!("{name} = {{ prefixes = [\"{name}.\"] }}");
        let Value::Table(app) = app else {
            out.push(wrong(&path, &found(app), "a table with prefixes", &example));
            continue;
        };
        for (key, value) in app {
            match key.as_str() {
                "prefixes" => out.extend(strings(&format!("{path}.prefixes"), value, &example)),
                other => out.push(unknown(
                    &format!("{path}.{other}"),
                    "an app",
                    other,
                    &["prefixes"],
                )),
            }
        }
        if !app.contains_key("prefixes") {
            out.push(Problem::key(
                &path,
                format!("{path}: prefixes is missing; write it like {example}"),
            ));
        }
    }
}

/// A list of strings, or what is wrong with it.
fn strings(path: &str, value: &Value, example: &str) -> Option<Problem> {
    let Value::Array(items) = value else {
        return Some(wrong(path, &found(value), "a list of strings", example));
    };
    let (n, bad) = items.iter().enumerate().find(|(_, v)| !v.is_str())?;
    Some(wrong(
        &format!("{path}[{n}]"),
        &found(bad),
        "a string in quotes",
        example,
    ))
}

/// The keys of a `[[tables]]` entry: (name, example, required).
const TABLE_KEYS: [(&str, &str, bool); 7] = [
    ("table", "table = \"public.orders\"", true),
    ("type", "type = \"orders\"", true),
    ("tenant", "tenant = \"tenant_id\"", true),
    ("app", "app = { operation_code = \"operation_code\" }", true),
    ("channel", "channel = \"{app}:{tenant}:{type}\"", false),
    (
        "invalidate",
        "invalidate = [\"tenant:{tenant}:user:{id}\"]",
        false,
    ),
    ("state", "state = true", false),
];

fn tables(value: &Value, out: &mut Vec<Problem>) {
    let Value::Array(entries) = value else {
        return out.push(wrong(
            "tables",
            &found(value),
            "a list of tables",
            "a [[tables]] header (two brackets) per table",
        ));
    };
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("tables[{i}]");
        match entry {
            Value::Table(entry) => table(&path, entry, out),
            other => out.push(wrong(
                &path,
                &found(other),
                "a table",
                "a [[tables]] header per table",
            )),
        }
    }
}

/// One `[[tables]]` entry.
fn table(path: &str, entry: &toml::Table, out: &mut Vec<Problem>) {
    for (key, value) in entry {
        let at = format!("{path}.{key}");
        let Some((_, example, _)) = TABLE_KEYS.iter().find(|(k, _, _)| k == key) else {
            let keys = TABLE_KEYS.map(|(k, _, _)| k);
            out.push(unknown(&at, "a [[tables]] entry", key, &keys));
            continue;
        };
        out.extend(match key.as_str() {
            "app" => app(&at, value),
            "tenant" => tenant(&at, value),
            "invalidate" => strings(&at, value, example),
            "state" => {
                (!value.is_bool()).then(|| wrong(&at, &found(value), "true or false", example))
            }
            _ => {
                (!value.is_str()).then(|| wrong(&at, &found(value), "a string in quotes", example))
            }
        });
    }
    let missing = TABLE_KEYS
        .iter()
        .filter(|(k, _, required)| *required && !entry.contains_key(*k));
    for (key, example, _) in missing {
        let message = format!("{path}: {key} is missing; write it like {example}");
        out.push(Problem::key(path, message));
    }
}

/// `tenant = "tenant_id"` (a column) or `tenant = { schema = "tenant_([a-z0-9][a-z0-9_]*)" }`.
fn tenant(path: &str, value: &Value) -> Option<Problem> {
    const FORMS: &str = "a column name in quotes, or a table with schema";
    let example = "tenant = \"tenant_id\" (or { schema = \"tenant_([a-z0-9][a-z0-9_]*)\" })";
    let rule = match value {
        Value::String(_) => return None,
        Value::Table(rule) => rule,
        other => return Some(wrong(path, &found(other), FORMS, example)),
    };
    if let Some(other) = rule.keys().find(|k| *k != "schema") {
        return Some(unknown(
            &format!("{path}.{other}"),
            "tenant",
            other,
            &["schema"],
        ));
    }
    match rule.get("schema") {
        None => Some(wrong(path, "an empty table", FORMS, example)),
        Some(v) if v.is_str() => None,
        Some(v) => Some(wrong(
            &format!("{path}.schema"),
            &found(v),
            "a regular expression in quotes",
            "tenant = { schema = \"tenant_([a-z0-9][a-z0-9_]*)\" }",
        )),
    }
}

/// `app = { operation_code = "c" }`, `{ any_of = "c" }` or `{ fixed = ["crm"] }`.
fn app(path: &str, value: &Value) -> Option<Problem> {
    const RULES: &str = "a table with one of operation_code, any_of or fixed";
    let column = value.as_str().unwrap_or("operation_code");
    let example = format!("app = {{ operation_code = \"{column}\" }} (or {{ any_of = \"permissions\" }}, or {{ fixed = [\"crm\"] }})");
    let Value::Table(rule) = value else {
        return Some(wrong(path, &found(value), RULES, &example));
    };
    let mut keys = rule.iter();
    let (Some((name, inner)), None) = (keys.next(), keys.next()) else {
        let keys: Vec<&str> = rule.keys().map(String::as_str).collect();
        let found = match keys.len() {
            0 => "an empty table".to_string(),
            _ => format!("the keys {}", keys.join(" and ")),
        };
        return Some(wrong(path, &found, RULES, &example));
    };
    let at = format!("{path}.{name}");
    let column = |example: &str| {
        let example = format!("app = {{ {name} = \"{example}\" }}");
        (!inner.is_str()).then(|| wrong(&at, &found(inner), "a column name in quotes", &example))
    };
    match name.as_str() {
        "fixed" => strings(&at, inner, "app = { fixed = [\"crm\", \"hrms\"] }"),
        "operation_code" => column("operation_code"),
        "any_of" => column("permissions"),
        other => Some(unknown(
            &at,
            "app",
            other,
            &["operation_code", "any_of", "fixed"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::distance;

    #[test]
    fn typo_distance() {
        assert_eq!(distance("poll_intervall", "poll_interval"), 1);
        assert_eq!(distance("sourc", "source"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
