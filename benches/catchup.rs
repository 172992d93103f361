//! Logical-mode catch-up: how fast Sluice drains a backlog, against the ceiling of
//! `pg_recvlogical` reading the same WAL through `pgoutput` (proto_version 1) into /dev/null.
//!
//! On a throwaway PostgreSQL and Redis (`sluice::testkit`, free ports; the machine's own
//! 5432/6379 servers are never touched):
//!
//! 1. database `app` with tests/fixtures/seed.sql, a logical-mode config for the table written
//!    (`batch_size = 1000`; `status_interval = "100ms"` so an idle tail is confirmed promptly),
//!    `sluice setup` (publication and slot `sluice`), and a second pgoutput slot `ceiling`;
//! 2. while nothing consumes, a backlog of `ROWS` INSERTs into public.credit_configurations in
//!    transactions of `TXN` rows (tenants `tenant-0..49`, operation codes cycling crm./hrms./
//!    finance., so each row is exactly one event); the end LSN is `pg_current_wal_lsn()`;
//! 3. ceiling: `pg_recvlogical --start --endpos <end>` on slot `ceiling`, timed until it exits;
//! 4. Sluice: `sluice run`, timed from the spawn until slot `sluice`'s `confirmed_flush_lsn`
//!    reaches the end LSN (polled every 10 ms). Sluice confirms only what Redis acknowledged,
//!    so then every event is in Redis. Redis's `INFO commandstats` counts the PUBLISH calls
//!    and dates the first one; no subscriber is attached, so none competes for the CPU.
//!
//! Per side: seconds, events/s, ratio to the ceiling, CPU µs per event of the client (utime +
//! stime from /proc; pg_recvlogical's exactly, as a reaped child) and of its walsender (sampled
//! every 10 ms; it decodes for both sides), and the client's peak RSS (VmHWM). Redis's CPU per
//! event is printed for Sluice. Targets: Sluice ≥ 0.8 × ceiling, < 50 MiB, ≤ 5 µs CPU/event.
//!
//! Run: `cargo bench --bench catchup` (env `ROWS`, default 200000; `TXN`, default 1000;
//! `ROUNDS`, default 1: each round recreates both slots, then writes a fresh backlog).
//! Under `cargo test` (no `--bench` argument) it is a 2000-row smoke run that asserts every
//! event was published. The daemon is `env!("CARGO_BIN_EXE_sluice")`, which Cargo builds and
//! sets for benches as for integration tests (release under `cargo bench`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::source::lsn;
use sluice::testkit::{Postgres, Redis};

