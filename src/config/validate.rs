//! Semantic checks that serde cannot express, and one-line errors that name the file and line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{AppRule, Config, SourceMode};
use crate::route::{is_safe_name, Template};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (pass --config PATH or set SLUICE_CONFIG)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Turns a toml/serde error into `file:line: message`.
pub(super) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| line_of(text, span.start)).unwrap_or(1);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message: e.message().trim().replace('\n', " "),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The first line that mentions `needle`, for errors found after parsing.
fn line_mentioning(text: &str, needle: &str) -> usize {
    text.find(needle).map(|at| line_of(text, at)).unwrap_or(1)
}

impl Config {
    /// Checks everything that can be checked without a server.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        self.problems()
            .into_iter()
            .next()
            .map_or(Ok(()), |(needle, message)| {
                Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: line_mentioning(&text, &needle),
                    message,
                })
            })
    }

    /// Every problem as (text to locate it by, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.source_problems(&mut out);
        self.tls_problems(&mut out);
        self.app_problems(&mut out);
        for (i, t) in self.tables.iter().enumerate() {
            self.table_problems(i, t, &mut out);
        }
        out
    }

    fn source_problems(&self, out: &mut Vec<(String, String)>) {
        if self.source.mode == SourceMode::Logical {
            for (key, name) in [
                ("slot", &self.source.slot),
                ("publication", &self.source.publication),
            ] {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    out.push((key.into(), format!("source.{key} {name:?}: use lower-case letters, digits and '_' (a replication slot name)")));
                }
            }
        }
        if self.source.keep_history && self.source.mode == SourceMode::Trigger {
            out.push((
                "keep_history".into(),
                "source.keep_history is for logical mode; trigger mode always keeps change_log rows for source.retention".into(),
            ));
        }
        if self.source.batch_size == 0 {
            out.push((
                "batch_size".into(),
                "source.batch_size must be at least 1".into(),
            ));
        }
        if self.delivery.max_attempts == 0 {
            out.push((
                "max_attempts".into(),
                "delivery.max_attempts must be at least 1".into(),
            ));
        }
        if self.tables.is_empty() {
            out.push((
                "[postgres]".into(),
                "no [[tables]] configured: name at least one table to capture".into(),
            ));
        }
    }

    /// TLS settings of both servers: a bad `sslmode`, a file that cannot be read.
    fn tls_problems(&self, out: &mut Vec<(String, String)>) {
        let mut found = Vec::new();
        match crate::tls::postgres::split(&self.postgres.url) {
            Err(e) => found.push(e.to_string()),
            Ok((_, tls)) => found.extend(
                crate::tls::check_files(&tls.settings())
                    .err()
                    .map(|e| e.to_string()),
            ),
        }
        let r = &self.redis;
        match (&r.cert_file, &r.key_file) {
            (Some(_), None) => found.push(
                "redis.cert_file is set without redis.key_file: give both, or neither".into(),
            ),
            (None, Some(_)) => found.push(
                "redis.key_file is set without redis.cert_file: give both, or neither".into(),
            ),
            _ => {}
        }
        if (r.ca_file.is_some() || r.cert_file.is_some()) && !r.url.starts_with("rediss://") {
            found.push("redis.ca_file/cert_file are set but redis.url is not rediss://: use rediss:// for TLS, or remove them".into());
        }
        found.extend(
            crate::tls::check_files(&crate::publish::tls_settings(r))
                .err()
                .map(|e| e.to_string()),
        );
        // Each message names its setting first: the line is the first that mentions it.
        let keys = [
            "sslrootcert",
            "sslcert",
            "sslkey",
            "sslmode",
            "ca_file",
            "cert_file",
            "key_file",
        ];
        let needle = |m: &str| {
            keys.into_iter()
                .filter_map(|k| m.find(k).map(|at| (at, k)))
                .min()
                .map_or("url", |(_, k)| k)
        };
        out.extend(found.into_iter().map(|m| (needle(&m).to_string(), m)));
    }

    fn app_problems(&self, out: &mut Vec<(String, String)>) {
        for (name, app) in &self.apps {
            if !is_safe_name(name) {
                out.push((
                    name.clone(),
                    format!(
                        "apps.{name}: an app name may hold only letters, digits, '.', '_' and '-'"
                    ),
                ));
            }
            if app.prefixes.is_empty() || app.prefixes.iter().any(|p| p.is_empty()) {
                out.push((
                    name.clone(),
                    format!("apps.{name}.prefixes: give at least one non-empty prefix"),
                ));
            }
        }
    }

    fn table_problems(&self, i: usize, t: &super::TableConfig, out: &mut Vec<(String, String)>) {
        let at = |key: &str| format!("tables[{i}] ({}) {key}", t.table);
        let quoted = |s: &str| format!("\"{s}\"");
        if self.tables[..i]
            .iter()
            .any(|o| qualify(&o.table) == qualify(&t.table))
        {
            out.push((
                quoted(&t.table),
                format!("{}: the table is configured twice", at("table")),
            ));
        }
        if !is_safe_name(&t.data_type) {
            out.push((
                quoted(&t.data_type),
                format!(
                    "{}: type may hold only letters, digits, '.', '_' and '-'",
                    at("type")
                ),
            ));
        }
        if let AppRule::Fixed(apps) = &t.app {
            let unknown: Vec<_> = apps
                .iter()
                .filter(|a| !self.apps.contains_key(*a))
                .collect();
            if let Some(a) = unknown.first() {
                out.push((
                    quoted(a),
                    format!(
                        "{}: unknown app {a:?}; declare it under [apps]",
                        at("app.fixed")
                    ),
                ));
            }
        } else if self.apps.is_empty() {
            out.push((
                quoted(&t.table),
                format!("{}: routes by prefix but [apps] is empty", at("app")),
            ));
        }
        let mut seen = HashSet::new();
        for (key, tpl) in std::iter::once(("channel", &t.channel))
            .chain(t.invalidate.iter().map(|k| ("invalidate", k)))
        {
            if !seen.insert(tpl) {
                continue;
            }
            if let Err(e) = Template::parse(tpl) {
                out.push((tpl.clone(), format!("{}: {e}", at(key))));
            }
        }
        if !t.channel.contains("{tenant}") {
            out.push((
                t.channel.clone(),
                format!(
                    "{}: the channel must contain {{tenant}} so tenants stay apart",
                    at("channel")
                ),
            ));
        }
    }
}

/// `roles` and `public.roles` name the same table.
pub fn qualify(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    }
}
