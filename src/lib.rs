//! Sluice: change-data-capture from PostgreSQL to per-application Redis channels.
//!
//! # Data flow
//!
//! ```text
//!  PostgreSQL                                                                Redis
//!  ──────────                                                                ─────
//!  replication slot (pgoutput) ──┐
//!                                ├─▶ source ─▶ route ─▶ publish ─▶ PUBLISH <app>:<tenant>:<type>
//!  capture trigger ─▶ change_log ┘     ▲          │         │
//!                                      │          ▼         ▼
//!          checkpoint / slot position ◀┴── dead_letter ◀────┘  (acknowledged or parked)
//! ```
//!
//! 1. **source** reads committed changes in batches and turns each into an [`event::Change`]:
//!    [`source::logical`] follows a replication slot ([`source::replication`] is the
//!    connection, [`source::pgoutput`] decodes its messages, [`source::values`] turns column
//!    text into `to_jsonb`'s JSON); [`source::change_log`] reads the rows the
//!    `sluice.capture()` trigger wrote.
//! 2. **route** ([`route`]) finds each change's tenant and application(s), renders the channel,
//!    and encodes one JSON event per app; what cannot be routed becomes a dead letter.
//! 3. **publish** ([`publish`]) sends the batch to Redis as one pipeline; [`deliver`] retries it
//!    while Redis is away and turns rejected events into dead letters.
//! 4. **checkpoint** stores the batch's dead letters ([`dead_letter`]) and then moves the
//!    source's progress past it, only after Redis acknowledged the rest: in trigger mode the
//!    snapshot in `sluice.checkpoint` ([`checkpoint`]), in logical mode the slot's confirmed
//!    position. A crash before that replays the batch: delivery is at least once, never lossy.
//!
//! # Modules
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | the command line and its commands |
//! | [`config`] | the TOML file, typed and validated |
//! | [`source`] | where changes come from |
//! | [`event`] | a change and the event envelope |
//! | [`json`] | reading a few fields of a row's JSON without a tree |
//! | [`route`] | tenant, app, channel, cache keys |
//! | [`publish`] | the Redis client and pipelines |
//! | [`deliver`] | route + publish a batch, retrying while Redis is down |
//! | [`dead_letter`] | the dead-letter table |
//! | [`checkpoint`] | progress in `sluice.checkpoint` |
//! | [`run`] | the daemon loop |
//! | [`recover`] | dead letters, replay and backfill: the operator's recovery commands |
//! | [`setup`], [`check`], [`tail`] | the other commands |
//! | [`status`], [`teardown`] | where the source stands (from PostgreSQL); removing what setup made |
//! | [`pg`] | PostgreSQL connections |
//! | [`redact`] | passwords masked in URLs and messages, before anything is printed or stored |
//! | [`error`] | sorting failures into transient and fatal |
//! | [`health`] | the daemon's state, for the probes and `/status` |
//! | [`http`] | `/metrics`, `/healthz`, `/readyz`, `/status` |
//! | [`monitor`] | polls lag, retained WAL, pending rows and server reachability; the WAL guard |
//! | [`exporter`], [`latency`] | the Prometheus recorder and its series; end-to-end latency |
//! | [`telemetry`] | logging and metric names |
//! | [`testkit`] | throwaway servers for tests, the demo and benchmarks |
//! | [`tls`] | TLS to PostgreSQL (libpq's `sslmode`) and Redis (`rediss://`), on rustls |

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
pub mod http;
pub mod json;
pub mod latency;
pub mod monitor;
pub mod pg;
pub mod publish;
pub mod recover;
pub mod redact;
pub mod route;
pub mod run;
pub mod setup;
pub mod source;
pub mod status;
pub mod tail;
pub mod telemetry;
pub mod teardown;
pub mod testkit;
pub mod tls;
