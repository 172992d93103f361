//! Logical-mode catch-up: how fast Sluice drains a backlog compared with the ceiling,
//! `pg_recvlogical` reading the same WAL through `pgoutput` (proto_version 1) into /dev/null.
//!
//! What it does, on a throwaway PostgreSQL and Redis (`sluice::testkit`, free ports; the
//! machine's own 5432/6379 servers are never touched):
//!
//! 1. database `app` with tests/fixtures/seed.sql, a logical-mode config (`batch_size = 1000`,
//!    `status_interval = "100ms"` so an idle tail is confirmed promptly), `sluice setup`
//!    (publication and slot `sluice`), and a second pgoutput slot `ceiling`;
//! 2. while nothing consumes, a backlog of `ROWS` INSERTs into public.credit_configurations in
//!    transactions of `TXN` rows (tenants `tenant-0..49`, operation codes cycling crm./hrms./
//!    finance., so every row is exactly one event); the end LSN is `pg_current_wal_lsn()`;
//! 3. ceiling: `pg_recvlogical --start --endpos <end>` on slot `ceiling`, timed until it exits;
//! 4. Sluice: `sluice run`, timed from the spawn until slot `sluice`'s `confirmed_flush_lsn`
//!    reaches the end LSN (polled every 10 ms). Sluice confirms only what Redis acknowledged,
//!    so that is the moment every event is in Redis. Redis's `INFO commandstats` counts the
//!    PUBLISH calls (no subscriber is attached, so none competes for the CPU) and gives the
//!    time of the first publish.
//!
//! Reported per side: seconds, events/s, ratio to the ceiling, CPU µs per event of the client
//! process (utime+stime from /proc; for pg_recvlogical its exact rusage as a reaped child) and
//! of its walsender (sampled; the walsender decodes for both sides), and the client's peak RSS
//! (VmHWM). Targets: Sluice ≥ 0.8 × ceiling, < 50 MiB peak RSS, ≤ 5 µs CPU per event.
//!
//! Run: `cargo bench --bench catchup` (env `ROWS`, default 200000; `TXN`, default 1000;
//! `ROUNDS`, default 1; each round writes a fresh backlog and recreates slot `ceiling`).
//! Under `cargo test` (no `--bench` argument) it is a smoke run of 2000 rows that asserts every
//! event was published. The `sluice` binary is `env!("CARGO_BIN_EXE_sluice")`, which Cargo sets
//! for benches as for integration tests and builds in the same profile.

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

struct Bench {
    pg: Postgres,
    redis: Redis,
    dir: tempfile::TempDir,
    config: PathBuf,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

/// One side's result.
struct Side {
    name: &'static str,
    secs: f64,
    cpu_ticks: u64,
    walsender_ticks: u64,
    hwm_kib: u64,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rows = env_or("ROWS", if full { 200_000 } else { 2_000 });
    let txn = env_or("TXN", 1_000).max(1);
    let rounds = env_or("ROUNDS", 1).max(1);
    let b = Bench::start();
    println!("catch-up of {rows} rows in {txn}-row transactions, {rounds} round(s), {} cores", cores());
    for round in 0..rounds {
        b.psql("SELECT pg_drop_replication_slot('ceiling') FROM pg_replication_slots WHERE slot_name = 'ceiling'");
        b.psql("SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')");
        let end = b.backlog(round * rows, rows, txn);
        let ceiling = b.ceiling(end);
        let mut stats = RedisStats::connect(&b.redis.url());
        let redis_cpu = stats.cpu_secs();
        let (sluice, first) = b.sluice(end, &mut stats);
        let (published, redis_cpu) = (stats.publishes(), stats.cpu_secs() - redis_cpu);
        println!("{:<15} {:>8} {:>10} {:>10} {:>11} {:>15} {:>9}", "side", "seconds", "events/s", "× ceiling", "CPU µs/ev", "walsender µs/ev", "RSS MiB");
        ceiling.print(rows, ceiling.secs);
        sluice.print(rows, ceiling.secs);
        let steady = rows as f64 / (sluice.secs - first).max(1e-9);
        println!("  sluice: first publish after {first:.3} s, then {steady:.0} events/s; Redis counted {published} PUBLISH calls and used {:.2} µs CPU/event", redis_cpu * 1e6 / rows as f64);
        assert_eq!(published, rows, "every row is one event, but Redis counted a different number of PUBLISH calls");
        verdict(&sluice, &ceiling, rows);
    }
    println!("rerun: ROWS={rows} TXN={txn} ROUNDS={rounds} cargo bench --bench catchup");
}

fn verdict(sluice: &Side, ceiling: &Side, rows: u64) {
    let ratio = ceiling.secs / sluice.secs;
    let cpu = sluice.cpu_us(rows);
    let rss = sluice.hwm_kib as f64 / 1024.0;
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "  targets: ratio {ratio:.2} ≥ 0.8 {}, RSS {rss:.1} < 50 MiB {}, CPU {cpu:.2} ≤ 5 µs/event {}",
        mark(ratio >= 0.8),
        mark(rss < 50.0),
        mark(cpu <= 5.0)
    );
}

