//! `sluice teardown` on real servers, in both modes: without --yes it only lists, it refuses
//! while a daemon is active, with --yes the triggers, publication and slot are gone while the
//! schema stays, `setup` works again after it, and --drop-schema removes the schema too.

use std::time::Duration;

use crate::common::{wait_until, Env};

const WAIT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs teardown; (exit code, stdout, stderr).
fn teardown(env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    let out = env.sluice(&[&["teardown"], args].concat());
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn scalar(env: &Env, sql: &str) -> String {
    env.sql(sql).trim().to_string()
}

fn triggers(env: &Env) -> String {
    scalar(
        env,
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice_capture_%'",
    )
}

fn schema_exists(env: &Env) -> bool {
    scalar(
        env,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'sluice'",
    ) == "1"
}

fn setup_again(env: &Env) {
    let out = env.sluice(&["setup"]);
    assert!(
        out.status.success(),
        "setup after teardown: {}",
        text(&out.stderr)
    );
}

/// The config with `[http] listen` off, so the daemon here needs no port.
fn no_http(env: &Env) {
    let config = std::fs::read_to_string(&env.config).unwrap();
    if !config.contains("[http]") {
        std::fs::write(&env.config, config + "[http]\nlisten = \"\"\n").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_teardown_drops_the_triggers_and_keeps_the_schema() {
    let env = Env::start("");
    no_http(&env);
    assert_eq!(triggers(&env), "12");
    let (code, listing, err) = teardown(&env, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.trim().ends_with("rerun with --yes to drop the above")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    for table in ["credit_configurations", "roles", "users"] {
        assert!(
            listing.contains(&format!("  - 4 capture triggers on {table}\n")),
            "{listing}"
        );
    }
    assert!(listing.contains("schema sluice (0 open dead letters of 0, 0 change_log rows); --drop-schema drops it too"), "{listing}");
    assert_eq!(triggers(&env), "12", "nothing dropped without --yes");

    let mut daemon = env.daemon();
    let reading = || {
        scalar(
            &env,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        ) != "0"
    };
    wait_until!(WAIT, reading, || daemon.log()).await;
    let (code, _, err) = teardown(&env, &["--yes"]);
    assert!(
        code == Some(1) && err.contains("is reading the change_log; stop `sluice run` first"),
        "{err}"
    );
    assert_eq!(triggers(&env), "12");
    assert!(
        daemon.terminate().is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );
    wait_until!(WAIT, || !reading(), || "the reader lock stayed".into()).await;

    env.sql("INSERT INTO users (user_id, tenant_id, email) VALUES (1, 't1', 'a@example.com')");
    let (code, out, err) = teardown(&env, &["--yes"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("dropped:\n") && out.trim_end().ends_with("teardown complete"),
        "{out}"
    );
    assert_eq!(triggers(&env), "0");
    assert!(
        schema_exists(&env) && env.pending() == 1,
        "the pending change stays for a later run"
    );
    env.sql("INSERT INTO users (user_id, tenant_id, email) VALUES (2, 't1', 'b@example.com')");
    assert_eq!(
        scalar(&env, "SELECT count(*) FROM sluice.change_log"),
        "1",
        "writers no longer pay for capture"
    );
    let (code, out, _) = teardown(&env, &["--yes"]);
    assert!(
        code == Some(0) && out.starts_with("nothing to tear down"),
        "{out}"
    );

    setup_again(&env);
    assert_eq!(triggers(&env), "12");
    let (code, out, err) = teardown(&env, &["--yes", "--drop-schema"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "schema sluice with everything in it (0 open dead letters of 0, 1 change_log rows)"
        ),
        "{out}"
    );
    assert!(!schema_exists(&env) && triggers(&env) == "0");
    setup_again(&env);
    assert_eq!((triggers(&env), env.pending()), ("12".to_string(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_teardown_refuses_an_active_slot_then_drops_slot_and_publication() {
    let env = Env::start("mode = \"logical\"");
    no_http(&env);
    let slot = || {
        scalar(
            &env,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice'",
        )
    };
    let publication = || {
        scalar(
            &env,
            "SELECT count(*) FROM pg_publication WHERE pubname = 'sluice'",
        )
    };
    let (code, listing, _) = teardown(&env, &[]);
    assert_eq!(code, Some(1));
    assert!(
        listing.contains("  - replication slot sluice (confirmed up to ")
            && listing.contains("  - publication sluice (3 tables)\n"),
        "{listing}"
    );
    assert!(
        listing.contains("REPLICA IDENTITY FULL on credit_configurations, roles, users"),
        "{listing}"
    );

    let mut daemon = env.daemon();
    let active = || {
        scalar(
            &env,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice' AND active",
        ) == "1"
    };
    wait_until!(WAIT, active, || daemon.log()).await;
    let (code, _, err) = teardown(&env, &["--yes"]);
    assert!(
        code == Some(1) && err.contains("slot sluice is active (streamed by backend pid "),
        "{err}"
    );
    assert_eq!((slot(), publication()), ("1".to_string(), "1".to_string()));
    assert!(
        daemon.terminate().is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );
    wait_until!(WAIT, || !active(), || "the walsender kept the slot".into()).await;

    let (code, out, err) = teardown(&env, &["--yes"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("checkpoint row sluice"), "{out}");
    assert_eq!((slot(), publication()), ("0".to_string(), "0".to_string()));
    assert!(schema_exists(&env));
    assert_eq!(
        scalar(
            &env,
            "SELECT count(*) FROM sluice.checkpoint WHERE name = 'sluice'"
        ),
        "0"
    );

    setup_again(&env);
    assert_eq!((slot(), publication()), ("1".to_string(), "1".to_string()));
    env.sql("SELECT pg_create_logical_replication_slot('other', 'pgoutput'); INSERT INTO sluice.checkpoint (name, position) VALUES ('other', 'start')");
    let (code, _, err) = teardown(&env, &["--yes", "--drop-schema"]);
    assert!(
        code == Some(1)
            && err.contains("slot other of another Sluice config still uses schema sluice"),
        "{err}"
    );
    env.sql("SELECT pg_drop_replication_slot('other')");
    let (code, _, err) = teardown(&env, &["--yes", "--drop-schema"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!schema_exists(&env) && slot() == "0" && publication() == "0");
    setup_again(&env);
    assert_eq!(slot(), "1");
}
