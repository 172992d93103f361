//! One bad row or one bad server never stops or hangs the daemon, on real servers: poison
//! values and unsafe ids are parked with their reason while every change around them arrives;
//! a payload `jsonb` cannot hold is parked as text and replays byte for byte; a Redis demoted
//! to a replica is noticed and waited out; a Redis outage longer than `wal_sender_timeout`
//! does not cost the replication connection; a blackholed PostgreSQL is noticed within
//! seconds, and nothing is lost.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::{redis_command, wait_until, ConfigText, Env, DB, SEED};
use sluice::testkit::{free_port, Postgres, Proxy, Redis};

const WAIT: Duration = Duration::from_secs(30);
const LOGICAL: &str = "mode = \"logical\"\nheartbeat_interval = \"1s\"\nstatus_interval = \"1s\"";
const TRIGGER: &str = "mode = \"trigger\"";

/// Columns named like the capture trigger's table aliases (`n`, `x`, `o`) must not stand in for
/// the row.
const THINGS: &str =
    "CREATE TABLE things (id text PRIMARY KEY, tenant_id text, code text, doc json, note text, \
    n int DEFAULT 1, x int DEFAULT 2, o int DEFAULT 3);";

/// One route, `things`, whose cache key names `{id}`.
const ROUTE: &str = r#"[[tables]]
table = "public.things"
type = "things"
tenant = "tenant_id"
app = { operation_code = "code" }
invalidate = ["thing:{tenant}:{id}"]
"#;

/// The tests' config with the `things` route only, in `mode`, quick to give up on PostgreSQL
/// and to retry Redis, with more `apps`.
fn config(pg: &str, redis: &str, mode: &str, apps: &str) -> String {
    ConfigText::new(pg, redis)
        .postgres("query_timeout = \"2s\"\nconnect_timeout = \"2s\"")
        .extra(&format!("{mode}\n[delivery]\nmax_backoff = \"1s\""))
        .apps(apps)
        .routes(ROUTE)
        .text()
}

/// Servers with database `app` (created with `create`), the seed, `things`, and setup done.
fn start(create: &str, mode: &str) -> Env {
    let (pg, redis) = (Postgres::start().unwrap(), Redis::start().unwrap());
    pg.psql("postgres", &format!("CREATE DATABASE {DB} {create}"))
        .unwrap();
    pg.psql(DB, SEED).unwrap();
    pg.psql(DB, THINGS).unwrap();
    let (url, redis_url) = (pg.url_for(DB), redis.url());
    Env::start_on(pg, redis, |_| config(&url, &redis_url, mode, ""))
}

fn thing(env: &Env, id: &str, tenant: &str, code: &str, doc: &str, note: &str) {
    env.sql(&format!(
        "INSERT INTO things VALUES ({id}, {tenant}, {code}, {doc}, {note})"
    ));
}

/// Things `k<from>`..`k<to>` of tenant t1, all routed to crm.
fn things(env: &Env, from: i64, to: i64) {
    env.sql(&format!(
        "INSERT INTO things SELECT 'k' || g, 't1', 'crm.things.create', '{{}}', 'x' FROM generate_series({from}, {to}) g"
    ));
}

fn ids(sub: &common::Subscriber) -> Vec<String> {
    sub.all()
        .iter()
        .filter_map(|m| m.event["data"]["id"].as_str().map(String::from))
        .collect()
}

