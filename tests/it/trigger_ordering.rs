//! The change_log reader neither skips a late-committing transaction nor reorders one
//! record's changes, even while a long transaction holds the xmin horizon back.

use std::time::Duration;

use crate::common::{Env, Msg};
use tokio_postgres::Client;

const WAIT: Duration = Duration::from_secs(30);

fn costs_of(msgs: &[Msg], id: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.event["recordId"] == id && m.event["operation"] == "UPDATE")
        .map(|m| m.event["data"]["credit_cost"].to_string())
        .collect()
}

async fn xid(c: &Client) -> String {
    c.query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_committing_after_a_higher_id_is_still_published() {
    let env = Env::start("");
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let (t1, t2) = (env.client().await, env.client().await);
    t1.batch_execute("BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('early', 't1', 'crm.a')").await.unwrap();
    t2.batch_execute("BEGIN; INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('late', 't1', 'crm.a'); COMMIT").await.unwrap();
    let first = sub.wait_for(1, WAIT, || daemon.log()).await;
    assert_eq!(first[0].event["recordId"], "late");
    // the reader has now published a row with a higher id than t1's: t1 must not be skipped
    t1.batch_execute("COMMIT").await.unwrap();
    let all = sub.wait_for(2, WAIT, || daemon.log()).await;
    assert_eq!(all[1].event["recordId"], "early");
    assert!(all[0].event["source"]["id"].as_i64() > all[1].event["source"]["id"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_straddling_the_xmin_horizon_is_published_in_order() {
    let env = Env::start("");
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) VALUES ('r', 't1', 'crm.a', 1)");
    let (a, b, long) = (env.client().await, env.client().await, env.client().await);
    b.batch_execute("BEGIN").await.unwrap();
    let xb = xid(&b).await; // B takes its xid first
    long.batch_execute("BEGIN").await.unwrap();
    let xl = xid(&long).await; // then a long transaction, which will hold xmin
    a.batch_execute(
        "BEGIN; UPDATE credit_configurations SET credit_cost = 10 WHERE config_id = 'r'",
    )
    .await
    .unwrap();
    let xa = xid(&a).await; // A takes a later xid, updates r, commits
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute(
        "UPDATE credit_configurations SET credit_cost = 20 WHERE config_id = 'r'; COMMIT",
    )
    .await
    .unwrap();
    let (xb, xl, xa): (u64, u64, u64) = (
        xb.parse().unwrap(),
        xl.parse().unwrap(),
        xa.parse().unwrap(),
    );
    assert!(
        xb < xl && xl < xa,
        "the straddle: B {xb} < long {xl} < A {xa}"
    );

    // started now, the daemon finds A and B in one backlog: both must arrive while the long
    // transaction is still open, A's (older) value first
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let msgs = sub.wait_for(3, WAIT, || daemon.log()).await;
    assert_eq!(costs_of(&msgs, "r"), ["10.0", "20.0"]);
    long.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_the_same_rows_are_published_in_commit_order() {
    let env = Env::start("batch_size = 7");
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) \
             SELECT 'row' || g, 't1', 'crm.a', 0 FROM generate_series(1, 3) g",
    );
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    let long = env.client().await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = env.client().await;
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                let row = format!("row{}", (w + i) % 3 + 1);
                client
                    .execute("UPDATE credit_configurations SET credit_cost = credit_cost + 1 WHERE config_id = $1", &[&row])
                    .await
                    .unwrap();
            }
        }));
        if w == 1 {
            long.batch_execute("BEGIN; SELECT pg_current_xact_id()")
                .await
                .unwrap(); // hold xmin mid-run
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let msgs = sub.wait_for(3 + 160, WAIT, || daemon.log()).await;
    let mut total = 0;
    for row in ["row1", "row2", "row3"] {
        let costs: Vec<f64> = costs_of(&msgs, row)
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let expected: Vec<f64> = (1..=costs.len()).map(|n| n as f64).collect();
        assert_eq!(costs, expected, "{row}: every increment once, in order");
        total += costs.len();
    }
    assert_eq!(total, 160);
    long.batch_execute("COMMIT").await.unwrap();
}
