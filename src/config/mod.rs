//! Configuration: the TOML file and the environment, typed and validated once, then compiled
//! into runtime objects (the [`crate::route::Router`], whose `compile` checks the routing
//! sections, and the per-stage settings).
//!
//! Layers, highest first: `SLUICE_<SECTION>_<KEY>` variables ([`env`]; `DATABASE_URL` and
//! `REDIS_URL` too), the file, the defaults ([`defaults`]). Every value is type-checked
//! against [`schema`] before serde sees it ([`check`]), and every problem is placed where its
//! value came from ([`origin`]): the key's own line, or the variable. `sluice config` prints
//! the result ([`show`]).

mod bytesize;
mod check;
mod defaults;
mod duration;
mod env;
mod load;
mod origin;
pub mod schema;
mod show;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use defaults::*;
pub use env::Env;
pub use origin::{Origin, Origins};
pub use show::show;
pub use validate::{qualify, ConfigError, Located, Problem};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Optional when the environment names the database (see [`load`]).
    #[serde(default)]
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub history: HistoryConfig,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Where each value came from; not a key.
    #[serde(skip)]
    pub origins: Origins,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "default_pg_url")]
    pub url: String,
    /// How long to wait for a connection before calling PostgreSQL unreachable.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// The longest a statement of the daemon may take before PostgreSQL counts as unreachable
    /// (the connection is dropped and made again): on the server as `statement_timeout`, and
    /// for a server that stops answering altogether.
    #[serde(default = "default_query_timeout", with = "duration")]
    pub query_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    Logical,
    Trigger,
}

impl SourceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceMode::Logical => "logical",
            SourceMode::Trigger => "trigger",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default = "default_mode")]
    pub mode: SourceMode,
    #[serde(default = "default_name")]
    pub slot: String,
    #[serde(default = "default_name")]
    pub publication: String,
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
    /// logical: also write every published change into `sluice.change_log` (kept for
    /// `retention`), so `replay change-log` works in logical mode too. Trigger mode always does.
    #[serde(default)]
    pub keep_history: bool,
    /// logical: how often to confirm progress to PostgreSQL (keep it under wal_sender_timeout / 2).
    #[serde(default = "default_status_interval", with = "duration")]
    pub status_interval: Duration,
    /// logical: how often to write a `pg_logical_emit_message` heartbeat, so an idle slot keeps
    /// moving and a silent connection is noticed (after twice this interval).
    #[serde(default = "default_status_interval", with = "duration")]
    pub heartbeat_interval: Duration,
    /// logical: readiness fails while the slot retains more WAL than this many bytes (0: never).
    #[serde(
        default = "default_max_retained_wal",
        deserialize_with = "bytesize::deserialize",
        serialize_with = "bytesize::serialize"
    )]
    pub max_retained_wal: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// `cluster`: `url` names seed nodes of a Redis Cluster (as `redis+cluster://` does).
    #[serde(default)]
    pub mode: RedisMode,
    /// A command (or a pipeline) that gets no answer within this time counts as Redis down.
    #[serde(default = "default_command_timeout", with = "duration")]
    pub command_timeout: Duration,
    /// A batch counts as published only once this many replicas of each master that took it
    /// have it too (`WAIT`); 0 does not wait. See README "Redis Cluster".
    #[serde(default)]
    pub wait_replicas: u32,
    /// `rediss://`: the PEM file of CAs the server's certificate must chain to; without it,
    /// the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `rediss://` to a server that asks for a client certificate (`tls-auth-clients`): the
    /// certificate chain and its unencrypted private key, PEM files. Both or neither.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// One Redis server, or a Redis Cluster (sharded pub/sub).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    #[default]
    Standalone,
    Cluster,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` for /metrics, /healthz, /readyz and /status; `""` serves no HTTP.
    #[serde(default = "default_listen")]
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff", with = "duration")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_on_unroutable")]
    pub on_unroutable: OnUnroutable,
    /// After SIGTERM/SIGINT, how long the batch in flight may take to be acknowledged and
    /// confirmed before the daemon exits anyway (nothing unacknowledged is confirmed either way).
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
}

/// `[history]`: each channel's catch-up history in Redis (see `publish::recoverable`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Keep `sluice:history:{<ch>}`; `seq` and `epoch` are given either way.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Entries kept per channel (approximately: Redis trims whole nodes).
    #[serde(default = "default_history_len")]
    pub max_len: usize,
    /// A channel's history expires this long after its last write.
    #[serde(default = "default_history_ttl", with = "duration")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnroutable {
    DeadLetter,
    Drop,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub prefixes: Vec<String>,
}

/// One `[[tables]]` entry: how a table's changes are routed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub table: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub tenant: TenantFrom,
    pub app: AppRule,
    #[serde(default = "default_channel")]
    pub channel: String,
    #[serde(default)]
    pub invalidate: Vec<String>,
    /// Keep `sluice:state:{<ch>}`: the latest message per record id.
    #[serde(default)]
    pub state: bool,
}

/// Where a table's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TenantFrom {
    /// A column of the row: `tenant = "tenant_id"`.
    Column(String),
    /// The table's schema name: `tenant = { schema = "tenant_([a-z0-9][a-z0-9_]*)" }`; the tenant is
    /// what the pattern's capture group matched (see `route::schema`).
    Schema { schema: String },
}

impl TenantFrom {
    /// The column holding the tenant, if it comes from the row.
    pub fn column(&self) -> Option<&str> {
        match self {
            TenantFrom::Column(c) => Some(c),
            TenantFrom::Schema { .. } => None,
        }
    }
}

impl TableConfig {
    /// The columns routing reads: the tenant column (if the tenant comes from the row), then
    /// the app rule's column, each with the key that names it.
    pub fn routing_columns(&self) -> impl Iterator<Item = (&str, &'static str)> {
        let tenant = self.tenant.column().map(|c| (c, "tenant"));
        tenant
            .into_iter()
            .chain(self.app.column().map(|c| (c, "app")))
    }

    /// The table names a pattern: a `*` in its schema part.
    pub fn is_pattern(&self) -> bool {
        qualify(&self.table)
            .split_once('.')
            .is_some_and(|(s, _)| s.contains('*'))
    }
}

/// Where a table's application comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AppRule {
    /// The app whose prefix starts this column's value.
    OperationCode(String),
    /// Every app with a prefix among this array column's entries.
    AnyOf(String),
    /// Always these apps.
    Fixed(Vec<String>),
}

impl RedisConfig {
    /// The TLS files this section names (used for `rediss://`).
    pub fn tls_settings(&self) -> crate::tls::Settings<'_> {
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::Identity {
                cert,
                cert_key: "redis.cert_file",
                key,
                key_key: "redis.key_file",
            }),
            _ => None,
        };
        crate::tls::Settings {
            verify: crate::tls::Verify::Full,
            ca_file: self.ca_file.as_deref(),
            ca_key: "redis.ca_file",
            identity,
        }
    }
}

impl AppRule {
    /// The column this rule reads, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            AppRule::OperationCode(c) | AppRule::AnyOf(c) => Some(c),
            AppRule::Fixed(_) => None,
        }
    }
}

impl Config {
    /// The path the CLI uses when `--config` is not given.
    pub fn default_path() -> PathBuf {
        std::env::var_os("SLUICE_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("sluice.toml"))
    }
}

default_via_serde!(
    PostgresConfig,
    SourceConfig,
    RedisConfig,
    HttpConfig,
    DeliveryConfig,
    HistoryConfig
);

#[cfg(test)]
mod tests;
