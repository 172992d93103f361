//! Failover slots, PostgreSQL 17+ (on older servers each test returns at once; run it with
//! `SLUICE_TEST_PG=17` or `scripts/test-matrix`). A primary and a physical standby with
//! `sync_replication_slots = on`: Sluice streams through a URL that lists both hosts with
//! `target_session_attrs=read-write`, the standby is promoted and the old primary stopped, and
//! every change is delivered, each once on its recoverable channel. And the stall: an inactive
//! standby slot in `synchronized_standby_slots` holds decoding back, which `sluice check` and
//! `/readyz` name; removing it lets the change through.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{config_text, insert, wait_until, Env, Subscriber, DB};
use sluice::testkit::{Postgres, Redis};

const WAIT: Duration = Duration::from_secs(60);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"\n\
    [delivery]\nmax_backoff = \"1s\"";

/// A primary on 17+, or `None` (and a note) on an older server.
fn primary() -> Option<Postgres> {
    let pg = Postgres::start().unwrap();
    if pg.version_num().unwrap() < 170000 {
        eprintln!("failover slots need PostgreSQL 17+; skipped (SLUICE_TEST_PG=17 runs it)");
        return None;
    }
    Some(pg)
}

/// `GET /readyz` on `port`: (status, body).
fn readyz(port: u16) -> (u16, String) {
    let ask = || -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok());
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((code.unwrap_or(0), body.to_string()))
    };
    ask().unwrap_or_else(|e| (0, e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_standby_slot_in_synchronized_standby_slots_is_named_by_check_and_readyz() {
    let Some(pg) = primary() else { return };
    pg.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('gone_standby', true)",
    )
    .unwrap();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronized_standby_slots = 'gone_standby'",
    )
    .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let redis = Redis::start().unwrap();
    let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
    // config_text listens on 127.0.0.1:0; the daemon's log says which port it got
    let env = Env::start_on(pg, redis, |_| config_text(&pg_url, &redis_url, LOGICAL));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let port = daemon.http_port();
    insert(&env, 1, 1);
    let body = std::cell::RefCell::new(String::new());
    wait_until!(
        WAIT,
        || {
            let (code, text) = readyz(port);
            *body.borrow_mut() = text;
            code == 503 && body.borrow().contains("gone_standby (inactive)")
        },
        || format!("/readyz: {}\n{}", body.borrow(), daemon.log())
    )
    .await;
    assert_eq!(sub.count(), 0, "decoding is held back");
    let check = env.sluice(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARN") && l.contains("gone_standby (inactive)")),
        "{text}"
    );
    env.sql("ALTER SYSTEM RESET synchronized_standby_slots");
    env.sql("SELECT pg_reload_conf()");
    sub.wait_for(1, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || readyz(port).0 == 200, || readyz(port).1).await;
}

/// The slot's confirmed position on `pg`, as a number (0 when it has none).
fn confirmed(pg: &Postgres) -> u64 {
    let q = "SELECT coalesce(confirmed_flush_lsn - '0/0', 0)::bigint FROM pg_replication_slots WHERE slot_name = 'sluice'";
    pg.psql("postgres", q).unwrap().trim().parse().unwrap_or(0)
}

/// Every channel numbered 1, 2, 3 ... once, and every record once: nothing published twice.
fn assert_once(sub: &Subscriber) -> usize {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut records = HashSet::new();
    for m in sub.all() {
        seqs.entry(m.channel.clone())
            .or_default()
            .push(m.event["seq"].as_u64().unwrap());
        let id = m.event["recordId"].as_str().unwrap().to_string();
        assert!(records.insert(id.clone()), "{id} published twice");
    }
    for (channel, s) in &seqs {
        let want: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, &want, "{channel}");
    }
    records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_promotion_sluice_goes_on_from_the_synchronised_slot_on_the_new_primary() {
    let Some(pg) = primary() else { return };
    pg.psql("postgres", &format!("CREATE DATABASE {DB}"))
        .unwrap();
    pg.psql(DB, common::SEED).unwrap();
    let standby = pg
        .start_standby(
            "standby1",
            DB,
            &[
                ("hot_standby_feedback", "on"),
                ("sync_replication_slots", "on"),
            ],
        )
        .unwrap();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'",
    )
    .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let redis = Redis::start().unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{DB}?target_session_attrs=read-write",
        pg.port(),
        standby.port()
    );
    let redis_url = redis.url();
    let env = Env::start_on(pg, redis, |_| config_text(&url, &redis_url, LOGICAL));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(&env, 1, 500);
    sub.wait_for(500, WAIT, || daemon.log()).await;
    // The standby's copy of the slot catches up with what Sluice confirmed.
    let target = confirmed(&env.pg);
    wait_until!(WAIT, || confirmed(&standby) >= target, || {
        standby
            .psql("postgres", "SELECT * FROM pg_replication_slots")
            .unwrap_or_default()
    })
    .await;
    let check = env.sluice(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    let line = format!(
        "ok   slot sluice: standby 127.0.0.1:{} synchronises it",
        standby.port()
    );
    assert!(text.contains(&line), "{text}");
    // Published, maybe not yet synchronised: after the promotion these may be read again.
    insert(&env, 501, 1000);
    sub.wait_for(1000, WAIT, || daemon.log()).await;
    standby.promote().unwrap();
    env.pg.stop().unwrap();
    let started = Instant::now();
    standby
        .psql(DB, "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) SELECT 'k' || g, 'tenant-' || (g % 5), 'crm.leads.create' FROM generate_series(1001, 1500) g")
        .unwrap();
    sub.wait_for(1500, WAIT, || daemon.log()).await;
    eprintln!(
        "the changes on the new primary arrived {:?} after the promotion",
        started.elapsed()
    );
    assert_eq!(assert_once(&sub), 1500);
}
