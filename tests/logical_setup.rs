//! `setup` and `check` in logical mode: publication, slot, replica identity.

mod common;

use common::Env;

#[test]
fn setup_creates_the_publication_slot_and_replica_identity_idempotently() {
    let env = Env::start("mode = \"logical\"\nslot = \"sluice_test\"\npublication = \"sluice_pub\"");
    let tables = env.sql("SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'sluice_pub'");
    assert_eq!(tables.trim(), "public.credit_configurations,public.roles,public.users");
    let slot = env.sql("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'sluice_test'");
    assert_eq!(slot.trim(), "pgoutput");
    // every seed table routes by columns outside its primary key: DELETEs need the full row
    let identities = env.sql("SELECT string_agg(relreplident::text, '' ORDER BY relname) FROM pg_class WHERE relname IN ('credit_configurations', 'roles', 'users')");
    assert_eq!(identities.trim(), "fff");
    assert_eq!(env.sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sluice_capture_%'").trim(), "0");
    assert_eq!(env.sql("SELECT count(*) FROM sluice.checkpoint WHERE name = 'sluice_test'").trim(), "1");

    let again = env.sluice(&["setup"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let dry = String::from_utf8_lossy(&env.sluice(&["setup", "--dry-run"]).stdout).into_owned();
    assert!(dry.contains("REPLICA IDENTITY FULL") && dry.contains("pg_create_logical_replication_slot('sluice_test'"), "{dry}");
}
