//! The HTTP endpoints on real servers: every probe transition (starting, Redis and PostgreSQL
//! away and back, standby and takeover in both modes, shutting down, retained WAL past
//! `max_retained_wal`), the contract's metric names, and a series count that does not grow
//! with tenants. Each daemon listens on a port the system picks (`127.0.0.1:0`) and the test
//! reads it from the daemon's log, so no other process can take it first; waits have deadlines.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{redis_command, wait_until, Env};
use sluice::telemetry as m;
use sluice::testkit::free_port;

const WAIT: Duration = Duration::from_secs(30);
/// "Within seconds": how long /readyz may take to notice a server going away or coming back.
const NOTICE: Duration = Duration::from_secs(10);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
/// Reconnects to PostgreSQL stay brisk, so recovery is seen within the deadlines.
const BRISK: &str = "[delivery]\nmax_backoff = \"1s\"";

/// `GET path` on 127.0.0.1:`port`: (status, body); status 0 when nothing answered.
fn get(port: u16, path: &str) -> (u16, String) {
    let exchange = || -> std::io::Result<(u16, String)> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        Ok((
            head.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            body.to_string(),
        ))
    };
    exchange().unwrap_or_else(|e| (0, e.to_string()))
}

/// Polls `GET path` until `want(status, body)`; panics with the last answer and `log()`.
async fn wait_answer(
    port: u16,
    path: &str,
    limit: Duration,
    want: impl Fn(u16, &str) -> bool,
    log: impl Fn() -> String,
) -> String {
    let answer = RefCell::new((0, String::new()));
    let wanted = || {
        let (status, body) = get(port, path);
        let ok = want(status, &body);
        *answer.borrow_mut() = (status, body);
        ok
    };
    wait_until!(limit, wanted, || {
        let (status, body) = &*answer.borrow();
        format!("GET {path} answered {status} {body:?}\n{}", log())
    })
    .await;
    answer.into_inner().1
}

async fn ready(port: u16, limit: Duration, log: impl Fn() -> String) {
    wait_answer(
        port,
        "/readyz",
        limit,
        |s, b| s == 200 && b == "ready\n",
        log,
    )
    .await;
}

