//! Configuration as an operator meets it through the binary: `SLUICE_<SECTION>_<KEY>`
//! variables, `sluice config` with each value's origin, error wording, `sluice route`, and
//! libpq's variables and password file against a PostgreSQL that asks for a password.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sluice::testkit::{PgOptions, Postgres};

/// Variables a test must not inherit: they would change what it checks.
const INHERITED: [&str; 9] = [
    "DATABASE_URL",
    "REDIS_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGPASSFILE",
    "PGSSLMODE",
];

/// Runs `sluice --config <dir>/sluice.toml args` with only `env` (and HOME = `dir`) set among
/// the variables above.
fn sluice(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("--config").arg(&path).args(args).env("HOME", dir);
    for var in INHERITED {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") && k != "SLUICE_PG_BIN" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TABLES: &str = "[source]\nmode = \"trigger\"\n\
    [apps]\ncrm = { prefixes = [\"crm.\"] }\nhrms = { prefixes = [\"hrms.\"] }\n\
    [[tables]]\ntable = \"leads\"\ntype = \"leads\"\ntenant = \"tenant_id\"\n\
    app = { operation_code = \"operation_code\" }\ninvalidate = [\"tenant:{tenant}:lead:{id}\"]\n";

#[test]
fn variables_win_over_the_file_and_config_says_where_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[postgres]\nurl = \"postgres://app:filesecret@db/app\"\n[http]\nlisten = \"127.0.0.1:1\"\n{TABLES}");
    let out = sluice(
        dir.path(),
        &config,
        &["config"],
        &[
            ("SLUICE_HTTP_LISTEN", "0.0.0.0:9750"),
            ("SLUICE_DELIVERY_MAX_ATTEMPTS", "8"),
            ("SLUICE_HISTORY_TTL", "12h"),
            ("REDIS_URL", "redis://:redispass@cache:6379"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} in\n{stdout}"))
            .to_string()
    };
    assert!(line("listen = \"0.0.0.0:9750\"").ends_with("# env SLUICE_HTTP_LISTEN"));
    assert!(line("max_attempts = 8").ends_with("# env SLUICE_DELIVERY_MAX_ATTEMPTS"));
    assert!(line("ttl = \"12h\"").ends_with("# env SLUICE_HISTORY_TTL"));
    assert!(line("url = \"redis://:***@cache:6379\"").ends_with("# env REDIS_URL"));
    assert!(line("url = \"postgres://app:***@db/app\"").ends_with("sluice.toml:2"));
    assert!(line("batch_size = 1000").ends_with("# default"));
    assert!(line("app = { operation_code = \"operation_code\" }").ends_with("sluice.toml:14"));
    assert!(!stdout.contains("filesecret") && !stdout.contains("redispass"));
    // what config prints is a config file that loads to the same values
    let again = sluice(dir.path(), &stdout, &["config"], &[]);
    assert!(again.status.success(), "{}", text(&again).1);
    assert!(text(&again).0.contains("listen = \"0.0.0.0:9750\""));
}

#[test]
fn a_bad_variable_is_named_with_the_right_form() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[postgres]\n{TABLES}");
    let out = sluice(
        dir.path(),
        &config,
        &["check"],
        &[
            ("SLUICE_SOURCE_BATCH_SIZE", "many"),
            ("SLUICE_HTTP_LISTN", "x"),
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("environment SLUICE_SOURCE_BATCH_SIZE: source.batch_size: found \"many\", expected a whole number, 0 or more; write it like SLUICE_SOURCE_BATCH_SIZE=1000"), "{stderr}");
    assert!(
        stderr.contains("environment SLUICE_HTTP_LISTN: no such key in [http]"),
        "{stderr}"
    );
}

#[test]
fn type_errors_name_key_line_found_and_example_without_serde() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "# connect_timeout and app are explained below\n[postgres]\nconnect_timeout = 10\n{}",
        TABLES.replace(
            "app = { operation_code = \"operation_code\" }",
            "app = \"operation_code\""
        )
    );
    let out = sluice(dir.path(), &config, &["check"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sluice.toml:3: postgres.connect_timeout: found the number 10, expected a duration in quotes (units: ms, s, m, h, d); write it like connect_timeout = \"10s\""), "{stderr}");
    assert!(stderr.contains("sluice.toml:13: tables[0].app: found the string \"operation_code\", expected a table with one of operation_code, any_of or fixed; write it like app = { operation_code = \"operation_code\" }"), "{stderr}");
    for serde in ["invalid type", "variant", "expected usize"] {
        assert!(!stderr.contains(serde), "{stderr}");
    }
}

#[test]
fn a_routing_problem_is_placed_on_its_key_not_on_a_comment_that_mentions_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[postgres]\n# channel = \"{{app}}:{{type}}\" would mix tenants\n{TABLES}channel = \"{{app}}:{{type}}\"\n"
    );
    let out = sluice(dir.path(), &config, &["check"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "sluice.toml:14: tables[0] (leads) channel: the channel must contain {tenant}"
        ),
        "{stderr}"
    );
}

#[test]
fn postgres_may_be_absent_when_the_environment_names_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(dir.path(), TABLES, &["config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("no [postgres] section"),
        "{}",
        text(&out).1
    );
    let out = sluice(
        dir.path(),
        TABLES,
        &["config"],
        &[("DATABASE_URL", "postgres://u@db/x")],
    );
    assert!(
        text(&out).0.contains("url = \"postgres://u@db/x\""),
        "{}",
        text(&out).1
    );
}

