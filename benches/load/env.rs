//! One mode's servers: a throwaway PostgreSQL and Redis (`sluice::testkit`, free ports; the
//! machine's own 5432/6379 are never touched), database `app` with tests/fixtures/seed.sql, a
//! config for public.credit_configurations in that mode, `sluice setup` applied, and a
//! connection for polling. Each mode gets its own servers, so one mode's WAL, slots and
//! change_log never weigh on the other's figures.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use sluice::source::lsn;
use sluice::testkit::{PgOptions, Postgres, Redis};

use crate::knobs::Mode;

const DB: &str = "app";
const SEED: &str = include_str!("../../tests/fixtures/seed.sql");

/// Operation codes cycle through the three apps, so each row is exactly one event.
pub const CODES: &str =
    "ARRAY['crm.leads.create', 'hrms.leave.approve', 'finance.invoice.generate']";

pub struct Env {
    pub mode: Mode,
    pub pg: Postgres,
    pub redis: Redis,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    pub rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// The next free config_id number: sections never write the same key twice.
    next_id: Cell<u64>,
}

/// A backlog written while no daemon ran.
pub struct Backlog {
    pub rows: u64,
    /// `pg_current_wal_lsn()` after it.
    pub end_lsn: u64,
    /// Trigger mode: the newest xid and id of the change_log rows it wrote.
    pub last_row: Option<(String, i64)>,
}

fn config_text(mode: Mode, pg: &str, redis: &str) -> String {
    let source = match mode {
        // status_interval: an idle tail is confirmed promptly, so "confirmed" means "published".
        Mode::Logical => "mode = \"logical\"\nstatus_interval = \"100ms\"",
        Mode::Trigger => "mode = \"trigger\"",
    };
    format!(
        r#"[postgres]
url = "{pg}"
[redis]
url = "{redis}"
[source]
{source}
batch_size = 1000
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

impl Env {
    /// Servers, the seed schema, the config, `sluice setup`, and a connection for polling.
    pub fn start(mode: Mode, pg_settings: &[(String, String)]) -> Env {
        let pg = Postgres::start_with(&PgOptions {
            settings: pg_settings.to_vec(),
            files: vec![],
        })
        .expect("start postgres");
        let redis = Redis::start().expect("start redis");
        pg.psql("postgres", &format!("CREATE DATABASE {DB}"))
            .unwrap();
        pg.psql(DB, SEED).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sluice-load-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, config_text(mode, &pg.url_for(DB), &redis.url())).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(
                &pg.url_for(DB),
                tokio_postgres::NoTls,
            ))
            .unwrap();
        rt.spawn(conn);
        let env = Env {
            mode,
            pg,
            redis,
            dir,
            config,
            rt,
            client,
            next_id: Cell::new(0),
        };
        let out = env
            .sluice_cmd()
            .arg("setup")
            .output()
            .expect("run sluice setup");
        assert!(
            out.status.success(),
            "sluice setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// Copies the server's log to `path`.
    pub fn keep_server_log(&self, path: &std::path::Path) {
        if let Err(e) = std::fs::copy(self.pg.log_path(), path) {
            eprintln!("could not copy the server log to {}: {e}", path.display());
        }
    }

    pub fn psql(&self, sql: &str) -> String {
        self.pg
            .psql(DB, sql)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string()
    }

    pub fn url(&self) -> String {
        self.pg.url_for(DB)
    }

    pub fn redis_addr(&self) -> String {
        self.redis.url().trim_start_matches("redis://").to_string()
    }

    fn sluice_cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("--config")
            .arg(&self.config)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        c
    }

    /// `sluice run`, its log in the temp dir (see [`Env::daemon_log`]).
    pub fn spawn_daemon(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        self.sluice_cmd()
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice run")
    }

    /// The last 30 lines of the latest daemon's log.
    pub fn daemon_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Hands out `n` fresh config_id numbers.
    pub fn take_ids(&self, n: u64) -> u64 {
        let from = self.next_id.get();
        self.next_id.set(from + n);
        from
    }

    /// `rows` INSERTs in transactions of `txn` rows, while no daemon runs.
    pub fn backlog(&self, rows: u64, txn: u64) -> Backlog {
        let from = self.take_ids(rows);
        let mut sql = String::new();
        for lo in (from..from + rows).step_by(txn as usize) {
            let hi = (lo + txn).min(from + rows) - 1;
            sql.push_str(&format!(
                "BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) \
                 SELECT 'k' || g, 'tenant-' || g % 50, ({CODES})[1 + g % 3], (g % 1000) / 100.0, jsonb_build_object('g', g) \
                 FROM generate_series({lo}, {hi}) g; COMMIT;\n"
            ));
        }
        let started = Instant::now();
        self.psql(&sql);
        let end_lsn = lsn::parse(&self.psql("SELECT pg_current_wal_lsn()::text")).expect("an LSN");
        let last_row = (self.mode == Mode::Trigger).then(|| {
            let row = self.psql("SELECT max(xid)::text || ' ' || max(id) FROM sluice.change_log");
            let (xid, id) = row.split_once(' ').expect("change_log has rows");
            (xid.to_string(), id.parse().expect("an id"))
        });
        println!(
            "  backlog of {rows} rows written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Backlog {
            rows,
            end_lsn,
            last_row,
        }
    }

    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> tokio_postgres::Row {
        self.rt
            .block_on(self.client.query_one(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A slot's confirmed position and the pid of the walsender streaming it.
    pub fn slot(&self, name: &str) -> (u64, Option<u32>) {
        let q = "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = $1";
        let row = self.query_one(q, &[&name]);
        let (confirmed, pid): (Option<String>, Option<i32>) = (row.get(0), row.get(1));
        (
            confirmed.as_deref().and_then(lsn::parse).unwrap_or(0),
            pid.map(|p| p as u32),
        )
    }

    /// Drops the slot if it exists; creates a fresh pgoutput one when `create`.
    pub fn reset_slot(&self, name: &str, create: bool) {
        self.psql(&format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}'"));
        if create {
            self.psql(&format!(
                "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
            ));
        }
    }

    /// Trigger mode: the checkpoint covers the backlog's newest row (`xid`, `id`), so every
    /// backlog row is published: sluice.pending_changes's test, on the newest row only. Its
    /// transaction is visible in `done`, or in the round in progress through `id`. (The
    /// daemon stores `done` after an empty read only every few seconds, so the round is
    /// where a drained backlog shows first.)
    pub fn checkpoint_covers(&self, (xid, id): &(String, i64)) -> bool {
        let q = "SELECT pg_visible_in_snapshot($1::text::xid8, done) \
                 OR coalesce(pg_visible_in_snapshot($1::text::xid8, round) AND round_after >= $2, false) \
                 FROM sluice.checkpoint WHERE name = 'change_log'";
        self.query_one(q, &[xid, id])
            .get::<_, Option<bool>>(0)
            .unwrap_or(false)
    }

    /// Rows of sluice.pending_changes (a full scan: for checks after timing, not for polling).
    pub fn pending(&self) -> i64 {
        self.psql("SELECT count(*) FROM sluice.pending_changes")
            .parse()
            .expect("a count")
    }

    /// pg_recvlogical of the server's own BINDIR.
    pub fn pg_recvlogical(&self) -> PathBuf {
        PathBuf::from(self.psql("SELECT setting FROM pg_config WHERE name = 'BINDIR'"))
            .join("pg_recvlogical")
    }
}
