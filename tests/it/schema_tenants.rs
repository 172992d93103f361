//! Schema-per-tenant layouts on real servers, in both modes: one route `tenant_*.leads` over 50
//! tenant schemas takes each change's tenant from its schema name, 10,000 changes each reach
//! `crm:<tenant>:leads` exactly once, and a tenant schema created while the daemon runs has its
//! changes published from its first row on (the event trigger setup installs captures it in
//! the DDL's own transaction). A bad pattern, or one that could capture an unsafe tenant, is
//! refused when the config is loaded.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::{fenced, ConfigText, Env};

const WAIT: Duration = Duration::from_secs(120);
const TENANTS: usize = 50;

const ROUTE: &str = "[[tables]]\ntable = \"tenant_*.leads\"\ntype = \"leads\"\n\
    tenant = { schema = \"tenant_([a-z0-9][a-z0-9_]*)\" }\napp = { fixed = [\"crm\"] }\n";

/// One tenant's schema and its `leads` table.
fn schema(n: usize) -> String {
    format!(
        "CREATE SCHEMA tenant_t{n:02}; CREATE TABLE tenant_t{n:02}.leads \
         (lead_id bigint PRIMARY KEY, name text, stage text);"
    )
}

/// 200 changes in tenant `n`: 120 inserts, 60 updates, 20 deletes, each statement its own
/// transaction.
fn changes(n: usize) -> String {
    let t = format!("tenant_t{n:02}.leads");
    format!(
        "INSERT INTO {t} SELECT g, 'lead ' || g, 'new' FROM generate_series(1, 120) g;\n\
         UPDATE {t} SET stage = 'won' WHERE lead_id <= 60;\n\
         DELETE FROM {t} WHERE lead_id > 100;\n"
    )
}

