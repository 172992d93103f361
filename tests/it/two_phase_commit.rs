//! Two-phase commit on captured tables in trigger mode, on a server that allows prepared
//! transactions: `PREPARE TRANSACTION` works (the capture trigger sends no NOTIFY there), a
//! prepared transaction committed later is delivered (by the daemon's poll), one rolled back
//! never is, and the `sluice.notify` setting overrides the rule both ways.

use std::time::Duration;

use crate::common::{config_text, fenced, wait_until, Env, DB};
use sluice::testkit::{PgOptions, Postgres, Redis};

const WAIT: Duration = Duration::from_secs(30);

/// Trigger mode on a server started with `max_prepared_transactions = 10`.
fn start() -> Env {
    let settings = vec![("max_prepared_transactions".to_string(), "10".to_string())];
    let pg = Postgres::start_with(&PgOptions {
        settings,
        ..PgOptions::default()
    })
    .unwrap();
    let redis = Redis::start().unwrap();
    let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
    Env::start_on(pg, redis, |_| config_text(&pg_url, &redis_url, ""))
}

/// An INSERT of credit configuration `id`, routed to `crm:t1:credit-configs`.
fn insert(id: &str) -> String {
    format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('{id}', 't1', 'crm.leads.create')"
    )
}

/// `BEGIN; <sql>; PREPARE TRANSACTION '<gid>'` in one session.
fn prepare(env: &Env, gid: &str, sql: &str) -> std::io::Result<String> {
    env.pg
        .psql(DB, &format!("BEGIN; {sql}; PREPARE TRANSACTION '{gid}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_delivered_once_committed_and_never_when_rolled_back() {
    let env = start();
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    prepare(&env, "kept", &insert("prepared")).unwrap();
    prepare(&env, "dropped", &insert("rolled-back")).unwrap();
    env.sql("COMMIT PREPARED 'kept'");
    env.sql("ROLLBACK PREPARED 'dropped'");
    env.sql(&insert("after"));
    sub.wait_for(2, WAIT, || daemon.log()).await;
    let msgs = fenced(&env, &sub).await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["prepared", "after"]);
    assert_eq!(msgs[0].channel, "crm:t1:credit-configs");
    wait_until!(WAIT, || env.pending() == 0, || {
        "change_log rows still pending".into()
    })
    .await;
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_notify_on_brings_the_notify_back_and_set_local_off_lets_one_transaction_prepare() {
    let env = start();
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql(&format!("ALTER DATABASE {DB} SET sluice.notify = 'on'"));
    let refused = prepare(&env, "notified", &insert("refused"))
        .unwrap_err()
        .to_string();
    assert!(
        refused
            .contains("cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY"),
        "{refused}"
    );
    prepare(
        &env,
        "quiet",
        &format!("SET LOCAL sluice.notify = 'off'; {}", insert("quiet")),
    )
    .unwrap();
    env.sql("COMMIT PREPARED 'quiet'");
    let msgs = sub.wait_for(1, WAIT, || daemon.log()).await;
    assert_eq!(msgs[0].event["recordId"], "quiet");
}
