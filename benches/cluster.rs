//! One Redis against a 3-master Redis Cluster: catch-up events/s and Redis CPU per node.
//!
//! ```text
//! cargo bench --bench cluster            # ROWS=200000 TENANTS=50 by default
//! ```
//!
//! Per target (a single `redis-server`, then a cluster of 3 masters from
//! `sluice::testkit::RedisCluster`), on a fresh PostgreSQL in logical mode: a backlog of
//! `ROWS` rows over `TENANTS` tenants (so `TENANTS` recoverable channels, spread over the
//! shards by their hash slots) is written while no daemon runs; then `sluice run` starts and
//! the clock runs until its /metrics count `ROWS` published events (Redis acknowledged them).
//! Reported: events/s, and the CPU each Redis node and Sluice spent, in µs per event. Every
//! process shares the machine's cores, so read the figures with the core count in mind.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::testkit::{wait_http_port, Postgres, Redis, RedisCluster};

// the load benchmark's /proc readings (CPU ticks, the tick length, the core count)
#[path = "load/procs.rs"]
#[allow(dead_code)]
mod procs;

const SEED: &str = include_str!("../tests/fixtures/seed.sql");

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") && std::env::var("ROWS").is_err() {
        println!("cluster benchmark: run it with cargo bench --bench cluster");
        return;
    }
    let (rows, tenants) = (knob("ROWS", 200_000), knob("TENANTS", 50));
    println!(
        "catch-up of {rows} events over {tenants} channels, {} cores",
        procs::cores()
    );
    println!("| target | events/s | Redis CPU µs/event per node | Sluice CPU µs/event |");
    println!("|---|---|---|---|");
    let single = Redis::start().expect("redis");
    let pids = vec![single.pid().expect("running")];
    report("1 Redis", run(&single.url(), &pids, rows, tenants));
    drop(single);
    let cluster = RedisCluster::start(3, 0).expect("redis cluster");
    let masters: Vec<u16> = cluster
        .masters()
        .expect("masters")
        .into_iter()
        .map(|m| m.0)
        .collect();
    let pids: Vec<u32> = masters.iter().filter_map(|&p| cluster.pid(p)).collect();
    report(
        "3-master cluster",
        run(&cluster.url(), &pids, rows, tenants),
    );
}

struct Run {
    secs: f64,
    events: u64,
    redis_ticks: Vec<u64>,
    sluice_ticks: u64,
}

fn report(target: &str, r: Run) {
    let per = |ticks: u64| procs::ticks_us(ticks) / r.events as f64;
    let nodes: Vec<String> = r
        .redis_ticks
        .iter()
        .map(|&t| format!("{:.2}", per(t)))
        .collect();
    println!(
        "| {target} | {:.0} | {} | {:.2} |",
        r.events as f64 / r.secs,
        nodes.join(" / "),
        per(r.sluice_ticks)
    );
}

fn run(redis_url: &str, redis_pids: &[u32], rows: u64, tenants: u64) -> Run {
    let pg = Postgres::start().expect("postgres");
    pg.psql("postgres", "CREATE DATABASE app").unwrap();
    pg.psql("app", SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, config_text(&pg.url_for("app"), redis_url)).unwrap();
    let setup = sluice(&config).arg("setup").output().unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    for from in (0..rows).step_by(10_000) {
        let to = (from + 10_000).min(rows);
        pg.psql(
            "app",
            &format!(
                "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
                 SELECT 'k' || g, 'tenant-' || (g % {tenants}), 'crm.leads.create' \
                 FROM generate_series({from}, {to} - 1) g"
            ),
        )
        .unwrap();
    }
    let before: Vec<u64> = redis_pids.iter().map(|&p| ticks(p)).collect();
    let started = Instant::now();
    let log = dir.path().join("daemon.log");
    let mut daemon: Child = sluice(&config)
        .args(["run"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The daemon listens on 127.0.0.1:0 and logs the port the system gave it.
    let port = wait_http_port(&log, Duration::from_secs(60)).expect("the daemon serves HTTP");
    let deadline = started + Duration::from_secs(600);
    let mut sluice_ticks = 0;
    while published(port) < rows {
        assert!(Instant::now() < deadline, "not done after 600 s");
        sluice_ticks = ticks(daemon.id());
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    sluice_ticks = ticks(daemon.id()).max(sluice_ticks);
    let redis_ticks = redis_pids
        .iter()
        .zip(&before)
        .map(|(&p, b)| ticks(p) - b)
        .collect();
    let _ = daemon.kill();
    let _ = daemon.wait();
    Run {
        secs,
        events: rows,
        redis_ticks,
        sluice_ticks,
    }
}

fn config_text(pg: &str, redis: &str) -> String {
    format!(
        "[postgres]\nurl = \"{pg}\"\n[redis]\nurl = \"{redis}\"\n[source]\nmode = \"logical\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[apps]\ncrm = {{ prefixes = [\"crm.\"] }}\n\
         [[tables]]\ntable = \"public.credit_configurations\"\ntype = \"credit-configs\"\n\
         tenant = \"tenant_id\"\napp = {{ operation_code = \"operation_code\" }}\n"
    )
}

fn sluice(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("--config")
        .arg(config)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    c.stdout(Stdio::null());
    c
}

/// The sum of `sluice_events_published_total` on the daemon's /metrics (0 until it answers).
fn published(port: u16) -> u64 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("sluice_events_published_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// utime + stime of `pid`, in clock ticks (0 once it is gone).
fn ticks(pid: u32) -> u64 {
    procs::usage(pid).map_or(0, |u| u.ticks)
}