async fn poison_rows_are_parked_and_the_rest_flow(mode: &str) {
    let env = start("", mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    thing(&env, "'a'", "'t1'", "'crm.things.create'", "'{}'", "'ok'");
    thing(
        &env,
        "'x:tb:things'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        "'key'",
    );
    thing(&env, "'b'", "'t1'", "'crm.things.create'", "'{}'", "'ok'");
    sub.wait_for(2, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 1, || format!(
        "{:?}\n{}",
        env.dead_letters(),
        daemon.log()
    ))
    .await;
    assert_eq!(ids(&sub), ["a", "b"]);
    let data = &sub.all()[0].event["data"];
    assert_eq!(
        (data["n"].as_i64(), data["x"].as_i64(), data["o"].as_i64()),
        (Some(1), Some(2), Some(3)),
        "{data}"
    );
    let (reason, tenant, _) = &env.dead_letters()[0];
    assert_eq!((reason.as_str(), tenant.as_str()), ("invalid_key", "t1"));
    let error = env.sql("SELECT error FROM sluice.dead_letter WHERE reason = 'invalid_key'");
    assert!(
        error.contains("x:tb:things"),
        "the error names the id: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_id_is_parked_as_invalid_key_in_trigger_mode() {
    poison_rows_are_parked_and_the_rest_flow(TRIGGER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_id_is_parked_as_invalid_key_in_logical_mode() {
    poison_rows_are_parked_and_the_rest_flow(LOGICAL).await;
}

/// A `json` value with `\u0000` fits no `jsonb`: parked as text, replayed byte for byte once
/// its app exists. (Trigger mode cannot carry it at all: `to_jsonb` fails the writer's own
/// statement, before Sluice sees anything.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_jsonb_cannot_hold_is_parked_as_text_and_replays_byte_for_byte() {
    let env = start("", LOGICAL);
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    thing(
        &env,
        "'n1'",
        "'t1'",
        "'zzz.things.create'",
        r#"'{"v": "nul\u0000here"}'"#,
        "'x'",
    );
    thing(
        &env,
        "'ok'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        "'after'",
    );
    sub.wait_for(1, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 1, || daemon.log()).await;
    assert_eq!(env.dead_letters()[0].0, "unroutable");
    let stored = env.sql("SELECT payload IS NULL, payload_text FROM sluice.dead_letter");
    assert!(
        stored.starts_with("t|") && stored.contains(r#""doc":{"v":"nul\u0000here"}"#),
        "{stored}"
    );
    assert!(daemon.terminate().expect("stops").success());

    let (url, redis) = (env.pg.url_for(DB), env.redis.url());
    std::fs::write(
        &env.config,
        config(&url, &redis, LOGICAL, "zzz = { prefixes = [\"zzz.\"] }"),
    )
    .unwrap();
    let out = env.sluice(&["replay", "dead-letters"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = sub
        .wait_for(2, WAIT, || {
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .await;
    let replayed = all
        .iter()
        .find(|m| m.channel == "zzz:t1:things")
        .expect("replayed on the new app's channel");
    assert!(
        replayed.raw.contains(r#""doc":{"v":"nul\u0000here"}"#),
        "{}",
        replayed.raw
    );
}

/// Invalid UTF-8 in a `SQL_ASCII` database: the row is parked as `unconvertible_value` naming
/// the column; rows before and after arrive.
async fn invalid_utf8_is_parked(mode: &str, column: &str) {
    let env = start(
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        mode,
    );
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    thing(
        &env,
        "'a'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        "'before'",
    );
    thing(
        &env,
        "'bad'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        r"E'caf\xe9'",
    );
    thing(
        &env,
        "'b'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        "'after'",
    );
    sub.wait_for(2, WAIT, || daemon.log()).await;
    wait_until!(WAIT, || env.dead_letters().len() == 1, || format!(
        "{:?}\n{}",
        env.dead_letters(),
        daemon.log()
    ))
    .await;
    assert_eq!(ids(&sub), ["a", "b"]);
    assert_eq!(env.dead_letters()[0].0, "unconvertible_value");
    let error = env.sql("SELECT error FROM sluice.dead_letter");
    assert!(
        error.contains(column),
        "the error names the column: {error}"
    );
    thing(
        &env,
        "'c'",
        "'t1'",
        "'crm.things.create'",
        "'{}'",
        "'still going'",
    );
    sub.wait_for(3, WAIT, || daemon.log()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_parked_not_fatal_in_trigger_mode() {
    invalid_utf8_is_parked(TRIGGER, "new_row").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_parked_not_fatal_in_logical_mode() {
    invalid_utf8_is_parked(LOGICAL, "note").await;
}

fn readyz(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// `REPLICAOF` makes Redis read-only: Sluice holds the changes (no `READONLY` dead letters),
/// says so on `/readyz`, and delivers everything once Redis is a primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_demoted_to_a_replica_is_waited_out() {
    let env = start("", TRIGGER);
    let daemon = env.daemon();
    let http = daemon.http_port();
    let sub = env.subscribe().await;
    thing(&env, "'a'", "'t1'", "'crm.things.create'", "'{}'", "'x'");
    sub.wait_for(1, WAIT, || daemon.log()).await;
    let nowhere = free_port().to_string();
    redis_command(env.redis.port(), &["REPLICAOF", "127.0.0.1", &nowhere]);
    wait_until!(WAIT, || readyz(http).contains("replica"), || readyz(http)).await;
    thing(&env, "'b'", "'t1'", "'crm.things.create'", "'{}'", "'x'");
    wait_until!(WAIT, || daemon.log().contains("replica"), || daemon.log()).await;
    assert_eq!(env.pending(), 1, "held while Redis is a replica");
    redis_command(env.redis.port(), &["REPLICAOF", "NO", "ONE"]);
    wait_until!(WAIT, || env.pending() == 0, || daemon.log()).await;
    wait_until!(WAIT, || ids(&sub).contains(&"b".to_string()), || daemon
        .log())
    .await;
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
    wait_until!(WAIT, || readyz(http).contains("200 OK"), || readyz(http)).await;
}

/// While Redis is away the source keeps answering the walsender: a 20 s outage with
/// `wal_sender_timeout = 5s` ends no replication connection, and re-publishes at most the
/// batch that was in flight. Redis is cut off behind a proxy, so the subscriber stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_longer_than_wal_sender_timeout_keeps_the_stream() {
    let env = start("", LOGICAL);
    env.sql("ALTER SYSTEM SET wal_sender_timeout = '5s'");
    env.sql("SELECT pg_reload_conf()");
    let proxy = Proxy::start(env.redis.port()).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let direct = format!("127.0.0.1:{}\"", env.redis.port());
    std::fs::write(
        &env.config,
        text.replace(
            &direct,
            &format!("127.0.0.1:{}\"\ncommand_timeout = \"2s\"", proxy.port()),
        ),
    )
    .unwrap();
    let daemon = env.daemon();
    let sub = env.subscribe().await;
    things(&env, 1, 500);
    sub.wait_for(500, WAIT, || daemon.log()).await;
    proxy.blackhole(true);
    things(&env, 501, 3000);
    daemon.wait_for_log("Redis is unavailable").await;
    // the outage itself is what is tested (a fixed 20 s, not a wait for a result): the daemon
    // must ride it out
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.blackhole(false);
    wait_until!(WAIT, || common::distinct(&sub) == 3000, || format!(
        "{} of 3000\n{}",
        common::distinct(&sub),
        daemon.log()
    ))
    .await;
    let log = std::fs::read_to_string(env.pg.log_path()).unwrap_or_default();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "{log}"
    );
    assert!(
        !daemon.log().contains("PostgreSQL is unavailable"),
        "{}",
        daemon.log()
    );
    let again = common::fenced(&env, &sub).await.len() - 3000;
    assert!(
        again <= 1000,
        "{again} events published twice: more than the one batch in flight"
    );
}

/// PostgreSQL blackholed (sockets open, packets dropped) behind a proxy: the daemon logs it
/// within seconds, keeps its probes alive, and delivers everything once the path is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_postgres_is_noticed_within_seconds_and_nothing_is_lost() {
    let env = start("", TRIGGER);
    let proxy = Proxy::start(env.pg.port()).unwrap();
    let direct = format!("127.0.0.1:{}/", env.pg.port());
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(&direct, &format!("127.0.0.1:{}/", proxy.port())),
    )
    .unwrap();
    let daemon = env.daemon();
    let http = daemon.http_port();
    let sub = env.subscribe().await;
    things(&env, 1, 11);
    sub.wait_for(11, WAIT, || daemon.log()).await;
    proxy.blackhole(true);
    let cut = Instant::now();
    things(&env, 12, 20);
    // "within seconds": the statement bound (query_timeout = 2s) ends the wait
    wait_until!(
        Duration::from_secs(15),
        || daemon.log().contains("PostgreSQL is unavailable"),
        || daemon.log()
    )
    .await;
    eprintln!("blackhole noticed after {:?}", cut.elapsed());
    let healthz = readyz(http);
    assert!(
        healthz.contains("503") && healthz.contains("PostgreSQL"),
        "{healthz}"
    );
    proxy.blackhole(false);
    things(&env, 21, 31);
    wait_until!(WAIT, || common::distinct(&sub) == 31, || format!(
        "{} of 31\n{}",
        common::distinct(&sub),
        daemon.log()
    ))
    .await;
    assert_eq!(env.pending(), 0);
}
