//! The end-to-end harness: throwaway PostgreSQL and Redis on free ports, the seed schema, a
//! config file, the `sluice` binary as a child process, and a Redis subscriber that records
//! every event. Waits are on conditions with deadlines, never fixed sleeps.

pub mod config;
pub mod tail;
pub mod wait;

pub use config::{config_text, ConfigText};

pub use wait::exit_within;
pub(crate) use wait::wait_until;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use sluice::testkit::{Postgres, Redis};

pub const DB: &str = "app";
pub const SEED: &str = include_str!("../../fixtures/seed.sql");

pub struct Env {
    pub pg: Postgres,
    pub redis: Redis,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    /// Servers, the seed schema in database `app`, a config, and `sluice setup` applied.
    pub fn start(extra: &str) -> Env {
        Env::start_with("", extra)
    }

    /// As [`Env::start`], with more schema (`sql`) created before setup.
    pub fn start_with(sql: &str, extra: &str) -> Env {
        let pg = Postgres::start().expect("start postgres");
        let redis = Redis::start().expect("start redis");
        pg.psql("postgres", &format!("CREATE DATABASE {DB}"))
            .unwrap();
        pg.psql(DB, SEED).unwrap();
        if !sql.is_empty() {
            pg.psql(DB, sql).unwrap();
        }
        let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
        Env::start_on(pg, redis, |_| config_text(&pg_url, &redis_url, extra))
    }