impl Side {
    fn cpu_us(&self, rows: u64) -> f64 {
        self.cpu_ticks as f64 * 1e6 / clk_tck() as f64 / rows as f64
    }

    fn print(&self, rows: u64, ceiling_secs: f64) {
        let ws = self.walsender_ticks as f64 * 1e6 / clk_tck() as f64 / rows as f64;
        println!(
            "{:<15} {:>8.3} {:>10.0} {:>10.2} {:>11.2} {:>15.2} {:>9.1}",
            self.name,
            self.secs,
            rows as f64 / self.secs,
            ceiling_secs / self.secs,
            self.cpu_us(rows),
            ws,
            self.hwm_kib as f64 / 1024.0
        );
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
[apps]
crm = {{ prefixes = ["crm.", "user-management", "role-management"] }}
hrms = {{ prefixes = ["hrms."] }}
finance = {{ prefixes = ["finance."] }}
[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = {{ operation_code = "operation_code" }}
[[tables]]
table = "public.roles"
type = "roles"
tenant = "tenant_id"
app = {{ any_of = "permissions" }}
[[tables]]
table = "public.users"
type = "users"
tenant = "tenant_id"
app = {{ fixed = ["crm", "hrms"] }}
"#
    )
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
        self.pg.psql(DB, sql).unwrap_or_else(|e| panic!("{e}"))
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
        println!("backlog written in {:.1} s, ends at {}", started.elapsed().as_secs_f64(), end.trim());
        lsn::parse(end.trim()).expect("an LSN")
    }

    /// The slot's confirmed position and the pid of the walsender streaming it.
    fn slot(&self, name: &str) -> (u64, Option<u32>) {
        let q = "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = $1";
        let row = self.rt.block_on(self.client.query_one(q, &[&name])).expect("poll the slot");
        let confirmed: Option<String> = row.get(0);
        let pid: Option<i32> = row.get(1);
        (confirmed.as_deref().and_then(lsn::parse).unwrap_or(0), pid.map(|p| p as u32))
    }

    /// pg_recvlogical on slot `ceiling` up to `end`, timed until it exits.
    fn ceiling(&self, end: u64) -> Side {
        let log = std::fs::File::create(self.dir.path().join("recvlogical.log")).unwrap();
        let before = children_ticks();
        let started = Instant::now();
        let mut child = Command::new(pg_recvlogical())
            .args(["-d", &self.pg.url_for(DB), "--slot", "ceiling", "--start", "--no-loop"])
            .args(["-o", "proto_version=1", "-o", "publication_names=sluice", "-f", "/dev/null"])
            .args(["--endpos", &lsn::format(end)])
            .stdin(Stdio::null())
            .stderr(log)
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
        let log = std::fs::read_to_string(self.dir.path().join("recvlogical.log")).unwrap_or_default();
        assert!(status.success(), "pg_recvlogical failed ({status}): {log}");
        Side { name: "pg_recvlogical", secs, cpu_ticks: children_ticks() - before, walsender_ticks: ws_ticks, hwm_kib: hwm }
    }

    /// `sluice run` until slot `sluice` is confirmed at `end`; also the first publish's time
    /// (seconds from the spawn, seen in Redis's PUBLISH count, which this resets).
    fn sluice(&self, end: u64, stats: &mut RedisStats) -> (Side, f64) {
        stats.reset();
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
                let side = Side { name: "sluice", secs: now, cpu_ticks, walsender_ticks: ws_ticks, hwm_kib };
                return (side, first.unwrap_or(now));
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
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
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

/// pg_recvlogical, found like testkit finds the server: `SLUICE_PG_BIN`, the newest
/// /usr/lib/postgresql/*/bin, then PATH.
fn pg_recvlogical() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return PathBuf::from(dir).join("pg_recvlogical");
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin/pg_recvlogical"))))
        .filter(|(_, p)| p.is_file())
        .collect();
    found.sort();
    found.pop().map_or_else(|| PathBuf::from("pg_recvlogical"), |(_, p)| p)
}

/// A plain RESP connection for `CONFIG RESETSTAT` and `INFO commandstats`.
struct RedisStats(TcpStream);

impl RedisStats {
    fn connect(url: &str) -> RedisStats {
        RedisStats(TcpStream::connect(url.trim_start_matches("redis://")).expect("connect to redis"))
    }

    fn reset(&mut self) {
        assert!(self.command("CONFIG RESETSTAT").starts_with("+OK"));
    }

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

    /// Sends an inline command; reads a simple reply line or a whole bulk string.
    fn command(&mut self, cmd: &str) -> String {
        self.0.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
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
