//! Semantic checks that serde cannot express, and one-line errors that name the file and line.

use std::path::{Path, PathBuf};

use super::{Config, SourceMode};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (pass --config PATH or set SLUICE_CONFIG)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, one `file:line: message` line each.
    #[error("{}", problems.iter().map(|p| format!("{}:{}: {}", path.display(), p.line, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Located>,
    },
}

/// A problem and the line of the config file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    /// Problems given as (a text of the file that locates each, message), placed on the first
    /// line that mentions that text.
    pub fn at(path: &Path, found: impl IntoIterator<Item = (String, String)>) -> ConfigError {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let problems = found
            .into_iter()
            .map(|(needle, message)| Located {
                line: line_mentioning(&text, &needle),
                message,
            })
            .collect();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    }
}

/// Turns a toml/serde error into `file:line: message`.
pub(super) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| line_of(text, span.start)).unwrap_or(1);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: vec![Located {
            line,
            message: e.message().trim().replace('\n', " "),
        }],
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
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::at(path, problems))
    }

    /// Every problem as (text to locate it by, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.source_problems(&mut out);
        self.tls_problems(&mut out);
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
        if self.history.enabled && (self.history.max_len == 0 || self.history.ttl.is_zero()) {
            out.push((
                "[history]".into(),
                "history.max_len and history.ttl must be above 0 (set history.enabled = false to keep no history)".into(),
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
            crate::tls::check_files(&r.tls_settings())
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
}

/// `roles` and `public.roles` name the same table.
pub fn qualify(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    }
}
