//! `setup` and `check` in logical mode: publication, slot, replica identity.

use crate::common::Env;

#[test]
fn setup_creates_the_publication_slot_and_replica_identity_idempotently() {
    let env =
        Env::start("mode = \"logical\"\nslot = \"sluice_test\"\npublication = \"sluice_pub\"");
    let tables = env.sql("SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'sluice_pub'");
    assert_eq!(
        tables.trim(),
        "public.credit_configurations,public.roles,public.users"
    );
    let slot = env.sql("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'sluice_test'");
    assert_eq!(slot.trim(), "pgoutput");
    // every seed table routes by columns outside its primary key: DELETEs need the full row
    let identities = env.sql("SELECT string_agg(relreplident::text, '' ORDER BY relname) FROM pg_class WHERE relname IN ('credit_configurations', 'roles', 'users')");
    assert_eq!(identities.trim(), "fff");
    assert_eq!(
        env.sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice_capture_%'")
            .trim(),
        "0"
    );
    assert_eq!(
        env.sql("SELECT count(*) FROM sluice.checkpoint WHERE name = 'sluice_test'")
            .trim(),
        "1"
    );

    let again = env.sluice(&["setup"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let dry = String::from_utf8_lossy(&env.sluice(&["setup", "--dry-run"]).stdout).into_owned();
    assert!(
        dry.contains("REPLICA IDENTITY FULL")
            && dry.contains("pg_create_logical_replication_slot('sluice_test'"),
        "{dry}"
    );
}

#[test]
fn check_reports_the_logical_prerequisites_and_a_missing_replica_identity() {
    let env = Env::start("mode = \"logical\"");
    let check = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    for line in [
        "ok   wal_level: logical",
        "ok   role postgres: may replicate",
        "ok   publication sluice: all 3 tables",
        "ok   slot sluice: inactive",
        "WARN max_slot_wal_keep_size = -1: a slot that stops moving keeps WAL until the disk is full",
    ] {
        assert!(report.contains(line), "{line}\n{report}");
    }
    env.sql("ALTER TABLE roles REPLICA IDENTITY DEFAULT");
    let check = env.sluice(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(!check.status.success());
    assert!(report.contains("FAIL table public.roles: DELETEs would lack tenant_id, permissions; ALTER TABLE \"public\".\"roles\" REPLICA IDENTITY FULL"), "{report}");
}

#[test]
fn recreate_slot_makes_a_new_slot_at_the_current_position_on_request_only() {
    let env = Env::start("mode = \"logical\"");
    let created =
        env.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'sluice'");
    env.sql("CREATE TABLE filler (x int); INSERT INTO filler SELECT generate_series(1, 10000)");
    assert!(env.sluice(&["setup"]).status.success());
    assert_eq!(
        env.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'sluice'"),
        created,
        "plain setup keeps the slot"
    );
    let out = env.sluice(&["setup", "--recreate-slot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = env.sql(&format!(
        "SELECT restart_lsn > '{}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'sluice'",
        created.trim()
    ));
    assert_eq!(moved.trim(), "t");
}