const DB: &str = "app";
const SEED: &str = include_str!("../tests/fixtures/seed.sql");
const POLL: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(180);

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rows = env_or("ROWS", if full { 200_000 } else { 2_000 });
    let txn = env_or("TXN", 1_000).max(1);
    let rounds = env_or("ROUNDS", 1).max(1);
    let b = Bench::start();
    println!("catch-up of {rows} rows in {txn}-row transactions, {rounds} round(s), {} cores", cores());
    for round in 0..rounds {
        for slot in ["sluice", "ceiling"] {
            b.psql(&format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"));
            b.psql(&format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"));
        }
        let end = b.backlog(round * rows, rows, txn);
        let ceiling = b.ceiling(end);
        let mut stats = RedisStats(TcpStream::connect(b.redis.url().trim_start_matches("redis://")).unwrap());
        let redis_cpu = stats.cpu_secs();
        let (sluice, first) = b.sluice(end, &mut stats);
        let (published, redis_cpu) = (stats.publishes(), stats.cpu_secs() - redis_cpu);
        println!("{:<15} {:>8} {:>10} {:>10} {:>10} {:>16} {:>8}", "side", "seconds", "events/s", "× ceiling", "CPU µs/ev", "walsender µs/ev", "RSS MiB");
        ceiling.print(rows, ceiling.secs);
        sluice.print(rows, ceiling.secs);
        let steady = rows as f64 / (sluice.secs - first).max(1e-9);
        println!("  sluice: first publish after {first:.3} s, then {steady:.0} events/s; Redis counted {published} PUBLISH calls, used {:.2} µs CPU/event", redis_cpu * 1e6 / rows as f64);
        assert_eq!(published, rows, "each row is one event, but Redis counted another number of PUBLISH calls");
        verdict(&sluice, &ceiling, rows);
    }
    println!("rerun: ROWS={rows} TXN={txn} ROUNDS={rounds} cargo bench --bench catchup");
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn verdict(sluice: &Side, ceiling: &Side, rows: u64) {
    let (ratio, cpu, rss) = (ceiling.secs / sluice.secs, us_per_event(sluice.cpu_ticks, rows), sluice.hwm_kib as f64 / 1024.0);
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "  targets: ratio {ratio:.2} ≥ 0.8 {}, peak RSS {rss:.1} < 50 MiB {}, CPU {cpu:.2} ≤ 5 µs/event {}",
        mark(ratio >= 0.8),
        mark(rss < 50.0),
        mark(cpu <= 5.0)
    );
}

/// One side's result.
struct Side {
    name: &'static str,
    secs: f64,
    cpu_ticks: u64,
    walsender_ticks: u64,
    hwm_kib: u64,
}

/// CPU µs per event from clock ticks.
fn us_per_event(ticks: u64, rows: u64) -> f64 {
    ticks as f64 * 1e6 / clk_tck() as f64 / rows as f64
}

impl Side {
    fn print(&self, rows: u64, ceiling_secs: f64) {
        let (cpu, ws) = (us_per_event(self.cpu_ticks, rows), us_per_event(self.walsender_ticks, rows));
        let (rate, ratio, rss) = (rows as f64 / self.secs, ceiling_secs / self.secs, self.hwm_kib as f64 / 1024.0);
        println!("{:<15} {:>8.3} {rate:>10.0} {ratio:>10.2} {cpu:>10.2} {ws:>16.2} {rss:>8.1}", self.name, self.secs);
    }
}

fn config_text(pg: &str, redis: &str) -> String {
    format!(
        r#"[postgres]
url = "{pg}"
[redis]
url = "{redis}"
[source]
mode = "logical"
batch_size = 1000
status_interval = "100ms"
[http]
listen = "127.0.0.1:0"
[apps]
crm = {{ prefixes = ["crm.", "user-management", "role-management"] }}
hrms = {{ prefixes = ["hrms."] }}
finance = {{ prefixes = ["finance."] }}
[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = {{ operation_code = "operation_code" }}
"#
    )
}

struct Bench {
    pg: Postgres,
    redis: Redis,
    dir: tempfile::TempDir,
    config: PathBuf,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Bench {
    /// Servers, the seed schema, the config, `sluice setup`, and a connection for polling.
    fn start() -> Bench {
        let pg = Postgres::start().expect("start postgres");
        let redis = Redis::start().expect("start redis");
        pg.psql("postgres", &format!("CREATE DATABASE {DB}")).unwrap();
        pg.psql(DB, SEED).unwrap();
        let dir = tempfile::Builder::new().prefix("sluice-catchup-").tempdir().unwrap();
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, config_text(&pg.url_for(DB), &redis.url())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (client, conn) = rt.block_on(tokio_postgres::connect(&pg.url_for(DB), tokio_postgres::NoTls)).unwrap();
        rt.spawn(conn);
        let b = Bench { pg, redis, dir, config, rt, client };
        let out = b.sluice_cmd().arg("setup").output().expect("run sluice setup");
        assert!(out.status.success(), "sluice setup failed: {}", String::from_utf8_lossy(&out.stderr));
        b
    }

    fn psql(&self, sql: &str) -> String {
        self.pg.psql(DB, sql).unwrap_or_else(|e| panic!("{e}")).trim().to_string()
    }

    fn sluice_cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("--config").arg(&self.config).env_remove("DATABASE_URL").env_remove("REDIS_URL");
        c
    }

    /// `rows` INSERTs from id `from` on, `txn` per transaction; returns the WAL end after them.
    fn backlog(&self, from: u64, rows: u64, txn: u64) -> u64 {
        let mut sql = String::new();
        for lo in (from..from + rows).step_by(txn as usize) {
            let hi = (lo + txn).min(from + rows) - 1;
            sql.push_str(&format!(
                "BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) \
                 SELECT 'k' || g, 'tenant-' || g % 50, (ARRAY['crm.leads.create', 'hrms.leave.approve', \
                 'finance.invoice.generate'])[1 + g % 3], (g % 1000) / 100.0, jsonb_build_object('g', g) \
                 FROM generate_series({lo}, {hi}) g; COMMIT;\n"
            ));
        }
        let started = Instant::now();
        self.psql(&sql);
        let end = self.psql("SELECT pg_current_wal_lsn()::text");
        println!("backlog written in {:.1} s, ends at {end}", started.elapsed().as_secs_f64());
        lsn::parse(&end).expect("an LSN")
    }

    /// The slot's confirmed position and the pid of the walsender streaming it.
    fn slot(&self, name: &str) -> (u64, Option<u32>) {
        let q = "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = $1";
        let row = self.rt.block_on(self.client.query_one(q, &[&name])).expect("poll the slot");
        let (confirmed, pid): (Option<String>, Option<i32>) = (row.get(0), row.get(1));
        (confirmed.as_deref().and_then(lsn::parse).unwrap_or(0), pid.map(|p| p as u32))
    }

    /// pg_recvlogical (from the server's own BINDIR) on slot `ceiling` up to `end`, timed until
    /// it exits.
    fn ceiling(&self, end: u64) -> Side {
        let bin = PathBuf::from(self.psql("SELECT setting FROM pg_config WHERE name = 'BINDIR'")).join("pg_recvlogical");
        let log_path = self.dir.path().join("recvlogical.log");
        let (before, started) = (children_ticks(), Instant::now());
        let mut child = Command::new(bin)
            .args(["-d", &self.pg.url_for(DB), "--slot", "ceiling", "--start", "--no-loop", "-f", "/dev/null"])
            .args(["-o", "proto_version=1", "-o", "publication_names=sluice", "--endpos", &lsn::format(end)])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn pg_recvlogical");
        let (mut hwm, mut walsender, mut ws_ticks) = (0, None, 0);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            hwm = usage(child.id()).map_or(hwm, |u| u.1);
            walsender = walsender.or_else(|| self.slot("ceiling").1);
            ws_ticks = walsender.and_then(usage).map_or(ws_ticks, |u| u.0);
            assert!(started.elapsed() < LIMIT, "pg_recvlogical did not finish in {LIMIT:?}");
            std::thread::sleep(POLL);
        };
        let secs = started.elapsed().as_secs_f64();
        assert!(status.success(), "pg_recvlogical failed ({status}): {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        Side { name: "pg_recvlogical", secs, cpu_ticks: children_ticks() - before, walsender_ticks: ws_ticks, hwm_kib: hwm }
    }

    /// `sluice run` until slot `sluice` is confirmed at `end`; also when the first publish
    /// showed in Redis (seconds from the spawn; this resets Redis's command stats).
    fn sluice(&self, end: u64, stats: &mut RedisStats) -> (Side, f64) {
        assert!(stats.command("CONFIG RESETSTAT").starts_with("+OK"));
        let log_path = self.dir.path().join("daemon.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let started = Instant::now();
        let mut child = self.sluice_cmd().arg("run").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("spawn sluice run");
        let (mut first, mut ws_ticks) = (None, 0);
        loop {
            let (confirmed, walsender) = self.slot("sluice");
            let now = started.elapsed().as_secs_f64();
            ws_ticks = walsender.and_then(usage).map_or(ws_ticks, |u| u.0);
            if confirmed >= end {
                let (cpu_ticks, hwm_kib) = usage(child.id()).expect("sluice is running");
                terminate(&mut child);
                return (Side { name: "sluice", secs: now, cpu_ticks, walsender_ticks: ws_ticks, hwm_kib }, first.unwrap_or(now));
            }
            if first.is_none() && stats.publishes() > 0 {
                first = Some(now);
            }
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(child.try_wait().unwrap().is_none(), "sluice run exited early:\n{}", log());
            assert!(started.elapsed() < LIMIT, "sluice did not catch up in {LIMIT:?}:\n{}", log());
            std::thread::sleep(POLL);
        }
    }
}

/// SIGTERM, wait up to 30 s, then SIGKILL.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A process's utime+stime (clock ticks) and VmHWM (KiB), or None once it is gone.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let ticks = stat_fields(&format!("/proc/{pid}/stat"), 11, 12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    Some((ticks, hwm.trim().trim_end_matches("kB").trim().parse().ok()?))
}

/// cutime+cstime of this process: the CPU of every child reaped so far.
fn children_ticks() -> u64 {
    stat_fields("/proc/self/stat", 13, 14).unwrap_or(0)
}

/// The sum of two fields of a /proc stat file, counted from the one after `(comm)`.
fn stat_fields(path: &str, a: usize, b: usize) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(a)?.parse::<u64>().ok()? + fields.get(b)?.parse::<u64>().ok()?)
}

fn clk_tck() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A plain RESP connection for `CONFIG RESETSTAT` and `INFO`.
struct RedisStats(TcpStream);

impl RedisStats {
    fn publishes(&mut self) -> u64 {
        let info = self.command("INFO commandstats");
        let calls = info.lines().find_map(|l| l.strip_prefix("cmdstat_publish:calls="));
        calls.and_then(|c| c.split(',').next()?.parse().ok()).unwrap_or(0)
    }

    /// used_cpu_sys + used_cpu_user of the server, in seconds.
    fn cpu_secs(&mut self) -> f64 {
        let info = self.command("INFO cpu");
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
        field("used_cpu_sys:") + field("used_cpu_user:")
    }

    /// Sends an inline command; reads a one-line reply or a whole bulk string.
    fn command(&mut self, cmd: &str) -> String {
        self.0.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 8192]);
        loop {
            let n = self.0.read(&mut chunk).unwrap();
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            let Some((head, body)) = text.split_once("\r\n") else { continue };
            match head.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
                Some(len) if body.len() < len + 2 => continue,
                _ => return text.into_owned(),
            }
        }
    }
}
