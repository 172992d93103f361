//! libpq's conventions, so a deployment that works for `psql` works for Sluice: what
//! `postgres.url` leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
//! `PGDATABASE`, then the password from the password file ([`pgpass`]); `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` fill the TLS settings (see
//! [`crate::tls::postgres::split`]). As in libpq, the URL wins over the environment, and the
//! environment over the password file.
//!
//! Without any URL ([`url_from_env`]), the variables make one, with Sluice's defaults for
//! what they leave out.

pub mod pgpass;

use tokio_postgres::config::Host;

/// Where each part of a URL made from the environment comes from: (variable, keyword, default).
const PARTS: [(&str, &str, &str); 4] = [
    ("PGHOST", "host", "127.0.0.1"),
    ("PGPORT", "port", "5432"),
    ("PGUSER", "user", "sluice"),
    ("PGDATABASE", "dbname", "app"),
];

/// One setting the environment gave a connection, and where from (`PGUSER`,
/// `/root/.pgpass:3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub setting: &'static str,
    pub from: String,
}

/// What [`apply`] did: the settings it filled, and why a password file was not used.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Vec<Applied>,
    pub warning: Option<pgpass::Refused>,
}

fn var(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).filter(|v| !v.is_empty())
}

/// A key=value connection string from `PGHOST`, `PGPORT`, `PGUSER` and `PGDATABASE`, with
/// the variables used; `None` when none is set.
pub fn url_from_env(get: &dyn Fn(&str) -> Option<String>) -> Option<(String, Vec<&'static str>)> {
    let used: Vec<&str> = PARTS
        .iter()
        .filter(|(name, _, _)| var(get, name).is_some())
        .map(|(name, _, _)| *name)
        .collect();
    if used.is_empty() {
        return None;
    }
    let url = PARTS
        .iter()
        .map(|(name, key, default)| {
            let value = var(get, name).unwrap_or_else(|| default.to_string());
            format!("{key}={}", quote(&value))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some((url, used))
}

/// A value for libpq's key=value form: quoted when it must be.
fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// Fills what `config` lacks from libpq's variables and the password file.
pub fn apply(config: &mut tokio_postgres::Config, get: &dyn Fn(&str) -> Option<String>) -> Outcome {
    let mut out = Outcome::default();
    connection(config, get, &mut out.applied);
    if config.get_user().is_none() {
        // as tokio-postgres would, so both connections (and the password file) agree
        let user = system_user();
        if !user.is_empty() {
            config.user(user);
        }
    }
    if config.get_password().is_none() {
        out.warning = password(config, get, &mut out.applied).err();
    }
    out
}

fn note(applied: &mut Vec<Applied>, setting: &'static str, from: &str) {
    applied.push(Applied {
        setting,
        from: from.to_string(),
    });
}

/// Host, port, user and database from `PGHOST`, `PGPORT` (each may list several, comma
/// separated), `PGUSER` and `PGDATABASE`.
fn connection(
    config: &mut tokio_postgres::Config,
    get: &dyn Fn(&str) -> Option<String>,
    applied: &mut Vec<Applied>,
) {
    let list = |name| {
        var(get, name).map(|v| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
    };
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = list("PGHOST") {
            hosts.into_iter().for_each(|h| {
                config.host(h);
            });
            note(applied, "host", "PGHOST");
        }
    }
    if config.get_ports().is_empty() {
        let ports: Vec<u16> = list("PGPORT")
            .into_iter()
            .flatten()
            .filter_map(|p| p.parse().ok())
            .collect();
        if !ports.is_empty() {
            ports.into_iter().for_each(|p| {
                config.port(p);
            });
            note(applied, "port", "PGPORT");
        }
    }
    if let Some(user) = var(get, "PGUSER").filter(|_| config.get_user().is_none()) {
        config.user(user);
        note(applied, "user", "PGUSER");
    }
    if let Some(db) = var(get, "PGDATABASE").filter(|_| config.get_dbname().is_none()) {
        config.dbname(db);
        note(applied, "dbname", "PGDATABASE");
    }
}

/// `PGPASSWORD`, else the password file's first matching line.
fn password(
    config: &mut tokio_postgres::Config,
    get: &dyn Fn(&str) -> Option<String>,
    applied: &mut Vec<Applied>,
) -> Result<(), pgpass::Refused> {
    if let Some(password) = var(get, "PGPASSWORD") {
        config.password(password);
        note(applied, "password", "PGPASSWORD");
        return Ok(());
    }
    let Some(file) = pgpass::path(get) else {
        return Ok(());
    };
    if let Some((password, line)) = pgpass::find(&file, &want(config))? {
        config.password(password);
        note(applied, "password", &format!("{}:{line}", file.display()));
    }
    Ok(())
}

/// libpq's variables for the TLS parameters of `postgres.url`.
const TLS_VARS: [(&str, &str); 4] = [
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
];

/// The TLS parameters a URL's `params` lack that libpq's variables give: (parameter,
/// variable, value).
pub fn tls_from_env(
    params: &[(String, String)],
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, &'static str, String)> {
    TLS_VARS
        .into_iter()
        .filter(|(name, _)| !params.iter().any(|(n, _)| n == name))
        .filter_map(|(name, variable)| Some((name, variable, var(get, variable)?)))
        .collect()
}

/// Logs a warning the first time it is seen: a daemon reconnects often.
pub fn warn_once(message: String) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&message) {
        tracing::warn!("{message}; not using it");
        seen.push(message);
    }
}

/// What the password file is matched against, as libpq does: the first host (`localhost`
/// for none, or for a default socket directory), its port, the database (the user name when
/// none is given) and the user (the system user when none is given, as tokio-postgres does).
fn want(config: &tokio_postgres::Config) -> pgpass::Want {
    let default_socket = |p: &std::path::Path| {
        p == std::path::Path::new("/var/run/postgresql") || p == std::path::Path::new("/tmp")
    };
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) => h.clone(),
        (Some(Host::Unix(p)), _) if !default_socket(p) => p.display().to_string(),
        (None, Some(addr)) => addr.to_string(),
        _ => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().map_or_else(system_user, String::from);
    let dbname = config
        .get_dbname()
        .map_or_else(|| user.clone(), String::from);
    pgpass::Want {
        host,
        port,
        dbname,
        user,
    }
}

/// The system user's name, as tokio-postgres takes it when no user is given.
fn system_user() -> String {
    whoami::username().unwrap_or_default()
}

#[cfg(test)]
mod tests;
