//! Trigger mode end to end: the seed tables reach the right channels with `data` equal to
//! PostgreSQL's `to_jsonb(row)`, and bad rows are dead-lettered, never published.

use std::time::Duration;

use crate::common::{wait_until, Env};
use serde_json::Value;

fn jsonb(env: &Env, sql: &str) -> Value {
    serde_json::from_str(env.sql(sql).trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_tables_reach_their_channels_with_to_jsonb_data() {
    let env = Env::start("");
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) VALUES \
         ('c1', 'tenant-123', 'crm.leads.create', 2.50, '{\"tier\": [1, 2.0]}'), \
         ('c2', 'tenant-456', 'hrms.payroll.process', 5, NULL), \
         ('c3', 'tenant-789', 'finance.invoice.generate', 1.25, NULL); \
         INSERT INTO roles VALUES ('r1', 'tenant-123', 'Sales manager', '{crm.leads.create,hrms.leave.approve}'); \
         INSERT INTO users VALUES (7, 'tenant-123', 'a@example.com', 'Ada', '{x,\"y z\"}', '2026-01-02');",
    );
    let c1_inserted = jsonb(
        &env,
        "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c1'",
    );
    let c3_before = jsonb(
        &env,
        "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c3'",
    );
    env.sql("UPDATE credit_configurations SET credit_cost = 3.00, updated_by = 'admin-123' WHERE config_id = 'c1'");
    env.sql("DELETE FROM credit_configurations WHERE config_id = 'c3'");
    let msgs = sub
        .wait_for(9, Duration::from_secs(30), || daemon.log())
        .await;

    let mut channels: Vec<&str> = msgs.iter().map(|m| m.channel.as_str()).collect();
    channels.sort();
    assert_eq!(
        channels,
        [
            "crm:tenant-123:credit-configs",
            "crm:tenant-123:credit-configs",
            "crm:tenant-123:roles",
            "crm:tenant-123:users",
            "finance:tenant-789:credit-configs",
            "finance:tenant-789:credit-configs",
            "hrms:tenant-123:roles",
            "hrms:tenant-123:users",
            "hrms:tenant-456:credit-configs",
        ]
    );
    let find = |op: &str, id: &str| {
        msgs.iter()
            .find(|m| m.event["operation"] == op && m.event["recordId"] == id)
            .unwrap()
            .clone()
    };
    let insert = find("INSERT", "c1");
    assert_eq!(insert.event["data"], c1_inserted);
    assert_eq!(
        (
            insert.event["app"].as_str(),
            insert.event["tenantId"].as_str()
        ),
        (Some("crm"), Some("tenant-123"))
    );
    assert_eq!(insert.event["source"]["mode"], "trigger");
    assert!(
        insert.raw.contains(r#""credit_cost": 2.50"#),
        "numbers stay exact: {}",
        insert.raw
    );

    let update = find("UPDATE", "c1");
    assert_eq!(
        update.event["data"],
        jsonb(
            &env,
            "SELECT to_jsonb(c) FROM credit_configurations c WHERE config_id = 'c1'"
        )
    );
    let mut changed: Vec<String> =
        serde_json::from_value(update.event["changedFields"].clone()).unwrap();
    changed.sort();
    assert_eq!(changed, ["credit_cost", "updated_by"]);
    assert_eq!(
        update.event["old"],
        serde_json::json!({"credit_cost": 2.50, "updated_by": null})
    );

    let delete = find("DELETE", "c3");
    assert_eq!(delete.event["data"], c3_before);
    let user = find("INSERT", "7");
    assert_eq!(
        user.event["data"],
        jsonb(&env, "SELECT to_jsonb(u) FROM users u WHERE user_id = 7")
    );

    let ids: std::collections::HashSet<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m.event["eventId"].as_str().unwrap().to_string(),
                m.channel.clone(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 9, "each event once");
    wait_until!(Duration::from_secs(10), || env.pending() == 0, || {
        "change_log rows still pending".into()
    })
    .await;
    assert!(env.dead_letters().is_empty(), "{:?}", env.dead_letters());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenants_and_operation_codes_are_dead_lettered_and_never_published() {
    bad_rows_are_dead_lettered("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenants_and_operation_codes_are_dead_lettered_in_logical_mode_too() {
    bad_rows_are_dead_lettered("mode = \"logical\"").await;
}

async fn bad_rows_are_dead_lettered(mode: &str) {
    let env = Env::start(mode);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    if !mode.is_empty() {
        daemon.wait_for_log("streaming from the slot").await;
    }
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES \
         ('unknown', 't1', 'sales.deal.close'), ('nullcode', 't1', NULL), \
         ('colon', 'a:b', 'crm.x'), ('star', '*', 'crm.x'), ('newline', E't\\n1', 'crm.x'), \
         ('empty', '', 'crm.x'), ('nulltenant', NULL, 'crm.x'), ('good', 't1', 'crm.leads.create');",
    );
    // the good row has the highest id: anything published for the others would precede it
    let msgs = sub
        .wait_for(1, Duration::from_secs(30), || daemon.log())
        .await;
    wait_until!(
        Duration::from_secs(10),
        || env.dead_letters().len() == 7,
        || format!("{:?}", env.dead_letters())
    )
    .await;
    assert_eq!(msgs.len(), 1, "only the good row is published: {msgs:?}");
    assert_eq!(msgs[0].channel, "crm:t1:credit-configs");

    let mut dead: Vec<(String, String)> = env
        .dead_letters()
        .into_iter()
        .map(|(r, t, _)| (r, t))
        .collect();
    dead.sort();
    let expected = [
        ("invalid_tenant", ""),
        ("invalid_tenant", "*"),
        ("invalid_tenant", "a:b"),
        ("invalid_tenant", "t\n1"),
        ("missing_tenant", "<null>"),
        ("unroutable", "t1"),
        ("unroutable", "t1"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect();
    assert_eq!(dead, expected);
    let errors =
        env.sql("SELECT error FROM sluice.dead_letter WHERE reason = 'unroutable' ORDER BY id");
    assert!(
        errors.contains("sales.deal.close") && errors.contains("NULL"),
        "{errors}"
    );
    if mode.is_empty() {
        assert_eq!(env.pending(), 0);
    }
}

#[test]
fn check_passes_and_setup_is_idempotent() {
    let env = Env::start("");
    let again = env.sluice(&["setup"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let dry = env.sluice(&["setup", "--dry-run"]);
    let sql = String::from_utf8_lossy(&dry.stdout);
    assert!(
        sql.contains("CREATE TRIGGER sluice_capture_update AFTER UPDATE ON \"public\".\"roles\""),
        "{sql}"
    );
    let check = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok")).count(),
        report.lines().count(),
        "{report}"
    );
    assert!(
        report.contains("ok   privileges: the role may read and write the sluice tables"),
        "{report}"
    );
    env.sql("INSERT INTO sluice.dead_letter (event_id, table_name, payload, reason) VALUES ('cl:1', 'public.roles', '{}', 'unroutable')");
    let check = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "an open dead letter is a warning, not a failure: {report}"
    );
    assert!(
        report.contains("WARN dead letters: 1 open (unroutable 1); see `sluice dead-letters list`"),
        "{report}"
    );
    env.sql("DROP TRIGGER sluice_capture_delete ON roles");
    let check = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(
        report.contains(
            "FAIL table public.roles: capture triggers missing (3 of 4); run `sluice setup`"
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_events_of_its_pattern() {
    use std::io::BufRead;
    use std::process::Stdio;
    let env = Env::start("");
    let daemon = env.daemon();
    let mut tail = env
        .command()
        .args(["tail", "crm:*:*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(tail.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("listening on crm:*:*"), "{ready}");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    env.sql(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) VALUES \
         ('h', 't1', 'hrms.payroll.process'), ('c', 't1', 'crm.leads.create')",
    );
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line\n{}", daemon.log()));
    let (channel, payload) = line.split_once(' ').unwrap();
    assert_eq!(channel, "crm:t1:credit-configs");
    assert_eq!(
        serde_json::from_str::<Value>(payload).unwrap()["recordId"],
        "c"
    );
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        rx.try_iter().all(|l| l.starts_with("crm:")),
        "only the pattern's channels"
    );
}
