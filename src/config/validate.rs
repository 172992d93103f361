//! Semantic checks that serde cannot express, and one-line errors placed where the value came
//! from: `file:line: message` (the key's own line), or `environment VAR: message`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::origin::{Origin, Origins};
use super::{Config, SourceMode};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (pass --config PATH or set SLUICE_CONFIG)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, one line each.
    #[error("{}", problems.iter().map(|p| p.display(path).to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Located>,
    },
}

/// One thing wrong with the config: about a key (its dotted path, `delivery.max_attempts`,
/// `tables[2].app`), or about a variable that names no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    /// The variable, for a problem of the environment itself.
    pub var: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn key(path: &str, message: String) -> Problem {
        Problem {
            path: path.to_string(),
            var: None,
            message,
        }
    }

    pub fn env(var: &str, message: String) -> Problem {
        Problem {
            path: String::new(),
            var: Some(var.to_string()),
            message,
        }
    }
}

/// A problem and where it is: a line of the file, or a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub at: Origin,
    pub message: String,
}

impl Located {
    fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct Line<'a>(&'a Located, &'a Path);
        impl fmt::Display for Line<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let (p, file) = (self.0, self.1.display());
                match &p.at {
                    Origin::File(line) => write!(f, "{file}:{line}: {}", p.message),
                    Origin::Env(var) => write!(f, "environment {var}: {}", p.message),
                    Origin::Default => write!(f, "{file}: {}", p.message),
                }
            }
        }
        Line(self, file)
    }
}

impl ConfigError {
    /// The problems, each placed with `origins`.
    pub fn invalid(path: &Path, origins: &Origins, problems: Vec<Problem>) -> ConfigError {
        let mut problems: Vec<Located> = problems
            .into_iter()
            .map(|p| Located {
                at: match p.var {
                    Some(var) => Origin::Env(var),
                    None => origins.locate(&p.path),
                },
                message: p.message,
            })
            .collect();
        // in the order of the file, the environment's first
        problems.sort_by_key(|p| match p.at {
            Origin::File(line) => line,
            _ => 0,
        });
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    }
}

/// A TOML syntax error as `file:line: message`.
pub(super) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: vec![Located {
            at: Origin::File(line),
            message: e.message().trim().replace('\n', " "),
        }],
    }
}

impl Config {
    /// Checks everything that can be checked without a server.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(self.invalid(path, problems))
    }

    /// The problems, each placed where its value came from.
    pub fn invalid(&self, path: &Path, problems: Vec<Problem>) -> ConfigError {
        ConfigError::invalid(path, &self.origins, problems)
    }

    /// Every problem found.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.source_problems(&mut out);
        self.tls_problems(&mut out);
        out
    }

    fn source_problems(&self, out: &mut Vec<Problem>) {
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
                    out.push(Problem::key(&format!("source.{key}"), format!("source.{key} {name:?}: use lower-case letters, digits and '_' (a replication slot name)")));
                }
            }
        }
        if self.source.keep_history && self.source.mode == SourceMode::Trigger {
            out.push(Problem::key(
                "source.keep_history",
                "source.keep_history is for logical mode; trigger mode always keeps change_log rows for source.retention".into(),
            ));
        }
        if self.source.batch_size == 0 {
            out.push(Problem::key(
                "source.batch_size",
                "source.batch_size must be at least 1".into(),
            ));
        }
        if self.history.enabled && (self.history.max_len == 0 || self.history.ttl.is_zero()) {
            out.push(Problem::key(
                if self.history.max_len == 0 { "history.max_len" } else { "history.ttl" },
                "history.max_len and history.ttl must be above 0 (set history.enabled = false to keep no history)".into(),
            ));
        }
        if self.delivery.max_attempts == 0 {
            out.push(Problem::key(
                "delivery.max_attempts",
                "delivery.max_attempts must be at least 1".into(),
            ));
        }
        if self.tables.is_empty() {
            out.push(Problem::key(
                "tables",
                "no [[tables]] configured: name at least one table to capture".into(),
            ));
        }
    }

    /// TLS settings of both servers: a bad `sslmode`, a file that cannot be read.
    fn tls_problems(&self, out: &mut Vec<Problem>) {
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
        if (r.ca_file.is_some() || r.cert_file.is_some()) && !r.url.starts_with("rediss") {
            found.push("redis.ca_file/cert_file are set but redis.url is not rediss://: use rediss:// for TLS, or remove them".into());
        }
        found.extend(
            crate::tls::check_files(&r.tls_settings())
                .err()
                .map(|e| e.to_string()),
        );
        // Each message names its setting: the problem is that key's.
        let key = |m: &str| {
            [
                "redis.ca_file",
                "redis.cert_file",
                "redis.key_file",
                "redis.url",
            ]
            .into_iter()
            .filter_map(|k| m.find(k).map(|at| (at, k)))
            .min()
            .map_or("postgres.url", |(_, k)| k)
        };
        out.extend(found.into_iter().map(|m| Problem::key(key(&m), m)));
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
