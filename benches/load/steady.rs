//! Section (2): a steady stream of single-row transactions, and the latency from commit to a
//! subscriber receiving the event.
//!
//! The daemon runs and a `PSUBSCRIBE *` subscriber (see `resp`) is attached; a probe row is
//! written until its event arrives, so the daemon is streaming before timing starts. Then a
//! writer paces `STEADY_RATE` autocommit INSERTs a second for `STEADY_SECS`: every
//! millisecond it issues the rows that are due by then (row i is due at i / rate), spread
//! over `WRITERS` tokio-postgres connections, each pipelining its prepared INSERTs, never
//! waiting for one to finish before issuing the next. The subscriber stamps each event on
//! arrival and subtracts its `timestamp`: the commit time in logical mode, the row's write
//! time (clock_timestamp() in the capture trigger) in trigger mode; same machine, same clock.
//! The daemon's CPU over the window is divided by the events received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls, Statement};

use crate::env::{Env, CODES};
use crate::knobs::{Knobs, Mode};
use crate::procs::{terminate, usage, Usage};
use crate::resp::Subscriber;

/// What the steady section measured.
#[derive(Debug, Clone)]
pub struct Steady {
    pub mode: Mode,
    /// Rows committed, and how fast they actually were.
    pub written: u64,
    pub write_rate: f64,
    /// The most INSERTs in flight at once (the writer falling behind shows here).
    pub max_in_flight: usize,
    /// Commit-to-subscriber latencies of the received events, sorted, in µs.
    pub latencies_us: Vec<i64>,
    /// The daemon's CPU over the window, and its peak RSS.
    pub usage: Usage,
}

impl Steady {
    /// The latency at quantile `q` (nearest rank), in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let v = &self.latencies_us;
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    }
}

fn insert_sql() -> String {
    format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) \
         SELECT 's' || g, 'tenant-' || g % 50, ({CODES})[1 + g % 3], (g % 1000) / 100.0, jsonb_build_object('g', g) \
         FROM (SELECT $1::bigint AS g) v"
    )
}

pub fn steady(env: &Env, knobs: &Knobs) -> Steady {
    if env.mode == Mode::Logical {
        env.reset_slot("sluice", true);
    }
    let sub = Subscriber::start(&env.redis_addr());
    let mut child = env.spawn_daemon();
    wait_streaming(env, &sub);
    let before = usage(child.id()).expect("sluice is running");
    let total = (knobs.steady_rate as f64 * knobs.steady_secs).round() as u64;
    let from = env.take_ids(total);
    let url = env.url();
    let (secs, max_in_flight) =
        env.rt
            .block_on(write(&url, from, total, knobs.steady_rate, knobs.writers));
    let received = |sub: &Subscriber| {
        sub.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.record_id.starts_with('s'))
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while received(&sub) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = usage(child.id()).expect("sluice is running");
    terminate(&mut child);
    let arrivals: Vec<(String, i64)> = sub
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.record_id.starts_with('s'))
        .map(|s| (s.record_id.clone(), s.latency_us))
        .collect();
    write_arrivals(knobs, env.mode, &arrivals);
    let mut latencies_us: Vec<i64> = arrivals.iter().map(|(_, us)| *us).collect();
    latencies_us.sort_unstable();
    assert_eq!(
        latencies_us.len() as u64,
        total,
        "every steady change arrives once:\n{}",
        env.daemon_log()
    );
    let usage = Usage {
        ticks: after.ticks - before.ticks,
        hwm_kib: after.hwm_kib,
    };
    Steady {
        mode: env.mode,
        written: total,
        write_rate: total as f64 / secs,
        max_in_flight,
        latencies_us,
        usage,
    }
}

/// `steady-<mode>-arrivals.txt` in OUT: "record latency_us" per event, in arrival order, to see
/// when in the window the slow ones came (the sorted figures hide that).
fn write_arrivals(knobs: &Knobs, mode: Mode, arrivals: &[(String, i64)]) {
    let text: String = arrivals
        .iter()
        .map(|(id, us)| format!("{id} {us}\n"))
        .collect();
    let path = knobs
        .out
        .join(format!("steady-{}-arrivals.txt", mode.name()));
    if let Err(e) = std::fs::create_dir_all(&knobs.out).and_then(|()| std::fs::write(&path, text)) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

/// Writes a probe row every 200 ms until its event arrives, then forgets what was seen.
fn wait_streaming(env: &Env, sub: &Subscriber) {
    let started = Instant::now();
    for n in 0.. {
        env.psql(&format!("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('probe-{n}', 't', 'crm.probe')"));
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline && sub.count() == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        if sub.count() > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no probe event arrived in 60 s:\n{}",
            env.daemon_log()
        );
    }
    std::thread::sleep(Duration::from_millis(300)); // let the last probes' events arrive too
    sub.seen.lock().unwrap().clear();
}

async fn connect(url: &str) -> Arc<(Client, Statement)> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect a writer");
    tokio::spawn(conn);
    let statement = client
        .prepare(&insert_sql())
        .await
        .expect("prepare the INSERT");
    Arc::new((client, statement))
}

/// `total` single-row INSERTs at `rate` a second over `writers` connections; returns the
/// seconds until the last committed and the most in flight at once.
async fn write(url: &str, from: u64, total: u64, rate: u64, writers: usize) -> (f64, usize) {
    let mut conns = Vec::with_capacity(writers);
    for _ in 0..writers {
        conns.push(connect(url).await);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut tasks, mut sent, mut max_in_flight) = (JoinSet::new(), 0u64, 0usize);
    let started = Instant::now();
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        for i in sent..due {
            let conn = conns[i as usize % writers].clone();
            let id = (from + i) as i64;
            tasks.spawn(async move { conn.0.execute(&conn.1, &[&id]).await });
        }
        sent = due;
        max_in_flight = max_in_flight.max(tasks.len());
        while let Some(done) = tasks.try_join_next() {
            done.expect("a writer task").expect("an INSERT");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer task").expect("an INSERT");
    }
    (started.elapsed().as_secs_f64(), max_in_flight)
}