async fn fifty_tenants_and_one_more(mode: &str) {
    let schemas: String = (1..=TENANTS).map(schema).collect();
    let env = Env::start_with(&schemas, &format!("mode = \"{mode}\"\n{ROUTE}"));
    let daemon = env.daemon();
    let sub = env.subscribe().await;
    let half: String = (1..=TENANTS / 2).map(changes).collect();
    env.sql(&half);
    // a new tenant mid-stream: its first row is written in the transaction that creates it
    env.sql(
        "BEGIN; CREATE SCHEMA tenant_new; \
         CREATE TABLE tenant_new.leads (lead_id bigint PRIMARY KEY, name text, stage text); \
         INSERT INTO tenant_new.leads VALUES (1, 'first', 'new'); COMMIT;",
    );
    env.sql("INSERT INTO tenant_new.leads VALUES (2, 'second', 'new'); UPDATE tenant_new.leads SET stage = 'won'; DELETE FROM tenant_new.leads WHERE lead_id = 2;");
    let rest: String = (TENANTS / 2 + 1..=TENANTS).map(changes).collect();
    env.sql(&rest);
    let expected = TENANTS * 200 + 5;
    sub.wait_for(expected, WAIT, || daemon.log()).await;
    let events = fenced(&env, &sub).await;
    assert_eq!(events.len(), expected, "{}", daemon.log());
    let ids: HashSet<&str> = events
        .iter()
        .map(|m| m.event["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), expected, "every change exactly once");
    let mut per_channel: HashMap<&str, usize> = HashMap::new();
    for m in &events {
        let table = m.event["table"].as_str().unwrap();
        let tenant = table
            .strip_prefix("tenant_")
            .and_then(|t| t.strip_suffix(".leads"))
            .unwrap();
        assert_eq!(m.channel, format!("crm:{tenant}:leads"), "{}", m.raw);
        assert_eq!(m.event["tenantId"], tenant, "{}", m.raw);
        *per_channel.entry(m.channel.as_str()).or_default() += 1;
    }
    assert_eq!(per_channel.len(), TENANTS + 1);
    assert!(per_channel
        .iter()
        .all(|(c, n)| *n == if *c == "crm:new:leads" { 5 } else { 200 }));
    let new: Vec<(&str, i64)> = events
        .iter()
        .filter(|m| m.channel == "crm:new:leads")
        .map(|m| {
            let op = m.event["operation"].as_str().unwrap();
            (op, m.event["data"]["lead_id"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        new,
        [
            ("INSERT", 1),
            ("INSERT", 2),
            ("UPDATE", 1),
            ("UPDATE", 2),
            ("DELETE", 2)
        ]
    );
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
    let check = env.sluice(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains(&format!(
            "pattern tenant_*.leads: matches {} table(s)",
            TENANTS + 1
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_mode_routes_every_tenant_schema() {
    fifty_tenants_and_one_more("trigger").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_mode_routes_every_tenant_schema() {
    fifty_tenants_and_one_more("logical").await;
}

/// `sluice check` on a config alone (it is refused before anything connects).
fn check_config(route: &str) -> (i32, String) {
    let (code, _, stderr) = offline(route, &["check"]);
    (code, stderr)
}

/// The tests' config with `route` as its only route, for servers that are not there.
fn offline_config(route: &str) -> String {
    ConfigText::new("postgres://nobody@127.0.0.1:1/app", "redis://127.0.0.1:1")
        .routes(route)
        .text()
}

/// The line of `route`'s `tenant = { schema = ... }` in its [`offline_config`].
fn schema_line(route: &str) -> usize {
    let text = offline_config(route);
    1 + text
        .lines()
        .position(|l| l.starts_with("tenant = { schema"))
        .unwrap()
}

/// A command that needs no server, with a config of `route`: exit code, stdout, stderr.
fn offline(route: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, offline_config(route)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "sluice.toml");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn route_shows_the_tenant_a_schema_gives() {
    let route = |table: &str| {
        offline(
            ROUTE,
            &["route", "--table", table, "--row", "{\"lead_id\": 1}"],
        )
    };
    let (code, out, err) = route("tenant_acme.leads");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("publish crm:acme:leads  (app crm, tenant acme,"),
        "{out}"
    );
    let (code, out, _) = route("tenant_.leads");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("dead letter missing_tenant: schema \"tenant_\" does not match"),
        "{out}"
    );
    let (code, _, err) = route("other.leads");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bad_and_unsafe_patterns_are_refused_at_load() {
    let route = |pattern: &str| {
        format!("[[tables]]\ntable = \"tenant_*.leads\"\ntype = \"leads\"\ntenant = {{ schema = \"{pattern}\" }}\napp = {{ fixed = [\"crm\"] }}\n")
    };
    let (code, err) = check_config(&route("tenant_([a-z"));
    assert_eq!(code, 2, "{err}");
    let line = schema_line(&route("tenant_([a-z"));
    assert!(err.contains(&format!("sluice.toml:{line}: tables[0] (tenant_*.leads) tenant.schema: \"tenant_([a-z\" is not a valid regular expression: unclosed character class;")), "{err}");
    assert!(
        err.contains("write it like tenant = { schema = \"tenant_([a-z0-9][a-z0-9_]*)\" }"),
        "{err}"
    );
    let (code, err) = check_config(&route("tenant_(.+)"));
    assert_eq!(code, 2, "{err}");
    let line = schema_line(&route("tenant_(.+)"));
    assert!(err.contains(&format!("sluice.toml:{line}: tables[0] (tenant_*.leads) tenant.schema: \"tenant_(.+)\" could capture \"!\" (from a schema named \"tenant_!\"), which is not a safe tenant")), "{err}");
    let (code, err) = check_config(&route("tenant_[a-z]+"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has no capture group to take the tenant from"),
        "{err}"
    );
    let (code, err) =
        check_config(&route("tenant_([a-z]+)").replace("tenant_*.leads", "tenant_1.lea*"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a * may stand only in the schema part"),
        "{err}"
    );
    let (code, err) = check_config(&route("tenant_([a-z]+)").replace("{ schema =", "{ schemas ="));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tables[0].tenant.schemas: unknown key (did you mean schema?)"),
        "{err}"
    );
}

/// A tenant column computed from another (`GENERATED ALWAYS AS ... STORED`).
const GENERATED: &str = "CREATE TABLE accounts (account_id bigint PRIMARY KEY, code text, \
    tenant_id text GENERATED ALWAYS AS (split_part(code, '/', 1)) STORED);";
const GENERATED_ROUTE: &str = "[[tables]]\ntable = \"public.accounts\"\ntype = \"accounts\"\n\
    tenant = \"tenant_id\"\napp = { fixed = [\"crm\"] }\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_tenant_column_routes_in_trigger_mode() {
    let env = Env::start_with(GENERATED, &format!("mode = \"trigger\"\n{GENERATED_ROUTE}"));
    let daemon = env.daemon();
    let sub = env.subscribe().await;
    env.sql("INSERT INTO accounts (account_id, code) VALUES (1, 'acme/1'), (2, 'globex/2')");
    let events = sub.wait_for(2, WAIT, || daemon.log()).await;
    let channels: HashSet<&str> = events.iter().map(|m| m.channel.as_str()).collect();
    assert_eq!(
        channels,
        HashSet::from(["crm:acme:accounts", "crm:globex:accounts"])
    );
}

/// Before PostgreSQL 18 pgoutput sends no generated column: `check` says logical mode cannot
/// route by one, and what to do instead.
#[test]
fn check_says_logical_mode_cannot_route_by_a_generated_column_before_18() {
    let env = Env::start_with(GENERATED, &format!("mode = \"logical\"\n{GENERATED_ROUTE}"));
    let version: i32 = env.sql("SHOW server_version_num").trim().parse().unwrap();
    let out = env.sluice(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if version >= 180000 {
        assert!(!text.contains("FAIL table public.accounts"), "{text}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL table public.accounts: routing column(s) tenant_id are generated and logical mode cannot route by them: PostgreSQL before 18 does not replicate generated columns; use source.mode = \"trigger\""), "{text}");
}
