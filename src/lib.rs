//! Sluice: change-data-capture from PostgreSQL to per-application Redis channels.
//!
//! # Data flow
//!
//! ```text
//!  PostgreSQL                                                                Redis
//!  ──────────                                                                ─────
//!  replication slot (pgoutput) ──┐                 pipeline (one loop, both modes)
//!                                ├─▶ source ══▶ route ─▶ publish ─▶ PUBLISH <app>:<tenant>:<type>
//!  capture trigger ─▶ change_log ┘     ▲  batches    │         │
//!                                      │             ▼         ▼
//!          slot ack / checkpoint ◀─────┴──── dead_letter ◀─────┘  (acknowledged or parked)
//! ```
//!
//! 1. **source** ([`source`]) only reads: committed changes, in batches of [`event::Change`]s,
//!    handed over a bounded channel: [`source::logical`] follows a replication slot
//!    ([`source::replication`] is the connection, [`source::pgoutput`] decodes its messages,
//!    [`source::values`] turns column text into `to_jsonb`'s JSON) and keeps answering the
//!    walsender while the pipeline waits; [`source::change_log`] reads the rows the
//!    `sluice.capture()` trigger wrote. A value it cannot convert travels as a fault on its
//!    change, never as an error.
//! 2. **route** ([`route`]) finds each change's tenant and application(s), renders the channel
//!    ([`channel`]), and encodes one JSON event per app; what cannot be routed becomes a dead
//!    letter with its reason.
//! 3. **publish** ([`publish`]) sends the batch to Redis as one pipeline of one transaction
//!    per channel, which publishes each new message numbered, keeps it in the channel's
//!    history and skips what Redis already has; [`deliver`] retries it while Redis is away (or
//!    a replica) and turns rejected events into dead letters.
//! 4. **checkpoint**: the [`pipeline`] stores the batch's dead letters ([`dead_letter`]) and
//!    then moves the progress past it, only after Redis acknowledged the rest: in trigger mode
//!    the snapshot in `sluice.checkpoint` ([`checkpoint`]), in logical mode the slot's
//!    confirmed position, handed back to the source. A crash before that replays the batch:
//!    delivery is at least once, never lossy. The pipeline's module doc has the rules.
//!
//! Imports run one way, source → route → publish → checkpoint (`tests/it/architecture.rs`
//! checks that a source names none of the later stages and that no two modules import each
//! other). [`run`] wires a session together; [`error`] sorts what ends one.
//!
//! # Modules
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | the command line and its commands |
//! | [`config`] | the TOML file and `SLUICE_*` variables, typed and validated, with each value's origin |
//! | [`source`] | where changes come from |
//! | [`event`] | a change and the event envelope |
//! | [`json`] | reading a few fields of a row's JSON without a tree |
//! | [`channel`] | channel and cache-key templates; the safe tenant and id rules |
//! | [`route`] | tenant, app, channel, cache keys; [`route::Router::compile`] checks the routes |
//! | [`publish`] | the Redis connection and pipelines; recoverable channels (seq, epoch, history, state, exactly once) |
//! | [`deliver`] | route + publish a batch, retrying while Redis is down |
//! | [`dead_letter`] | the dead-letter table |
//! | [`checkpoint`] | progress in `sluice.checkpoint` |
//! | [`history`] | logical mode's replay history (`source.keep_history`) |
//! | [`pipeline`] | the loop both modes share: deliver, store, confirm |
//! | [`run`] | the daemon: sessions, backoff, what ends them |
//! | [`recover`] | dead letters, replay and backfill: the operator's recovery commands |
//! | [`setup`], [`check`], [`tail`] | the other commands |
//! | [`setup::partitions`] | partitioned tables: setup covers each partition, and those added later |
//! | [`status`], [`teardown`] | where the source stands (from PostgreSQL); removing what setup made |
//! | [`pg`] | PostgreSQL connections, every statement bounded |
//! | [`libpq`] | libpq's conventions: `PGHOST`, `PGPASSWORD`, ... and the password file |
//! | [`redact`] | passwords masked in URLs and messages, before anything is printed or stored |
//! | [`error`] | sorting failures into transient and fatal |
//! | [`health`] | the daemon's state, a handle shared by the loop, the monitor and the probes |
//! | [`http`] | `/metrics`, `/healthz`, `/readyz`, `/status` |
//! | [`monitor`] | polls lag, retained WAL, pending rows and server reachability; the WAL guard |
//! | [`exporter`], [`latency`] | the Prometheus recorder and its series; end-to-end latency |
//! | [`telemetry`] | logging and metric names |
//! | [`shutdown`], [`backoff`] | waits that give way to SIGTERM; exponential backoff with jitter |
//! | `testkit` | throwaway servers (and a blackholing proxy) for tests, the demo and benchmarks; behind the `testkit` feature, which only the tests, benches and examples turn on |
//! | [`tls`] | TLS to PostgreSQL (libpq's `sslmode`) and Redis (`rediss://`), on rustls |

pub mod backoff;
pub mod channel;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod deliver;
pub mod error;
pub mod event;
pub mod exporter;
pub mod health;
pub mod history;
pub mod http;
pub mod json;
pub mod latency;
pub mod libpq;
pub mod monitor;
pub mod pg;
pub mod pipeline;
pub mod publish;
pub mod recover;
pub mod redact;
pub mod route;
pub mod run;
pub mod setup;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod tail;
pub mod teardown;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