    /// The seed schema and `sluice setup` on servers the test started (TLS ones, say), with
    /// the config `config(temp dir)` writes.
    pub fn start_on(pg: Postgres, redis: Redis, config: impl FnOnce(&str) -> String) -> Env {
        if pg
            .psql(
                "postgres",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{DB}'"),
            )
            .unwrap()
            .trim()
            .is_empty()
        {
            pg.psql("postgres", &format!("CREATE DATABASE {DB}"))
                .unwrap();
            pg.psql(DB, SEED).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path().to_str().unwrap());
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, text).unwrap();
        let env = Env {
            pg,
            redis,
            dir,
            config,
        };
        let out = env.sluice(&["setup"]);
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// Rewrites the config's `[redis]` section with a shorter command timeout.
    pub fn set_redis_timeout(&self, timeout: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let url = self.redis.url();
        let text = text.replace(
            &format!("url = \"{url}\"\n"),
            &format!("url = \"{url}\"\ncommand_timeout = \"{timeout}\"\n"),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn sql(&self, sql: &str) -> String {
        self.pg
            .psql(DB, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("--config")
            .arg(&self.config)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        c
    }

    pub fn sluice(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run sluice")
    }

    /// A second config in the temp dir (same servers), set up; for a second daemon.
    pub fn second_config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("second.toml");
        std::fs::write(
            &path,
            config_text(&self.pg.url_for(DB), &self.redis.url(), extra),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(&path)
            .arg("setup")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }

    /// `sluice run` in the background, its log in the temp dir.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with(&self.config)
    }

    /// `sluice run` with another config file.
    pub fn daemon_with(&self, config: &std::path::Path) -> Daemon {
        // one file per daemon: two daemons writing one file overwrite each other's lines
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = self.dir.path().join(format!("daemon-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(config)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .args(["--log-level", "sluice=debug,info", "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice run");
        Daemon {
            child,
            log: log_path,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.pg.url_for(DB), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn subscribe(&self) -> Subscriber {
        Subscriber::start(&self.redis.url()).await
    }

    /// Open dead letters as (reason, tenant or `<null>`, event id), oldest first.
    pub fn dead_letters(&self) -> Vec<(String, String, String)> {
        let json = self.sql(
            "SELECT coalesce(json_agg(json_build_array(reason, coalesce(tenant_id, '<null>'), event_id) ORDER BY id), '[]') \
             FROM sluice.dead_letter WHERE resolved_at IS NULL",
        );
        serde_json::from_str(json.trim()).unwrap()
    }

    pub fn pending(&self) -> i64 {
        self.sql("SELECT count(*) FROM sluice.pending_changes")
            .trim()
            .parse()
            .unwrap()
    }
}

pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// The last 40 lines of the daemon's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits (up to 90 s) until the daemon's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let seen = || self.log_count(needle) > 0;
        wait_until!(Duration::from_secs(90), seen, || format!(
            "no {needle:?} in the log:\n{}",
            self.log()
        ))
        .await;
    }

    /// How many times the daemon's whole log so far contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    /// The port the daemon serves HTTP on, once it listens (the tests' configs listen on
    /// `127.0.0.1:0`, so the system picks a port no other process holds).
    pub fn http_port(&self) -> u16 {
        sluice::testkit::wait_http_port(&self.log, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the daemon serves no HTTP:\n{}", self.log()))
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (waits up to 30 s).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.send_term();
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGTERM, without waiting.
    pub fn send_term(&self) {
        self.send_signal("-TERM");
    }

    /// Sends a signal (`-HUP`, `-STOP` ...) with kill(1).
    pub fn send_signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// The exit status, once it exits within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        exit_within(&mut self.child, limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// One event as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub channel: String,
    pub raw: String,
    pub event: serde_json::Value,
}

/// Records every message published on the server.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Msg>>>,
    /// Held, not read: the subscription lives as long as the subscriber.
    _client: fred::clients::SubscriberClient,
}

impl Subscriber {
    async fn start(url: &str) -> Subscriber {
        let client = Builder::from_config(fred::types::config::Config::from_url(url).unwrap())
            .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 17)
            .build_subscriber_client()
            .unwrap();
        client.init().await.unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let mut rx = client.message_rx();
        tokio::spawn(async move {
            loop {
                let m = match rx.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("the test subscriber fell {n} messages behind")
                    }
                    Err(_) => break,
                };
                let raw = m.value.as_string().unwrap_or_default();
                let event = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
                sink.lock().unwrap().push(Msg {
                    channel: m.channel.to_string(),
                    raw,
                    event,
                });
            }
        });
        client.psubscribe("*").await.unwrap();
        Subscriber {
            messages,
            _client: client,
        }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.messages.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Waits until at least `n` messages arrived; panics with `context` after `limit`.
    pub async fn wait_for(
        &self,
        n: usize,
        limit: Duration,
        context: impl Fn() -> String,
    ) -> Vec<Msg> {
        wait_until!(limit, || self.count() >= n, || format!(
            "{} of {n} events arrived\n{}",
            self.count(),
            context()
        ))
        .await;
        self.all()
    }
}

/// PostgreSQL killed and restarted under a running daemon: 50 changes before, 50 after, all
/// 100 delivered. Returns the subscriber and the daemon for more checks.
pub async fn survive_a_postgres_crash(env: &Env) -> (Subscriber, Daemon) {
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(env, 1, 50);
    sub.wait_for(50, Duration::from_secs(60), || daemon.log())
        .await;
    env.pg.kill().unwrap();
    daemon.wait_for_log("PostgreSQL is unavailable").await;
    env.pg.restart().unwrap();
    insert(env, 51, 100);
    wait_until!(Duration::from_secs(60), || distinct(&sub) == 100, || daemon
        .log())
    .await;
    (sub, daemon)
}

/// Inserts credit configurations `k<from>`..`k<to>` over five tenants, all routed to crm.
pub fn insert(env: &Env, from: i64, to: i64) {
    env.sql(&format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
         SELECT 'k' || g, 'tenant-' || (g % 5), 'crm.leads.create' FROM generate_series({from}, {to}) g"
    ));
}

/// How many different events (by `eventId`) arrived: duplicates from a replayed tail count once.
pub fn distinct(sub: &Subscriber) -> usize {
    sub.all()
        .iter()
        .map(|m| m.event["eventId"].as_str().unwrap_or_default().to_string())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Sends one command to Redis over a plain socket and returns the reply's first line.
pub fn redis_command(port: u16, args: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut frame = format!("*{}\r\n", args.len());
    for a in args {
        frame.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(frame.as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line
}

/// Everything published before now has reached `sub`: a fence message is published and
/// waited for (one connection's messages arrive in order); returns the events without it.
pub async fn fenced(env: &Env, sub: &Subscriber) -> Vec<Msg> {
    redis_command(env.redis.port(), &["PUBLISH", "test:fence:0", "fence"]);
    wait_until!(
        Duration::from_secs(30),
        || sub.all().iter().any(|m| m.channel == "test:fence:0"),
        || "the fence never arrived".into()
    )
    .await;
    sub.all()
        .into_iter()
        .filter(|m| m.channel != "test:fence:0")
        .collect()
}

/// Restarts Redis just after one of the daemon's publish retries failed, then subscribes: the
/// subscriber is in place before the next retry (one backoff later) publishes what was held.
/// Pub/sub keeps nothing for a subscriber that is not there yet, so racing the retry would
/// lose messages for the test, not for the daemon.
pub async fn restart_redis_after_a_retry(env: &mut Env, daemon: &Daemon) -> Subscriber {
    const RETRY: &str = "Redis still unavailable; publish retry scheduled";
    let seen = daemon.log_count(RETRY);
    wait_until!(
        Duration::from_secs(30),
        || daemon.log_count(RETRY) > seen,
        || daemon.log()
    )
    .await;
    env.redis.restart().unwrap();
    env.subscribe().await
}
