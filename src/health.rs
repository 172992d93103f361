//! What the daemon knows about itself, shared by the loop that does the work and the HTTP
//! endpoints that report it (`/healthz`, `/readyz`, `/status`).
//!
//! `sluice run` makes one [`Health`] and hands an `Arc` of it to each part that learns
//! something (the sources, the pipeline, the monitor) and to the endpoints that report it; a
//! test makes its own. Writes are plain atomics or a short mutex, never on a per-event path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::telemetry as m;

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Connecting, or reconnecting after PostgreSQL went away.
    Starting,
    /// Another daemon holds the slot (logical) or the reader lock (trigger); waiting to take over.
    Standby,
    /// Connected and following changes.
    Streaming,
    /// The replication slot is missing or invalidated: the operator must act.
    SlotLost,
    /// SIGTERM/SIGINT: finishing what is in flight.
    ShuttingDown,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Standby,
            2 => Phase::Streaming,
            3 => Phase::SlotLost,
            4 => Phase::ShuttingDown,
            _ => Phase::Starting,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Phase::Starting => 0,
            Phase::Standby => 1,
            Phase::Streaming => 2,
            Phase::SlotLost => 3,
            Phase::ShuttingDown => 4,
        }
    }
}

/// Facts for `/status` that change less often than every event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// The source's position: an LSN (logical) or a snapshot summary (trigger).
    pub position: Option<String>,
    /// logical: bytes of WAL not yet confirmed.
    pub lag_bytes: Option<u64>,
    /// logical: bytes of WAL the slot keeps.
    pub retained_wal_bytes: Option<u64>,
    /// trigger: change_log rows not yet published.
    pub pending: Option<u64>,
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub last_error_at: Option<String>,
}

