//! The layers put together: the file, then the environment over it, then the type check,
//! then serde (whose wording an operator no longer sees), then the semantic checks.

use std::path::Path;

use super::origin::Origins;
use super::validate::parse_error;
use super::{check, env, Config, ConfigError, Env, Problem};

impl Config {
    /// Reads and validates a config file, with this process's environment over it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let config = Config::from_sources(&text, path, &Env::from_process())?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML text alone (no environment, no semantic checks); errors carry the file
    /// name and line.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::from_sources(text, path, &Env::default())
    }

    /// Parses TOML text with `env` over it and type-checks the result; [`Config::validate`]
    /// does the semantic checks.
    pub fn from_sources(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        let mut origins = Origins::of_text(text);
        let mut problems = env::apply(&mut root, env, &mut origins);
        problems.extend(postgres_url(&mut root, env, &mut origins));
        problems.extend(check::check(&root, &origins));
        if !problems.is_empty() {
            return Err(ConfigError::invalid(path, &origins, problems));
        }
        let mut config: Config = toml::Value::Table(root).try_into().map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            ConfigError::invalid(path, &origins, vec![Problem::key("", message)])
        })?;
        config.origins = origins;
        Ok(config)
    }
}

/// Without `postgres.url` in the file or a URL variable, libpq's variables (`PGHOST`,
/// `PGPORT`, `PGUSER`, `PGDATABASE`) make the URL; without those either, `[postgres]` must be
/// there (its default URL applies), so a forgotten database is an error rather than a guess.
fn postgres_url(root: &mut toml::Table, env: &Env, origins: &mut Origins) -> Option<Problem> {
    let section = root.get("postgres");
    if section.and_then(|p| p.get("url")).is_some() {
        return None;
    }
    let Some((url, vars)) = crate::libpq::url_from_env(&env.lookup()) else {
        return section.is_none().then(|| Problem::key(
            "postgres",
            "no [postgres] section, and the environment names no database: add [postgres] with url = \"postgres://user@host:5432/db\", or set DATABASE_URL (or SLUICE_POSTGRES_URL, or libpq's PGHOST/PGUSER/PGDATABASE)".into(),
        ));
    };
    let table = root
        .entry("postgres")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = table {
        t.insert("url".into(), toml::Value::String(url));
        origins.set_env("postgres.url", &vars.join(", "));
    }
    None
}