/// Waits for /readyz to answer 503 with a reason containing `why`; returns the reason.
async fn not_ready(port: u16, why: &str, limit: Duration, log: impl Fn() -> String) -> String {
    wait_answer(
        port,
        "/readyz",
        limit,
        |s, b| s == 503 && b.contains(why),
        log,
    )
    .await
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = get(port, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The sample lines of a scrape (no comments).
fn samples(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_startup_and_redis_and_postgres_going_away_and_back() {
    let mut env = Env::start(BRISK);
    env.redis.stop().unwrap();
    let daemon = env.daemon();
    let port = daemon.http_port();
    let log = || daemon.log();
    not_ready(port, "Redis is unavailable: ", WAIT, log).await;
    assert_eq!(
        get(port, "/healthz"),
        (200, "ok\n".into()),
        "alive while starting"
    );
    env.redis.restart().unwrap();
    ready(port, WAIT, log).await;
    common::insert(&env, 1, 20);
    wait_until!(WAIT, || env.pending() == 0, log).await;

    // No change flows while the servers go away: the monitor notices on its own.
    away_and_back(
        port,
        "Redis",
        |up| {
            if up {
                env.redis.restart()
            } else {
                env.redis.stop()
            }
            .unwrap()
        },
        log,
    )
    .await;
    away_and_back(
        port,
        "PostgreSQL",
        |up| if up { env.pg.restart() } else { env.pg.stop() }.unwrap(),
        log,
    )
    .await;
    common::insert(&env, 21, 30);
    wait_until!(WAIT, || env.pending() == 0, log).await;
}

/// Both servers down when the daemon starts: it stays up, says why, and begins when they appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_while_both_servers_are_down_and_begins_when_they_appear() {
    let mut env = Env::start(BRISK);
    env.pg.stop().unwrap();
    env.redis.stop().unwrap();
    let mut daemon = env.daemon();
    let port = daemon.http_port();
    let log = || daemon.log();
    let why = not_ready(port, "starting: PostgreSQL is unavailable: ", WAIT, log).await;
    assert_eq!(why.trim_end().lines().count(), 1, "one line: {why}");
    assert_eq!(
        get(port, "/healthz"),
        (200, "ok\n".into()),
        "alive while both are down"
    );
    env.pg.restart().unwrap();
    not_ready(port, "Redis is unavailable: ", WAIT, log).await;
    assert_eq!(get(port, "/healthz").0, 200);
    env.redis.restart().unwrap();
    ready(port, WAIT, log).await;
    let sub = env.subscribe().await;
    common::insert(&env, 1, 20);
    sub.wait_for(20, WAIT, log).await;
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_none(),
        "still running:\n{}",
        daemon.log()
    );
}

/// Stops a server (`switch(false)`), waits for /readyz to name it (/healthz stays 200), starts
/// it again (`switch(true)`) and waits for ready; prints how long each took.
async fn away_and_back(
    port: u16,
    name: &str,
    mut switch: impl FnMut(bool),
    log: impl Fn() -> String + Copy,
) {
    switch(false);
    let lost = Instant::now();
    let why = not_ready(port, name, NOTICE, log).await;
    eprintln!(
        "{name} stopped: /readyz 503 {why:?} after {:?}",
        lost.elapsed()
    );
    assert_eq!(get(port, "/healthz").0, 200, "alive while {name} is away");
    switch(true);
    let back = Instant::now();
    ready(port, WAIT, log).await;
    eprintln!("{name} restarted: /readyz 200 after {:?}", back.elapsed());
}

/// A second daemon with the same source waits as a standby, says so, and takes over.
async fn standby_takes_over(extra: &str) {
    let env = Env::start(extra);
    let mut active = env.daemon();
    let port = active.http_port();
    ready(port, WAIT, || active.log()).await;
    let config = env.second_config(extra);
    let standby = env.daemon_with(&config);
    let standby_port = standby.http_port();
    let log = || standby.log();
    let why = not_ready(standby_port, "standby", WAIT, log).await;
    assert!(why.starts_with("standby"), "{why}");
    assert_eq!(status(standby_port)["phase"], "standby");
    assert_eq!(get(standby_port, "/healthz").0, 200, "a standby is alive");
    // A Deployment's readiness probe on /readyz?standby=ok: the standby is ready as a standby
    // (once the monitor has seen both servers), the active one as ever.
    let as_standby = wait_answer(
        standby_port,
        "/readyz?standby=ok",
        WAIT,
        |s, _| s == 200,
        log,
    )
    .await;
    assert!(as_standby.starts_with("standby: "), "{as_standby}");
    assert_eq!(get(port, "/readyz?standby=ok"), (200, "ready\n".into()));
    let metrics = get(standby_port, "/metrics").1;
    assert_eq!(
        (
            sample(&metrics, m::ACTIVE, &[]),
            sample(&metrics, m::READY, &[])
        ),
        (Some(0.0), Some(0.0)),
        "{metrics}"
    );
    assert_eq!(sample(&get(port, "/metrics").1, m::ACTIVE, &[]), Some(1.0));
    active.sigkill();
    let killed = Instant::now();
    ready(standby_port, WAIT, log).await;
    eprintln!(
        "standby ready {:?} after the active daemon was killed",
        killed.elapsed()
    );
    assert_eq!(status(standby_port)["phase"], "streaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_mode_standby_reports_itself_and_becomes_ready_after_takeover() {
    standby_takes_over("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_mode_standby_reports_itself_and_becomes_ready_after_takeover() {
    standby_takes_over(LOGICAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_shutting_down_until_the_batch_in_flight_is_done_then_exits_0() {
    let env = Env::start("");
    env.set_redis_timeout("60s");
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    let port = daemon.http_port();
    ready(port, WAIT, || daemon.log()).await;
    let batches = |d: &common::Daemon| d.log().matches("batch read; publishing").count();
    let before = batches(&daemon);
    // PUBLISH blocks while clients are paused for writes: the batch stays in flight.
    redis_command(env.redis.port(), &["CLIENT", "PAUSE", "20000", "WRITE"]);
    common::insert(&env, 1, 10);
    wait_until!(WAIT, || batches(&daemon) > before, || daemon.log()).await;
    daemon.send_term();
    let why = not_ready(port, "shutting down", WAIT, || daemon.log()).await;
    assert_eq!(why, "shutting down\n");
    assert_eq!(status(port)["phase"], "shutting_down");
    redis_command(env.redis.port(), &["CLIENT", "UNPAUSE"]);
    let exit = daemon.wait_exit(WAIT).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", daemon.log());
    sub.wait_for(10, WAIT, || daemon.log()).await;
    assert_eq!(
        env.pending(),
        0,
        "the batch in flight was finished and stored"
    );
    assert_eq!(
        get(port, "/readyz").0,
        0,
        "the server is gone with the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wal_past_max_retained_wal_fails_readiness_until_the_slot_catches_up() {
    let env = Env::start(&format!("{LOGICAL}\nmax_retained_wal = \"1MB\""));
    env.sql("CREATE TABLE filler (x text)"); // not published: only its WAL matters
    let mut daemon = env.daemon();
    let port = daemon.http_port();
    ready(port, WAIT, || daemon.log()).await;
    assert!(daemon.terminate().expect("stops").success());
    // about 6 MB of WAL that the stopped daemon's slot keeps
    env.sql("INSERT INTO filler SELECT repeat(md5(g::text), 20) FROM generate_series(1, 10000) g");
    let daemon = env.daemon();
    let port = daemon.http_port();
    let log = || daemon.log();
    let why = not_ready(port, "max_retained_wal", WAIT, log).await;
    assert_eq!(why, "retained WAL is past source.max_retained_wal\n");
    let metrics = get(port, "/metrics").1;
    assert!(
        sample(&metrics, m::SLOT_RETAINED_WAL_BYTES, &[]).unwrap() > 1e6,
        "{metrics}"
    );
    for name in [m::SOURCE_LAG_BYTES, m::SLOT_RETAINED_WAL_BYTES] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name}:\n{metrics}"
        );
    }
    assert!(status(port)["retained_wal_bytes"].as_u64().unwrap() > 1_000_000);
    // Streamed through, the slot is confirmed; a checkpoint lets PostgreSQL move its restart_lsn.
    let ready_after_a_checkpoint = || {
        if get(port, "/readyz").0 == 200 {
            return true;
        }
        env.sql("CHECKPOINT");
        false
    };
    wait_until!(WAIT, ready_after_a_checkpoint, || format!(
        "still not ready: {:?}\n{}",
        get(port, "/readyz"),
        log()
    ))
    .await;
    assert_eq!(
        log()
            .matches("more WAL than source.max_retained_wal")
            .count(),
        1,
        "{}",
        log()
    );
    assert!(
        log().contains("back under source.max_retained_wal"),
        "{}",
        log()
    );
}

/// Rows for tenants `acme-<from>`..`acme-<to>`, one each, routed to crm.
fn insert_tenants(env: &Env, from: i64, to: i64) {
    env.sql(&format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
         SELECT 'c' || g, 'acme-' || g, 'crm.leads.create' FROM generate_series({from}, {to}) g"
    ));
}

/// Scrapes once `count` events reached Redis and the monitor saw the queue empty.
async fn scrape_after(port: u16, count: usize, log: impl Fn() -> String) -> String {
    let published = [r#"app="crm""#, r#"type="credit-configs""#];
    wait_answer(
        port,
        "/metrics",
        WAIT,
        |_, b| {
            sample(b, m::EVENTS_PUBLISHED, &published) == Some(count as f64)
                && sample(b, m::PENDING_CHANGES, &[]) == Some(0.0)
        },
        log,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_contract_names_and_series_do_not_grow_with_tenants() {
    let env = Env::start("");
    let daemon = env.daemon();
    let port = daemon.http_port();
    let log = || daemon.log();
    ready(port, WAIT, log).await;
    // one unroutable change first: it is done by the time the 1,000 events are
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('x', 'acme-x', 'nope.x')");
    insert_tenants(&env, 1, 1000);
    let first = scrape_after(port, 1000, log).await;
    for name in [
        m::CHANGES_RECEIVED,
        m::EVENTS_PUBLISHED,
        m::PUBLISH_NO_RECEIVERS,
        m::PUBLISH_ERRORS,
        m::DEAD_LETTERS,
        m::END_TO_END_LATENCY,
        m::BATCH_SIZE,
        m::PENDING_CHANGES,
        m::UP,
        m::ACTIVE,
        m::READY,
        m::BUILD_INFO,
        m::LAST_CHECKPOINT,
    ] {
        assert!(
            first.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{first}"
        );
        assert!(
            samples(&first).iter().any(|l| l.starts_with(name)),
            "no sample of {name}:\n{first}"
        );
    }
    // The process's own metrics, as Prometheus client libraries name and type them.
    for (name, kind) in [
        (m::PROCESS_CPU_SECONDS, "counter"),
        (m::PROCESS_RESIDENT_MEMORY, "gauge"),
        (m::PROCESS_OPEN_FDS, "gauge"),
        (m::PROCESS_MAX_FDS, "gauge"),
        (m::PROCESS_START_TIME, "gauge"),
    ] {
        assert!(
            first.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{first}"
        );
        assert!(sample(&first, name, &[]).is_some_and(|v| v > 0.0), "{name}");
    }
    let rss = sample(&first, m::PROCESS_RESIDENT_MEMORY, &[]).unwrap();
    assert!(rss > 1e6 && rss < 1e9, "resident memory {rss}");
    assert_eq!(
        sample(&first, m::DEAD_LETTERS, &[r#"reason="unroutable""#]),
        Some(1.0)
    );
    assert_eq!(sample(&first, m::UP, &[r#"component="redis""#]), Some(1.0));
    assert_eq!(
        sample(&first, &format!("{}_count", m::END_TO_END_LATENCY), &[]),
        Some(1001.0)
    );
    assert_eq!(
        sample(&first, m::BUILD_INFO, &[r#"mode="trigger""#]),
        Some(1.0)
    );

    insert_tenants(&env, 1001, 2000);
    let second = scrape_after(port, 2000, log).await;
    let (a, b) = (samples(&first).len(), samples(&second).len());
    eprintln!("series after 1,000 tenants: {a}; after 2,000: {b}");
    assert_eq!(a, b, "the number of series does not grow with tenants");
    assert!(
        !first.contains("acme-") && !second.contains("acme-"),
        "no tenant in any label"
    );

    let s = status(port);
    assert_eq!(
        (s["mode"].as_str(), s["phase"].as_str(), s["ready"].as_str()),
        (Some("trigger"), Some("streaming"), Some("ready"))
    );
    assert!(
        s["position"].as_str().unwrap().starts_with("snapshot"),
        "{s}"
    );
    assert_eq!(
        (
            s["published"].as_u64(),
            s["dead_letters"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some(2000), Some(1), Some(0)),
        "{s}"
    );
    assert!(
        s["uptime_seconds"].is_u64() && s["version"] == env!("CARGO_PKG_VERSION"),
        "{s}"
    );
}

#[test]
fn a_port_in_use_is_one_fatal_line_naming_http_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    let unused = |scheme: &str| format!("{scheme}://127.0.0.1:{}", free_port());
    let extra = format!("[http]\nlisten = \"127.0.0.1:{port}\"");
    std::fs::write(
        &config,
        common::config_text(
            &format!("{}/app", unused("postgres")),
            &unused("redis"),
            &extra,
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        last.starts_with(&format!(
            "error: cannot listen on http.listen = \"127.0.0.1:{port}\""
        )),
        "{stderr}"
    );
}

/// How long the daemon gives a client to send its request headers (and a kept-alive
/// connection to send its next request); `src/http.rs` says so too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `count` connections to `port`; each sends `first` (maybe nothing) and then stalls.
fn stalled(port: u16, count: usize, first: &str) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(first.as_bytes()).unwrap();
            s
        })
        .collect()
}

/// True once the server closed `s` (end of stream, or a reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an answer (408, say) before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_at_once_past_220_stalled_connections_which_close_after_the_header_timeout()
{
    let env = Env::start("");
    let daemon = env.daemon();
    let port = daemon.http_port();
    ready(port, WAIT, || daemon.log()).await;
    let opened = Instant::now();
    let mut idle = stalled(port, 200, "");
    idle.extend(stalled(port, 20, "GET /heal"));
    for round in 0..5 {
        let asked = Instant::now();
        let answer = get(port, "/healthz");
        let took = asked.elapsed();
        eprintln!(
            "/healthz past {} stalled connections: {answer:?} in {took:?}",
            idle.len()
        );
        assert_eq!(
            answer,
            (200, "ok\n".into()),
            "round {round}\n{}",
            daemon.log()
        );
        assert!(
            took < Duration::from_secs(2),
            "round {round}: /healthz took {took:?}, past a 2 s probe timeout"
        );
    }
    // The server closes every stalled connection by the header timeout (those shed for the
    // probes sooner).
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(3);
    let open: Vec<usize> = (0..idle.len())
        .filter(|&i| {
            !closed_within(
                &mut idle[i],
                deadline.saturating_duration_since(Instant::now()),
            )
        })
        .collect();
    assert!(
        open.is_empty(),
        "{} stalled connections still open {:?} after they were opened: {open:?}",
        open.len(),
        opened.elapsed()
    );
    assert_eq!(get(port, "/readyz"), (200, "ready\n".into()));
}
