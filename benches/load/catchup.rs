//! Sections (1) and (3): a backlog written while no daemon runs, then drained.
//!
//! Logical mode: the backlog goes to two pgoutput slots. `pg_recvlogical --endpos` reads slot
//! `ceiling` into /dev/null (the ceiling: what the walsender can send), timed until it exits;
//! `sluice run` is timed from its spawn until slot `sluice`'s confirmed_flush_lsn reaches the
//! backlog's end. Sluice confirms only what Redis acknowledged, so by then every event is in
//! Redis. The ceiling goes first (CEILING=last: after Sluice, to see what the order does). The
//! one big transaction is the same with no ceiling and one transaction.
//!
//! Trigger mode: the capture trigger writes the backlog into sluice.change_log; `sluice run`
//! is timed from its spawn until sluice.checkpoint covers the backlog's newest row (the test
//! of sluice.pending_changes on that row alone: a full count would scan the table every
//! poll); that nothing is pending is checked once after timing.
//!
//! Polling is every 10 ms. No subscriber is attached, so none competes for the CPU: Redis's
//! `INFO commandstats` counts the PUBLISH calls (each row is exactly one event) and dates the
//! first one. CPU is the daemon's utime + stime, sampled when it caught up, and its
//! walsender's (logical; it decodes for both sides); peak RSS is VmHWM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice::source::lsn;

use crate::env::{Backlog, Env};
use crate::knobs::Mode;
use crate::procs::{children_ticks, terminate, usage, Usage};
use crate::resp::RedisStats;

const POLL: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(600);

/// One client's run through a backlog.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    pub secs: f64,
    pub usage: Usage,
    pub walsender_ticks: u64,
}

/// A drained backlog.
#[derive(Debug, Clone)]
pub struct Drained {
    pub mode: Mode,
    pub rows: u64,
    pub sluice: Side,
    /// pg_recvlogical on the same WAL (logical catch-up only).
    pub ceiling: Option<Side>,
    /// Seconds from the spawn to the first PUBLISH Redis counted.
    pub first_publish: f64,
    pub redis_cpu_secs: f64,
}

/// Whether and when pg_recvlogical reads the backlog: both clients decode the same WAL, so
/// the one that goes second may find more of it in caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    None,
    First,
    Last,
}

/// Section (1) in either mode.
pub fn catchup(env: &Env, rows: u64, txn: u64, ceiling: Ceiling) -> Drained {
    match env.mode {
        Mode::Logical => logical(env, rows, txn, ceiling),
        Mode::Trigger => {
            let backlog = env.backlog(rows, txn);
            let last = backlog
                .last_row
                .clone()
                .expect("trigger mode notes the last row");
            let drained = drain(env, &backlog, None, |env| env.checkpoint_covers(&last));
            assert_eq!(
                env.pending(),
                0,
                "the checkpoint covers the backlog, yet rows are pending"
            );
            drained
        }
    }
}

/// Section (3): one transaction of `rows` rows, logical mode.
pub fn big_txn(env: &Env, rows: u64) -> Drained {
    logical(env, rows, rows, Ceiling::None)
}

fn logical(env: &Env, rows: u64, txn: u64, ceiling: Ceiling) -> Drained {
    env.reset_slot("sluice", true);
    env.reset_slot("ceiling", ceiling != Ceiling::None);
    let backlog = env.backlog(rows, txn);
    let first = (ceiling == Ceiling::First).then(|| pg_recvlogical(env, backlog.end_lsn));
    let mut drained = drain(env, &backlog, first, |env| {
        env.slot("sluice").0 >= backlog.end_lsn
    });
    if ceiling == Ceiling::Last {
        drained.ceiling = Some(pg_recvlogical(env, backlog.end_lsn));
    }
    env.reset_slot("ceiling", false); // retains no WAL for the sections after
    drained
}

/// `pg_recvlogical` on slot `ceiling` up to `end`, timed until it exits.
fn pg_recvlogical(env: &Env, end: u64) -> Side {
    let log_path = env.dir.path().join("recvlogical.log");
    let (before, started) = (children_ticks(), Instant::now());
    let mut child = Command::new(env.pg_recvlogical())
        .args([
            "-d",
            &env.url(),
            "--slot",
            "ceiling",
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=sluice",
            "--endpos",
            &lsn::format(end),
        ])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("spawn pg_recvlogical");
    let (mut hwm_kib, mut walsender, mut walsender_ticks) = (0, None, 0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        hwm_kib = usage(child.id()).map_or(hwm_kib, |u| u.hwm_kib);
        walsender = walsender.or_else(|| env.slot("ceiling").1);
        walsender_ticks = walsender
            .and_then(usage)
            .map_or(walsender_ticks, |u| u.ticks);
        assert!(
            started.elapsed() < LIMIT,
            "pg_recvlogical did not finish in {LIMIT:?}"
        );
        std::thread::sleep(POLL);
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "pg_recvlogical failed ({status}): {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    Side {
        secs,
        usage: Usage {
            ticks: children_ticks() - before,
            hwm_kib,
        },
        walsender_ticks,
    }
}

/// `sluice run` until `caught_up`; asserts Redis counted one PUBLISH per row.
fn drain(
    env: &Env,
    backlog: &Backlog,
    ceiling: Option<Side>,
    mut caught_up: impl FnMut(&Env) -> bool,
) -> Drained {
    let mut stats = RedisStats::connect(&env.redis_addr());
    stats.reset();
    let redis_cpu = stats.cpu_secs();
    let started = Instant::now();
    let mut child = env.spawn_daemon();
    let (mut first, mut walsender_ticks) = (None, 0);
    let sluice = loop {
        let now = started.elapsed().as_secs_f64();
        if env.mode == Mode::Logical {
            walsender_ticks = env
                .slot("sluice")
                .1
                .and_then(usage)
                .map_or(walsender_ticks, |u| u.ticks);
        }
        if caught_up(env) {
            let usage = usage(child.id()).expect("sluice is running");
            terminate(&mut child);
            break Side {
                secs: now,
                usage,
                walsender_ticks,
            };
        }
        if first.is_none() && stats.publishes() > 0 {
            first = Some(now);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice run exited early:\n{}",
            env.daemon_log()
        );
        assert!(
            started.elapsed() < LIMIT,
            "sluice did not catch up in {LIMIT:?}:\n{}",
            env.daemon_log()
        );
        std::thread::sleep(POLL);
    };
    let published = stats.publishes();
    assert_eq!(
        published, backlog.rows,
        "each row is one event, but Redis counted another number of PUBLISH calls"
    );
    let redis_cpu_secs = stats.cpu_secs() - redis_cpu;
    let first_publish = first.unwrap_or(sluice.secs);
    Drained {
        mode: env.mode,
        rows: backlog.rows,
        sluice,
        ceiling,
        first_publish,
        redis_cpu_secs,
    }
}
