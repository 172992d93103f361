//! The defaults of every key (also what `sluice config` prints as "default").

use std::time::Duration;

use super::*;

pub(super) fn default_pg_url() -> String {
    "postgres://sluice@127.0.0.1:5432/app".into()
}
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_history_len() -> usize {
    10_000
}
pub(super) fn default_history_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
pub(super) fn default_query_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_mode() -> SourceMode {
    SourceMode::Logical
}
pub(super) fn default_name() -> String {
    "sluice".into()
}
pub(super) fn default_poll() -> Duration {
    Duration::from_millis(250)
}
pub(super) fn default_batch() -> usize {
    1000
}
pub(super) fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

pub(super) fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
pub(super) fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_max_retained_wal() -> u64 {
    8 << 30
}
pub(super) fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
pub(super) fn default_command_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_listen() -> String {
    "127.0.0.1:9750".into()
}
pub(super) fn default_attempts() -> u32 {
    5
}
pub(super) fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
pub(super) fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_max_payload() -> usize {
    1_048_576
}
pub(super) fn default_on_unroutable() -> OnUnroutable {
    OnUnroutable::DeadLetter
}
pub(super) fn default_channel() -> String {
    "{app}:{tenant}:{type}".into()
}

/// `Default` for a section: what an empty section deserializes to.
macro_rules! default_via_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field has a default")
            }
        }
    )*};
}
pub(super) use default_via_serde;
