//! What differs between PostgreSQL versions, on the server `SLUICE_TEST_PG` selects
//! (`scripts/test-matrix` runs this file on 13 to 18): the server is the one asked for, and
//! the replication connection knows its version (pgoutput's `messages` option exists from 14);
//! a transaction larger than `logical_decoding_work_mem` arrives whole and an aborted one never
//! (Sluice does not ask for streaming of in-progress transactions, 14+); stored generated
//! columns reach logical-mode events from 18 on, and `check` says when they cannot; a
//! logical-mode backfill needs 14; `setup` makes a failover slot from 17 on.

use std::time::Duration;

use crate::common::{config_text, Env, DB};
use sluice::source::replication::ReplicationConn;
use sluice::testkit::{selected_major, PgOptions, Postgres, Redis};

const WAIT: Duration = Duration::from_secs(60);
const LOGICAL: &str = "mode = \"logical\"";

fn major(env: &Env) -> u32 {
    env.pg.version_num().unwrap() / 10000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_the_selected_version_and_the_stream_knows_it() {
    let pg = Postgres::start().unwrap();
    let version = pg.version_num().unwrap();
    if let Some(wanted) = selected_major().unwrap() {
        assert_eq!(version / 10000, wanted, "SLUICE_TEST_PG={wanted}");
    }
    let conn = ReplicationConn::connect(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(conn.server_major(), Some(version / 10000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_logical_decoding_work_mem_arrives_whole_and_an_aborted_one_never() {
    let settings = vec![("logical_decoding_work_mem".into(), "64kB".into())];
    let pg = Postgres::start_with(&PgOptions {
        settings,
        ..PgOptions::default()
    })
    .unwrap();
    let redis = Redis::start().unwrap();
    let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
    let env = Env::start_on(pg, redis, |_| config_text(&pg_url, &redis_url, LOGICAL));
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let rows = "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, meta) \
        SELECT '{p}' || g, 't1', 'crm.leads.create', jsonb_build_object('pad', repeat('x', 200)) \
        FROM generate_series(1, 3000) g";
    env.sql(&format!(
        "BEGIN; {}; ROLLBACK;",
        rows.replace("{p}", "gone-")
    ));
    env.sql(&rows.replace("{p}", "kept-"));
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('last', 't1', 'crm.a')");
    let msgs = sub.wait_for(3001, WAIT, || daemon.log()).await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3001, "nothing more: {:?}", &ids[3000..]);
    assert!(ids[..3000].iter().all(|id| id.starts_with("kept-")));
    assert_eq!(ids[3000], "last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_generated_columns_reach_logical_events_from_18_and_check_says_when_not() {
    let generated = "ALTER TABLE credit_configurations ADD COLUMN doubled numeric \
        GENERATED ALWAYS AS (credit_cost * 2) STORED";
    let env = Env::start_with(generated, LOGICAL);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) VALUES ('g', 't1', 'crm.a', 2.50)");
    let msgs = sub.wait_for(1, WAIT, || daemon.log()).await;
    let data = &msgs[0].event["data"];
    let check = env.sluice(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    let warning = text
        .lines()
        .find(|l| l.starts_with("WARN") && l.contains("generated column(s) doubled"));
    if major(&env) >= 18 {
        assert_eq!(data["doubled"].as_f64(), Some(5.0), "{data}");
        assert!(warning.is_none(), "{text}");
    } else {
        assert!(data.get("doubled").is_none(), "{data}");
        assert!(warning.is_some(), "check names the column:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_backfill_needs_14_and_setup_makes_a_failover_slot_from_17() {
    let env = Env::start(LOGICAL);
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('b', 't1', 'crm.a')");
    let out = env.sluice(&["backfill", "--table", "public.credit_configurations"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let major = major(&env);
    if major >= 14 {
        assert!(out.status.success(), "{stderr}");
    } else {
        assert!(!out.status.success());
        assert!(stderr.contains("needs PostgreSQL 14"), "{stderr}");
    }
    if major >= 17 {
        let failover =
            env.sql("SELECT failover FROM pg_replication_slots WHERE slot_name = 'sluice'");
        assert_eq!(failover.trim(), "t", "setup makes a failover slot");
    }
}
