//! `sluice config`: the effective configuration as TOML, each value followed by where it came
//! from (`sluice.toml:12`, `env SLUICE_HTTP_LISTEN`, `default`), passwords masked.

use std::fmt::Write;
use std::path::Path;

use super::origin::Origin;
use super::schema::{self, SECTIONS};
use super::Config;

/// The keys of a `[[tables]]` entry, in the order they are printed.
const TABLE_KEYS: [&str; 7] = [
    "table",
    "type",
    "tenant",
    "app",
    "channel",
    "invalidate",
    "state",
];

/// The effective configuration of `config`, read from `file`.
pub fn show(config: &Config, file: &Path) -> String {
    let root = toml::Value::try_from(config).expect("a config serializes");
    let root = match root {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    let p = Printer { config, file };
    let mut out = format!(
        "# The effective configuration: the environment over {} over the defaults.\n\
         # After each value, where it came from. Passwords are shown as ***.\n",
        file.display()
    );
    for section in SECTIONS {
        out.push_str(&format!("\n[{section}]\n"));
        aligned(&mut out, p.section(section, table(&root, section)));
        if section == "postgres" {
            libpq_lines(&mut out, &config.postgres.url);
        }
    }
    out.push_str("\n[apps]\n");
    let apps = table(&root, "apps").iter();
    let rows =
        apps.map(|(name, app)| (format!("{name} = {app}"), p.place(&format!("apps.{name}"))));
    aligned(&mut out, rows.collect());
    let tables = root.get("tables").and_then(|v| v.as_array());
    for (i, entry) in tables.into_iter().flatten().enumerate() {
        out.push('\n');
        aligned(&mut out, p.table(i, entry));
    }
    out
}

fn table<'a>(root: &'a toml::Table, name: &str) -> &'a toml::Table {
    static EMPTY: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();
    root.get(name)
        .and_then(|v| v.as_table())
        .unwrap_or_else(|| EMPTY.get_or_init(toml::Table::new))
}

/// Rows of `key = value` and the place each came from.
struct Printer<'a> {
    config: &'a Config,
    file: &'a Path,
}

impl Printer<'_> {
    fn place(&self, path: &str) -> String {
        match self.config.origins.of(path) {
            Origin::File(line) => format!("{}:{line}", self.file.display()),
            Origin::Env(var) => format!("env {var}"),
            Origin::Default => "default".into(),
        }
    }

    fn section(&self, section: &str, table: &toml::Table) -> Vec<(String, String)> {
        let row = |key: &schema::Key| match table.get(key.name) {
            Some(value) => format!("{} = {}", key.name, shown(&key.path(), value)),
            None => format!("# {} is not set", key.name),
        };
        schema::section(section)
            .map(|key| (row(key), self.place(&key.path())))
            .collect()
    }

    fn table(&self, i: usize, entry: &toml::Value) -> Vec<(String, String)> {
        let path = format!("tables[{i}]");
        let mut rows = vec![("[[tables]]".to_string(), self.place(&path))];
        rows.extend(TABLE_KEYS.iter().filter_map(|key| {
            let value = entry.get(key)?;
            Some((
                format!("{key} = {value}"),
                self.place(&format!("{path}.{key}")),
            ))
        }));
        rows
    }
}

/// A value as TOML, a URL with its password masked.
fn shown(path: &str, value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if path.ends_with(".url") => {
            toml::Value::String(crate::redact::url(s)).to_string()
        }
        other => other.to_string(),
    }
}

/// `row  # origin` lines, the comments in one column.
fn aligned(out: &mut String, rows: Vec<(String, String)>) {
    let width = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(0).min(56);
    for (row, origin) in rows {
        let _ = writeln!(out, "{row:width$}  # {origin}");
    }
}

/// What libpq's variables and password file add to `url` when Sluice connects.
fn libpq_lines(out: &mut String, url: &str) {
    let get = |name: &str| std::env::var(name).ok();
    let mut from: Vec<String> = crate::tls::postgres::tls_vars(url, &get)
        .into_iter()
        .map(|(name, var)| format!("{name} from {var}"))
        .collect();
    let parsed = crate::tls::postgres::split_with(url, &get)
        .ok()
        .and_then(|(rest, _)| rest.parse::<tokio_postgres::Config>().ok());
    if let Some(mut parsed) = parsed {
        let outcome = crate::libpq::apply(&mut parsed, &get);
        from.extend(
            outcome
                .applied
                .iter()
                .map(|a| format!("{} from {}", a.setting, a.from)),
        );
        if let Some(refused) = outcome.warning {
            let _ = writeln!(out, "# {refused}: not used");
        }
    }
    if !from.is_empty() {
        let _ = writeln!(out, "# libpq's environment adds: {}", from.join(", "));
    }
}