fn route(dir: &Path, config: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut full = vec!["route", "--table", "leads"];
    full.extend_from_slice(args);
    let out = sluice(
        dir,
        config,
        &full,
        &[("DATABASE_URL", "postgres://u@nowhere/x")],
    );
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout + &stderr)
}

#[test]
fn route_shows_channels_cache_keys_or_the_dead_letter_reason_offline() {
    let dir = tempfile::tempdir().unwrap();
    let row = r#"{"id": 42, "tenant_id": "t1", "operation_code": "crm.leads.create"}"#;
    let (code, out) = route(dir.path(), TABLES, &["--row", row]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("publish crm:t1:leads  (app crm, tenant t1, "),
        "{out}"
    );
    assert!(out.contains("\n  invalidate tenant:t1:lead:42\n"), "{out}");

    let unroutable = r#"{"id": 1, "tenant_id": "t1", "operation_code": "billing.x"}"#;
    let (code, out) = route(dir.path(), TABLES, &["--row", unroutable]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out,
        "dead letter unroutable: no app has a prefix of operation code \"billing.x\"\n"
    );
    let (code, out) = route(dir.path(), TABLES, &["--row", &row.replace("t1", "t:1")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("dead letter invalid_tenant: "), "{out}");

    let moved = r#"{"tenant_id": "t0", "operation_code": "hrms.x"}"#;
    let (code, out) = route(
        dir.path(),
        TABLES,
        &["--row", row, "--operation", "UPDATE", "--old", moved],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("publish hrms:t0:leads  (MOVED_OUT"), "{out}");

    let drop = TABLES.replace("[apps]", "[delivery]\non_unroutable = \"drop\"\n[apps]");
    let (code, out) = route(dir.path(), &drop, &["--row", unroutable]);
    assert_eq!(code, Some(3), "{out}");
    let (code, out) = route(dir.path(), TABLES, &["--row", "not json"]);
    assert_eq!(code, Some(2), "{out}");
}

/// A server that asks every role but `postgres` for a SCRAM password; role `app` has one.
fn password_server() -> Postgres {
    let hba = "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
               host all all 127.0.0.1/32 scram-sha-256\n";
    let pg = Postgres::start_with(&PgOptions {
        settings: Vec::new(),
        files: vec![("pg_hba.conf".into(), hba.as_bytes().to_vec())],
    })
    .unwrap();
    pg.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 's3cret:\\x'")
        .unwrap();
    pg.psql("postgres", "CREATE DATABASE app OWNER app")
        .unwrap();
    pg.psql(
        "app",
        "CREATE TABLE leads (id int PRIMARY KEY, tenant_id text, operation_code text); ALTER TABLE leads OWNER TO app",
    )
    .unwrap();
    pg
}

#[test]
fn libpq_variables_and_the_password_file_are_honoured_as_libpq_does() {
    let pg = password_server();
    let dir = tempfile::tempdir().unwrap();
    let port = pg.port().to_string();
    let config = format!("[postgres]\nurl = \"postgres://app@127.0.0.1:{port}/app\"\n{TABLES}");
    let dry = ["setup", "--dry-run"];

    let out = sluice(dir.path(), &config, &dry, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "no password given");
    assert!(stderr.contains("PostgreSQL asks for a password and none was given: put it in postgres.url, set PGPASSWORD, or add a line"), "{stderr}");
    let out = sluice(dir.path(), &config, &dry, &[("PGPASSWORD", "s3cret:\\x")]);
    assert!(out.status.success(), "PGPASSWORD: {}", text(&out).1);

    // ~/.pgpass (HOME is the temp dir), escaped colon and backslash, after a wildcard miss
    let pgpass = dir.path().join(".pgpass");
    let line = format!(
        "# host:port:db:user:password\n*:*:*:other:no\n127.0.0.1:{port}:app:app:s3cret\\:\\\\x\n"
    );
    std::fs::write(&pgpass, line).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sluice(dir.path(), &config, &dry, &[]);
    assert!(out.status.success(), "~/.pgpass: {}", text(&out).1);
    let shown = text(&sluice(dir.path(), &config, &["config"], &[])).0;
    assert!(
        shown.contains("# libpq's environment adds: password from "),
        "{shown}"
    );
    assert!(shown.contains(".pgpass:3"), "{shown}");

    // a password file others may read is refused, with libpq's warning
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sluice(dir.path(), &config, &dry, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("has group or world access; permissions should be u=rw (0600) or less"),
        "{stderr}"
    );

    // no [postgres] at all: PGHOST, PGPORT, PGUSER, PGDATABASE make the URL
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "app"),
        ("PGDATABASE", "app"),
        ("PGPASSWORD", "s3cret:\\x"),
    ];
    let out = sluice(dir.path(), TABLES, &dry, &env);
    assert!(out.status.success(), "PG* only: {}", text(&out).1);
    let shown = text(&sluice(dir.path(), TABLES, &["config"], &env)).0;
    assert!(
        shown.contains(&format!(
            "url = \"host=127.0.0.1 port={port} user=app dbname=app\""
        )),
        "{shown}"
    );
    assert!(
        shown.contains("# env PGHOST, PGPORT, PGUSER, PGDATABASE"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}
