//! Faults injected for real: Redis and PostgreSQL restarted under the daemon, SIGTERM, a
//! standby taking over, and retention pruning.

use std::time::Duration;

use crate::common::{
    distinct, insert, redis_command, restart_redis_after_a_retry, wait_until, Env,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_20s_holds_changes_and_nothing_is_lost_or_dead_lettered() {
    let mut env = Env::start("[delivery]\ninitial_backoff = \"3s\"\nmax_backoff = \"3s\"");
    env.set_redis_timeout("1s");
    let daemon = env.daemon();
    daemon.wait_for_log("connected to PostgreSQL").await;
    env.redis.stop().unwrap();
    // The outage lasts 20 s (the fault itself, not a wait for a result); changes keep coming.
    let back_at = tokio::time::Instant::now() + Duration::from_secs(20);
    insert(&env, 1, 300);
    daemon.wait_for_log("Redis is unavailable").await;
    tokio::time::sleep_until(back_at - Duration::from_secs(10)).await;
    insert(&env, 301, 600);
    tokio::time::sleep_until(back_at).await;
    assert_eq!(
        env.pending(),
        600,
        "nothing is marked processed while Redis is down"
    );
    assert!(
        env.dead_letters().is_empty(),
        "Redis being down is no reason to dead-letter"
    );
    let sub = restart_redis_after_a_retry(&mut env, &daemon).await;
    wait_until!(WAIT, || distinct(&sub) == 600, || format!(
        "{} of 600\n{}",
        sub.count(),
        daemon.log()
    ))
    .await;
    wait_until!(WAIT, || env.pending() == 0, || daemon.log()).await;
    assert!(env.dead_letters().is_empty());
    assert!(daemon.log().contains("Redis is reachable again"));
    let last_error = env.sql("SELECT last_error FROM sluice.checkpoint WHERE name = 'change_log' AND last_error_at > now() - interval '5 min'");
    assert!(
        last_error.contains("Redis unavailable"),
        "status keeps the last error: {last_error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_is_survived() {
    let env = Env::start("");
    let (_sub, daemon) = crate::common::survive_a_postgres_crash(&env).await;
    wait_until!(WAIT, || env.pending() == 0, || daemon.log()).await;
    let last_error = env.sql("SELECT last_error FROM sluice.checkpoint WHERE name = 'change_log'");
    assert!(
        last_error.contains("PostgreSQL unavailable"),
        "status keeps the last error: {last_error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_restart_publishes_no_duplicate() {
    let env = Env::start("");
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    insert(&env, 1, 500);
    sub.wait_for(500, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.pending() == 0, || daemon.log()).await;
    let status = daemon.terminate().expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("sluice stopped"));
    let again = env.daemon();
    insert(&env, 501, 501);
    // a re-published batch would come before the new change, which has the highest id
    let msgs = sub.wait_for(501, WAIT, || again.log()).await;
    assert_eq!(msgs.len(), 501, "no duplicate after a clean stop");
    assert_eq!(msgs[500].event["recordId"], "k501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stuck_on_redis_ends_at_shutdown_timeout_and_loses_nothing() {
    let env = Env::start("[delivery]\nshutdown_timeout = \"2s\"");
    env.set_redis_timeout("60s");
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    insert(&env, 1, 10);
    sub.wait_for(10, WAIT, || daemon.log()).await;
    let batches = || daemon.log().matches("batch read; publishing").count();
    let before = batches();
    // PUBLISH blocks while clients are paused for writes: the batch stays in flight.
    redis_command(env.redis.port(), &["CLIENT", "PAUSE", "20000", "WRITE"]);
    insert(&env, 11, 20);
    wait_until!(WAIT, || batches() > before, || daemon.log()).await;
    let asked = std::time::Instant::now();
    let status = daemon.terminate().expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "took {:?}",
        asked.elapsed()
    );
    redis_command(env.redis.port(), &["CLIENT", "UNPAUSE"]);
    let _again = env.daemon();
    wait_until!(WAIT, || distinct(&sub) == 20, || format!(
        "{} of 20",
        distinct(&sub)
    ))
    .await;
    wait_until!(WAIT, || env.pending() == 0, String::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_active_daemon_dies() {
    let env = Env::start("");
    let sub = env.subscribe().await;
    let mut active = env.daemon();
    insert(&env, 1, 10);
    sub.wait_for(10, WAIT, || active.log()).await;
    let standby = env.daemon();
    wait_until!(WAIT, || standby.log().contains("standby"), || standby.log()).await;
    active.sigkill();
    insert(&env, 11, 20);
    wait_until!(WAIT, || distinct(&sub) == 20, || standby.log()).await;
    assert!(standby.log().contains("took over"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_pruned_after_the_retention() {
    let env = Env::start("retention = \"1s\"");
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(&env, 1, 20);
    sub.wait_for(20, WAIT, || daemon.log()).await;
    wait_until!(
        WAIT,
        || env.sql("SELECT count(*) FROM sluice.change_log").trim() == "0",
        || daemon.log()
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_redis_keeps_rejecting_is_dead_lettered_after_max_attempts_and_holds_nothing_back()
{
    let env = Env::start(
        "[delivery]\nmax_attempts = 3\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"",
    );
    // a Redis user that may publish only on crm:* channels
    let reply = redis_command(
        env.redis.port(),
        &[
            "ACL",
            "SETUSER",
            "publisher",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "&crm:*",
            "+@all",
        ],
    );
    assert!(reply.starts_with("+OK"), "{reply}");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("redis://127.0.0.1:", "redis://publisher:pw@127.0.0.1:");
    std::fs::write(&env.config, text).unwrap();
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES \
         ('first', 't1', 'crm.a'), ('poison', 't1', 'hrms.payroll.process'), ('after', 't1', 'crm.b')",
    );
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    env.sql("INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES ('later', 't1', 'crm.c')");
    let msgs = sub.wait_for(3, WAIT, || daemon.log()).await;
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| m.event["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["first", "after", "later"]);
    let row = env.sql("SELECT reason || '|' || attempts || '|' || channel || '|' || error FROM sluice.dead_letter");
    // the ACL's refusal, as Redis words it for a PUBLISH inside the channel script
    assert!(
        row.starts_with("publish_rejected|3|hrms:t1:credit-configs|PUBLISH: ")
            && (row.contains("NOPERM") || row.contains("can't publish to the channel")),
        "{row}"
    );
    assert_eq!(env.pending(), 0);
}
