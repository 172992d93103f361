//! The environment layer: `SLUICE_<SECTION>_<KEY>` for every scalar key (see [`super::schema`]),
//! and the URL variables containers set by habit (`DATABASE_URL`, `REDIS_URL`).
//!
//! A variable's value is read as the key's type would be in TOML, without TOML's quotes:
//! `SLUICE_DELIVERY_MAX_ATTEMPTS=8`, `SLUICE_SOURCE_KEEP_HISTORY=true`,
//! `SLUICE_HISTORY_TTL=12h`, `SLUICE_HTTP_LISTEN=0.0.0.0:9750`. An empty variable is ignored,
//! except `SLUICE_HTTP_LISTEN=` (no HTTP, as `listen = ""`). `[apps]` and `[[tables]]` are
//! structured and live in the file only.

use std::collections::BTreeMap;

use super::origin::Origins;
use super::schema::{self, Kind, SECTIONS};
use super::Problem;

/// The variables that concern the config, read once.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// `SLUICE_*`, `DATABASE_URL`, `REDIS_URL` and libpq's `PG*` of this process.
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            let wanted = k.starts_with("SLUICE_")
                || k.starts_with("PG")
                || k == "DATABASE_URL"
                || k == "REDIS_URL";
            wanted.then(|| (k, v.to_string_lossy().into_owned()))
        }))
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// A variable's value, `None` when unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A variable's value, `None` when unset or empty.
    pub fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The lookup libpq's conventions need (see [`crate::libpq`]).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.get(name).map(String::from)
    }
}

/// Writes the environment's values into the parsed file (`root`), noting their origin;
/// returns the variables that name no key.
pub(super) fn apply(root: &mut toml::Table, env: &Env, origins: &mut Origins) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (var, raw) in &env.0 {
        let Some(rest) = var.strip_prefix("SLUICE_") else {
            continue;
        };
        let Some((section, name)) = rest.split_once('_') else {
            continue;
        };
        let (section, name) = (section.to_ascii_lowercase(), name.to_ascii_lowercase());
        if section == "apps" || section == "tables" {
            problems.push(Problem::env(var, format!("[{section}] cannot be set from the environment: it is structured; write it in the config file")));
            continue;
        }
        if !SECTIONS.contains(&section.as_str()) {
            continue; // SLUICE_CONFIG, SLUICE_LOG and others that are not config keys
        }
        match schema::find(&section, &name) {
            Some(key) => set(root, origins, key, var, raw),
            None => problems.push(Problem::env(var, unknown_var(&section))),
        }
    }
    for (legacy, section) in [("DATABASE_URL", "postgres"), ("REDIS_URL", "redis")] {
        let key = schema::find(section, "url").expect("url keys");
        if env.nonempty(&key.var()).is_none() {
            if let Some(url) = env.nonempty(legacy) {
                set(root, origins, key, legacy, url);
            }
        }
    }
    problems
}

fn unknown_var(section: &str) -> String {
    let vars: Vec<String> = schema::section(section).map(|k| k.var()).collect();
    format!(
        "no such key in [{section}]; its variables are {}",
        vars.join(", ")
    )
}

/// Sets one key from a variable's text.
fn set(root: &mut toml::Table, origins: &mut Origins, key: &schema::Key, var: &str, raw: &str) {
    let Some(value) = value(key, raw) else {
        return;
    };
    let table = root
        .entry(key.section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(table) = table {
        table.insert(key.name.to_string(), value);
        origins.set_env(&key.path(), var);
    }
}

/// The variable's text as the key's TOML value; text that is not of the type stays a string,
/// for the type check to report with the variable's name.
fn value(key: &schema::Key, raw: &str) -> Option<toml::Value> {
    if raw.is_empty() {
        return (key.kind == Kind::Str && key.path() == "http.listen")
            .then(|| toml::Value::String(String::new()));
    }
    let text = raw.trim();
    Some(match key.kind {
        Kind::Int(_) | Kind::ByteSize => text
            .parse::<i64>()
            .map_or_else(|_| toml::Value::String(raw.into()), toml::Value::Integer),
        Kind::Bool => match text {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => toml::Value::String(raw.into()),
        },
        _ => toml::Value::String(raw.into()),
    })
}
