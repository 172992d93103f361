//! The integration tests, in one binary. Each module is one area on real servers (or the
//! binary's command line, or the files under deploy/), and its name is the first part of its
//! tests' paths: `cargo test --test it failover::` runs the failover tests, and
//! `cargo test --test it both_modes:: recoverable::` two modules (libtest takes several
//! filters). `common` is the harness they share: throwaway servers, the config the tests run
//! with, the daemon as a child process, and `wait_until`.
//!
//! One binary links the crate once, not once per area, and libtest spreads every test over its
//! threads instead of running one area after another.

mod common;

mod architecture;
mod backfill;
mod both_modes;
mod channel_transactions;
mod cli;
mod cluster;
mod config_env;
mod deploy_files;
mod failover;
mod http_probes;
mod logical_setup;
mod logical_stream;
mod logs;
mod never_stops;
mod partitions;
mod pg_versions;
mod recover_dead_letters;
mod recoverable;
mod redact;
mod reference_script;
mod replay_change_log;
mod replication_conn;
mod schema;
mod schema_tenants;
mod status;
mod tail;
mod teardown;
mod tls;
mod trigger_faults;
mod trigger_load;
mod trigger_ordering;
mod trigger_routing;
mod two_phase_commit;
