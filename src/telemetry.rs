//! Logs (tracing, text or JSON) and the names of every metric, in one place.
//!
//! Labels are bounded: table, operation, app, type and reason come from the config or a fixed
//! set, never from a row (no tenant, no raw value).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub const CHANGES_RECEIVED: &str = "sluice_changes_received_total";
pub const EVENTS_PUBLISHED: &str = "sluice_events_published_total";
pub const PUBLISH_NO_RECEIVERS: &str = "sluice_publish_no_receivers_total";
pub const PUBLISH_ERRORS: &str = "sluice_publish_errors_total";
pub const DEAD_LETTERS: &str = "sluice_dead_letters_total";
pub const END_TO_END_LATENCY: &str = "sluice_end_to_end_latency_seconds";
pub const BATCH_SIZE: &str = "sluice_batch_size";
pub const SOURCE_LAG_BYTES: &str = "sluice_source_lag_bytes";
pub const PENDING_CHANGES: &str = "sluice_pending_changes";
pub const SLOT_RETAINED_WAL_BYTES: &str = "sluice_slot_retained_wal_bytes";
pub const UP: &str = "sluice_up";
pub const ACTIVE: &str = "sluice_active";
// Beyond the contract, for operators (see `crate::exporter` for what each means).
pub const READY: &str = "sluice_ready";
pub const BUILD_INFO: &str = "sluice_build_info";
pub const LAST_CHECKPOINT: &str = "sluice_last_checkpoint_timestamp_seconds";
pub const REDIS_RECONNECTS: &str = "sluice_redis_reconnects_total";
pub const POSTGRES_RECONNECTS: &str = "sluice_postgres_reconnects_total";
pub const SLOT_SAFE_WAL_BYTES: &str = "sluice_slot_safe_wal_size_bytes";
pub const HISTORY_TRIMMED: &str = "sluice_history_trimmed_total";
pub const EPOCHS_STARTED: &str = "sluice_epochs_started_total";
pub const DUPLICATES_SUPPRESSED: &str = "sluice_duplicates_suppressed_total";
// The process, under the names every Prometheus client library gives it (`crate::exporter::process`).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// Progress was just stored (trigger: the checkpoint row; logical: the slot confirmed).
pub fn checkpointed() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(LAST_CHECKPOINT).set(now.as_secs_f64());
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; `level` is a tracing filter such as `info` or `sluice=debug`.
/// Colours only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>): a file, a pipe or `docker logs` gets plain text.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some("".into())));
        assert!(!super::colour(true, Some("1".into())));
        assert!(!super::colour(false, None));
    }
}