/// A server the daemon needs, and why it is not usable when it is not.
#[derive(Debug, Default)]
struct Server {
    up: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Server {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// "Redis is unreachable", with the reason when one is known.
    fn down_text(&self, name: &str) -> String {
        match self.why.lock().expect("health server lock").as_deref() {
            Some(why) => format!("{name} is unavailable: {why}"),
            None => format!("{name} is unreachable"),
        }
    }
}

/// The daemon's state.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    phase: AtomicU8,
    postgres: Server,
    redis: Server,
    /// Retained WAL is past `max_retained_wal`.
    wal_over: AtomicBool,
    /// Why PostgreSQL holds the failover slot's decoding back (`synchronized_standby_slots`).
    stall: Mutex<Option<String>>,
    /// Milliseconds since `started` when the work loop last turned.
    turned_ms: AtomicU64,
    published: AtomicU64,
    dead_letters: AtomicU64,
    /// The last error is stored in `sluice.checkpoint` (or there is none).
    error_saved: AtomicBool,
    facts: Mutex<Facts>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting.as_u8()),
            postgres: Server::default(),
            redis: Server::default(),
            wal_over: AtomicBool::new(false),
            stall: Mutex::new(None),
            turned_ms: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            error_saved: AtomicBool::new(true),
            facts: Mutex::new(Facts::default()),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Moves to `phase`; shutting down is final. Logs the change once.
    pub fn set_phase(&self, phase: Phase) {
        let old = self.phase();
        if old == phase || old == Phase::ShuttingDown {
            return;
        }
        self.phase.store(phase.as_u8(), Ordering::Relaxed);
        metrics::gauge!(m::ACTIVE).set(f64::from(u8::from(phase == Phase::Streaming)));
    }

    /// Records whether a server is reachable (`component`: `postgres` or `redis`).
    pub fn set_up(&self, component: &'static str, up: bool) {
        let server = self.server(component);
        server.up.store(up, Ordering::Relaxed);
        if up {
            *server.why.lock().expect("health server lock") = None;
        }
        metrics::gauge!(m::UP, "component" => component).set(f64::from(u8::from(up)));
    }

    /// Records that a server is not usable, and why (one line, no secret), for `/readyz`.
    pub fn set_down(&self, component: &'static str, why: impl Into<String>) {
        *self
            .server(component)
            .why
            .lock()
            .expect("health server lock") = Some(why.into());
        self.set_up(component, false);
    }

    fn server(&self, component: &str) -> &Server {
        if component == "redis" {
            &self.redis
        } else {
            &self.postgres
        }
    }

    pub fn set_wal_over(&self, over: bool) {
        self.wal_over.store(over, Ordering::Relaxed);
    }

    /// Sets (or clears) the reason PostgreSQL holds logical decoding back; `true` if it changed.
    pub fn set_stall(&self, why: Option<String>) -> bool {
        let mut stall = self.stall.lock().expect("health stall lock");
        let changed = *stall != why;
        *stall = why;
        changed
    }

    /// The work loop turned (read, waited, published): `/healthz` stays 200 while it does.
    pub fn turned(&self) {
        self.turned_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the loop last turned.
    pub fn since_turn(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.turned_ms.load(Ordering::Relaxed)))
    }

    pub fn add_published(&self, n: u64, dead: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        self.dead_letters.fetch_add(dead, Ordering::Relaxed);
    }

    /// Changes the facts under the lock.
    pub fn update(&self, f: impl FnOnce(&mut Facts)) {
        f(&mut self.facts.lock().expect("health facts lock"));
    }

    /// Records a failure the daemon is riding out (or stopping on), for `/status` and, once
    /// PostgreSQL is reachable, `sluice.checkpoint.last_error`.
    pub fn record_error(&self, text: String) {
        let at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        self.update(|f| {
            f.last_error = Some(text);
            f.last_error_at = Some(at);
        });
        self.error_saved.store(false, Ordering::Relaxed);
    }

    /// The last error and its time, if not stored yet.
    pub fn unsaved_error(&self) -> Option<(String, String)> {
        if self.error_saved.load(Ordering::Relaxed) {
            return None;
        }
        let f = self.facts.lock().expect("health facts lock");
        Some((f.last_error.clone()?, f.last_error_at.clone()?))
    }

    pub fn mark_error_saved(&self) {
        self.error_saved.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready to do its job; otherwise the one-line reason `/readyz` gives.
    pub fn readiness(&self) -> Result<(), String> {
        match self.phase() {
            Phase::Starting
                if self
                    .postgres
                    .why
                    .lock()
                    .expect("health server lock")
                    .is_some() =>
            {
                return Err(format!(
                    "starting: {}",
                    self.postgres.down_text("PostgreSQL")
                ))
            }
            Phase::Starting => return Err("starting: not yet connected to PostgreSQL".into()),
            Phase::Standby => {
                return Err("standby: another sluice is active; waiting to take over".into())
            }
            Phase::SlotLost => {
                return Err("slot lost: the replication slot is missing or invalidated".into())
            }
            Phase::ShuttingDown => return Err("shutting down".into()),
            Phase::Streaming => {}
        }
        if !self.postgres.is_up() {
            return Err(self.postgres.down_text("PostgreSQL"));
        }
        if !self.redis.is_up() {
            return Err(self.redis.down_text("Redis"));
        }
        if self.wal_over.load(Ordering::Relaxed) {
            return Err("retained WAL is past source.max_retained_wal".into());
        }
        if let Some(why) = self.stall.lock().expect("health stall lock").clone() {
            return Err(why);
        }
        Ok(())
    }

    /// `/readyz?standby=ok`: as [`Health::readiness`], except that a standby whose servers are
    /// both reachable is ready too, as a standby (the `Ok` text says which). For a Deployment
    /// of several replicas, one active and the others waiting: a standby that could take over
    /// is ready, while the active one is judged exactly as by `/readyz`.
    pub fn readiness_as_standby(&self) -> Result<&'static str, String> {
        if self.phase() != Phase::Standby {
            return self.readiness().map(|()| "ready");
        }
        if !self.postgres.is_up() {
            return Err(self.postgres.down_text("PostgreSQL"));
        }
        if !self.redis.is_up() {
            return Err(self.redis.down_text("Redis"));
        }
        Ok("standby: another sluice is active; ready to take over")
    }

    /// What `/status` shows.
    pub fn status(&self, mode: &'static str) -> Status {
        Status {
            mode,
            phase: self.phase(),
            ready: self
                .readiness()
                .err()
                .unwrap_or_else(|| "ready".to_string()),
            postgres_up: self.postgres.is_up(),
            redis_up: self.redis.is_up(),
            published: self.published.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
            facts: self.facts.lock().expect("health facts lock").clone(),
        }
    }
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub mode: &'static str,
    pub phase: Phase,
    /// `ready`, or why not.
    pub ready: String,
    pub postgres_up: bool,
    pub redis_up: bool,
    /// Events Redis acknowledged since start.
    pub published: u64,
    /// Events dead-lettered since start.
    pub dead_letters: u64,
    pub uptime_seconds: u64,
    pub version: &'static str,
    #[serde(flatten)]
    pub facts: Facts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_streaming_with_both_servers_and_wal_in_bounds() {
        let h = Health::new();
        assert!(h.readiness().unwrap_err().starts_with("starting"));
        h.set_down("postgres", "connection refused");
        assert_eq!(
            h.readiness().unwrap_err(),
            "starting: PostgreSQL is unavailable: connection refused"
        );
        h.set_phase(Phase::Streaming);
        assert_eq!(
            h.readiness().unwrap_err(),
            "PostgreSQL is unavailable: connection refused"
        );
        h.set_up("postgres", true);
        assert_eq!(h.readiness().unwrap_err(), "Redis is unreachable");
        h.set_up("redis", true);
        assert_eq!(h.readiness(), Ok(()));
        h.set_down(
            "redis",
            "it is a replica (read-only); waiting for a primary",
        );
        assert_eq!(
            h.readiness().unwrap_err(),
            "Redis is unavailable: it is a replica (read-only); waiting for a primary"
        );
        h.set_up("redis", true);
        h.set_wal_over(true);
        assert!(h.readiness().unwrap_err().contains("max_retained_wal"));
        h.set_wal_over(false);
        h.set_phase(Phase::Standby);
        assert!(h.readiness().unwrap_err().starts_with("standby"));
        h.set_phase(Phase::ShuttingDown);
        h.set_phase(Phase::Streaming);
        assert_eq!(h.phase(), Phase::ShuttingDown, "shutting down is final");
    }

    #[test]
    fn as_a_standby_ready_while_both_servers_answer_and_the_active_is_judged_as_ever() {
        let h = Health::new();
        assert!(h
            .readiness_as_standby()
            .unwrap_err()
            .starts_with("starting"));
        h.set_phase(Phase::Standby);
        h.set_up("postgres", true);
        assert_eq!(
            h.readiness_as_standby().unwrap_err(),
            "Redis is unreachable"
        );
        h.set_up("redis", true);
        assert!(h.readiness().unwrap_err().starts_with("standby"));
        assert!(h
            .readiness_as_standby()
            .unwrap()
            .contains("ready to take over"));
        h.set_down("postgres", "connection refused");
        assert_eq!(
            h.readiness_as_standby().unwrap_err(),
            "PostgreSQL is unavailable: connection refused"
        );
        h.set_up("postgres", true);
        h.set_phase(Phase::Streaming);
        assert_eq!(h.readiness_as_standby(), Ok("ready"));
        h.set_wal_over(true);
        assert_eq!(
            h.readiness_as_standby().unwrap_err(),
            h.readiness().unwrap_err(),
            "the active daemon is judged as by /readyz"
        );
    }

    #[test]
    fn an_error_is_unsaved_until_marked() {
        let h = Health::new();
        assert_eq!(h.unsaved_error(), None);
        h.record_error("Redis unavailable: connection refused".into());
        let (text, at) = h.unsaved_error().unwrap();
        assert!(
            text.starts_with("Redis") && at.ends_with('Z'),
            "{text} {at}"
        );
        h.mark_error_saved();
        assert_eq!(h.unsaved_error(), None);
        assert_eq!(
            h.status("trigger").facts.last_error.as_deref(),
            Some("Redis unavailable: connection refused")
        );
    }

    #[test]
    fn status_serialises_flat() {
        let h = Health::new();
        h.update(|f| f.position = Some("0/16B3748".into()));
        let v = serde_json::to_value(h.status("logical")).unwrap();
        assert_eq!(
            (
                v["mode"].as_str(),
                v["phase"].as_str(),
                v["position"].as_str()
            ),
            (Some("logical"), Some("starting"), Some("0/16B3748"))
        );
        assert!(v["ready"].as_str().unwrap().starts_with("starting"));
    }
}
