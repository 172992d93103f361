//! The Prometheus side of the metrics: the recorder `sluice run` installs once, what each
//! metric means (`# HELP`), and the series registered at startup; [`process`] adds the
//! process's own CPU, memory and file descriptors.
//!
//! Why register series before anything happens: a counter that first appears at 3 loses its
//! first increments to `rate()`, and a dashboard cannot tell "no dead letters" from "not
//! scraped". Every labelled series the daemon can produce is known from the config (tables ×
//! operations, apps × types, the fixed reasons and kinds), so they are all created at zero, and
//! their number is fixed by the config: it never grows with tenants or rows.
//!
//! The recorder only renders; `crate::http` serves `/metrics`. Histograms get explicit buckets
//! (true Prometheus histograms, not summaries), and an upkeep task drains their samples every
//! few seconds so memory stays bounded when nobody scrapes.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{qualify, AppRule, Config};
use crate::dead_letter::Reason;
use crate::event::Operation;
use crate::telemetry as m;

pub mod process;

/// Latency buckets, seconds: a healthy daemon delivers in milliseconds; the tail shows outages.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Batch-size buckets, changes: up to the largest `source.batch_size` anyone should set.
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// The `kind` label of `sluice_publish_errors_total`, as `crate::deliver` sets it.
const PUBLISH_ERROR_KINDS: [&str; 2] = ["unavailable", "rejected"];
/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle), describes every
/// metric, and registers the series `config` can produce.
pub fn install(config: &Config) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = builder().install_recorder().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics stays empty");
                builder().build_recorder().handle()
            });
            describe();
            register(config);
            handle.run_upkeep();
            handle
        })
        .clone()
}

fn builder() -> PrometheusBuilder {
    let with = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .expect("buckets are not empty")
    };
    let b = with(
        PrometheusBuilder::new(),
        m::END_TO_END_LATENCY,
        &LATENCY_BUCKETS,
    );
    with(b, m::BATCH_SIZE, &BATCH_BUCKETS)
}

/// Folds histogram samples into buckets every few seconds, until the task is aborted.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            handle.run_upkeep();
        }
    })
}

fn describe() {
    describe_counter!(
        m::CHANGES_RECEIVED,
        Unit::Count,
        "Changes read from the source, by table and operation."
    );
    describe_counter!(
        m::EVENTS_PUBLISHED,
        Unit::Count,
        "Events Redis acknowledged, by app and type."
    );
    describe_counter!(
        m::PUBLISH_NO_RECEIVERS,
        Unit::Count,
        "Events Redis acknowledged that no subscriber received, by app and type."
    );
    describe_counter!(m::PUBLISH_ERRORS, Unit::Count, "Failed publishes: kind=unavailable (Redis unreachable; the batch is retried) or rejected (Redis answered an error for the event).");
    describe_counter!(
        m::DEAD_LETTERS,
        Unit::Count,
        "Events parked in sluice.dead_letter, by reason."
    );
    describe_histogram!(m::END_TO_END_LATENCY, Unit::Seconds, "From the change's timestamp (commit time in logical mode, write time in trigger mode) to Redis acknowledging it.");
    describe_histogram!(
        m::BATCH_SIZE,
        Unit::Count,
        "Changes per batch read from the source."
    );
    describe_gauge!(
        m::SOURCE_LAG_BYTES,
        Unit::Bytes,
        "Logical mode: WAL written but not yet confirmed by this slot."
    );
    describe_gauge!(
        m::PENDING_CHANGES,
        Unit::Count,
        "Trigger mode: sluice.change_log rows not yet published (counted up to 1,000,000)."
    );
    describe_gauge!(
        m::SLOT_RETAINED_WAL_BYTES,
        Unit::Bytes,
        "Logical mode: WAL the slot keeps on the server (from its restart_lsn)."
    );
    describe_gauge!(m::SLOT_SAFE_WAL_BYTES, Unit::Bytes, "Logical mode: WAL that can still be written before the slot is invalidated by max_slot_wal_keep_size.");
    describe_gauge!(
        m::UP,
        "1 while the server (component=postgres or redis) answers, else 0."
    );
    describe_gauge!(
        m::ACTIVE,
        "1 while this daemon is the active reader, 0 while starting, standby or stopping."
    );
    describe_gauge!(m::READY, "1 while /readyz answers 200, else 0.");
    describe_gauge!(
        m::BUILD_INFO,
        "Always 1; the labels tell the version and the capture mode."
    );
    describe_gauge!(
        m::LAST_CHECKPOINT,
        Unit::Seconds,
        "Unix time progress was last stored (checkpoint row or slot confirmation)."
    );
    describe_counter!(
        m::REDIS_RECONNECTS,
        Unit::Count,
        "Times publishing resumed after Redis had been unreachable."
    );
    describe_counter!(
        m::POSTGRES_RECONNECTS,
        Unit::Count,
        "Times the daemon reconnected after PostgreSQL had been unreachable."
    );
    describe_counter!(
        m::HISTORY_TRIMMED,
        Unit::Count,
        "Entries trimmed from channel histories past history.max_len."
    );
    describe_counter!(
        m::EPOCHS_STARTED,
        Unit::Count,
        "Channels that started a new epoch because Redis had lost their state."
    );
    describe_counter!(
        m::DUPLICATES_SUPPRESSED,
        Unit::Count,
        "Events not published again because Redis already had them (after a crash or a retry)."
    );
}

/// Creates every series `config` can produce, at zero.
fn register(config: &Config) {
    for t in &config.tables {
        let table = qualify(&t.table);
        for op in Operation::ALL {
            metrics::counter!(m::CHANGES_RECEIVED, "table" => table.clone(), "operation" => op.as_str()).increment(0);
        }
        let apps: Vec<&String> = match &t.app {
            AppRule::Fixed(apps) => apps.iter().collect(),
            AppRule::OperationCode(_) | AppRule::AnyOf(_) => config.apps.keys().collect(),
        };
        for app in apps {
            let labels = [("app", app.clone()), ("type", t.data_type.clone())];
            metrics::counter!(m::EVENTS_PUBLISHED, &labels).increment(0);
            metrics::counter!(m::PUBLISH_NO_RECEIVERS, &labels).increment(0);
        }
    }
    for kind in PUBLISH_ERROR_KINDS {
        metrics::counter!(m::PUBLISH_ERRORS, "kind" => kind).increment(0);
    }
    for reason in Reason::ALL {
        metrics::counter!(m::DEAD_LETTERS, "reason" => reason.as_str()).increment(0);
    }
    for component in ["postgres", "redis"] {
        metrics::gauge!(m::UP, "component" => component).set(0.0);
    }
    metrics::gauge!(m::ACTIVE).set(0.0);
    metrics::gauge!(m::READY).set(0.0);
    metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "mode" => config.source.mode.as_str()).set(1.0);
    metrics::counter!(m::REDIS_RECONNECTS).increment(0);
    metrics::counter!(m::POSTGRES_RECONNECTS).increment(0);
    for counter in [
        m::HISTORY_TRIMMED,
        m::EPOCHS_STARTED,
        m::DUPLICATES_SUPPRESSED,
    ] {
        metrics::counter!(counter).increment(0);
    }
    let _ = metrics::histogram!(m::END_TO_END_LATENCY);
    let _ = metrics::histogram!(m::BATCH_SIZE);
}
