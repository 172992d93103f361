use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let config = Config::parse(text, Path::new("sluice.toml"))?;
    let problems = config.problems();
    if problems.is_empty() {
        return Ok(config);
    }
    Err(config.invalid(Path::new("sluice.toml"), problems))
}

const MINIMAL: &str = r#"
[postgres]
url = "postgres://x@127.0.0.1/app"
[source]
mode = "trigger"
[apps]
crm = { prefixes = ["crm."] }
[[tables]]
table = "t"
type = "things"
tenant = "tenant_id"
app = { operation_code = "code" }
"#;

#[test]
fn the_example_config_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&text, &path).unwrap();
    config.validate(&path).unwrap();
    assert_eq!(config.source.mode, SourceMode::Trigger);
    assert_eq!(config.source.poll_interval, Duration::from_millis(250));
    assert_eq!(config.source.retention, Duration::from_secs(7 * 86400));
    assert_eq!(config.source.max_retained_wal, 8 << 30);
    assert_eq!(config.http.listen, "127.0.0.1:9750");
    assert_eq!(config.tables.len(), 3);
    assert_eq!(config.tables[1].app, AppRule::AnyOf("permissions".into()));
    assert_eq!(
        config.tables[2].app,
        AppRule::Fixed(vec!["crm".into(), "hrms".into()])
    );
}

#[test]
fn defaults_match_the_contract() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.source.batch_size, 1000);
    assert_eq!(c.source.slot, "sluice");
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.http.listen, "127.0.0.1:9750");
    assert_eq!(c.delivery.max_attempts, 5);
    assert_eq!(c.delivery.max_payload_bytes, 1_048_576);
    assert_eq!(c.delivery.on_unroutable, OnUnroutable::DeadLetter);
    assert_eq!(c.tables[0].channel, "{app}:{tenant}:{type}");
}

#[test]
fn an_unknown_key_names_the_key_and_the_line() {
    let text = MINIMAL.replace("[source]\n", "[source]\npoll_intervall = \"1s\"\n");
    let e = Config::parse(&text, Path::new("sluice.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("sluice.toml:5: "), "{e}");
    assert!(e.contains("poll_intervall"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let text = MINIMAL.replace(
        "mode = \"trigger\"",
        "mode = \"trigger\"\npoll_interval = \"fast\"",
    );
    let e = Config::parse(&text, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:6: ") && e.contains("250ms"), "{e}");
}

#[test]
fn semantic_errors_are_caught_before_connecting() {
    let zero = MINIMAL.replace("mode = \"trigger\"", "mode = \"trigger\"\nbatch_size = 0");
    assert!(parse(&zero)
        .unwrap_err()
        .to_string()
        .contains("source.batch_size must be at least 1"));
    let both = MINIMAL.replace(
        "mode = \"trigger\"",
        "mode = \"trigger\"\nbatch_size = 0\nkeep_history = true",
    );
    let e = parse(&both).unwrap_err().to_string();
    assert_eq!(e.lines().count(), 2, "every problem at once: {e}");
}

#[test]
fn validation_errors_point_at_the_offending_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        MINIMAL.replace("mode = \"trigger\"", "mode = \"trigger\"\nbatch_size = 0"),
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("sluice.toml:6: "), "{e}");
}

#[test]
fn environment_overrides_urls() {
    let env = Env::from_pairs([
        ("DATABASE_URL", "postgres://env/db"),
        ("REDIS_URL", "redis://env:1"),
    ]);
    let c = Config::from_sources(MINIMAL, Path::new("sluice.toml"), &env).unwrap();
    assert_eq!(c.postgres.url, "postgres://env/db");
    assert_eq!(c.redis.url, "redis://env:1");
    assert_eq!(
        c.origins.of("postgres.url"),
        Origin::Env("DATABASE_URL".into())
    );
}

#[test]
fn keep_history_is_a_logical_mode_key() {
    let trigger = MINIMAL.replace(
        "mode = \"trigger\"",
        "mode = \"trigger\"\nkeep_history = true",
    );
    assert!(parse(&trigger)
        .unwrap_err()
        .to_string()
        .contains("keep_history is for logical mode"));
    let logical = MINIMAL.replace(
        "mode = \"trigger\"",
        "mode = \"logical\"\nkeep_history = true",
    );
    assert!(parse(&logical).unwrap().source.keep_history);
}

#[test]
fn max_retained_wal_is_a_byte_size_defaulting_to_8_gib() {
    assert_eq!(parse(MINIMAL).unwrap().source.max_retained_wal, 8 << 30);
    let set = |v: &str| {
        MINIMAL.replace(
            "mode = \"trigger\"",
            &format!("mode = \"trigger\"\nmax_retained_wal = {v}"),
        )
    };
    assert_eq!(
        parse(&set("\"512MB\"")).unwrap().source.max_retained_wal,
        512_000_000
    );
    assert_eq!(parse(&set("0")).unwrap().source.max_retained_wal, 0);
    let e = Config::parse(&set("\"8 GX\""), Path::new("sluice.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("sluice.toml:6: source.max_retained_wal: found the string \"8 GX\"")
            && e.contains("unknown unit"),
        "{e}"
    );
}

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
    Config::from_sources(
        text,
        Path::new("sluice.toml"),
        &Env::from_pairs(vars.iter().copied()),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn every_scalar_key_has_a_variable_that_wins_over_the_file() {
    let text = MINIMAL.replace("[source]\n", "[http]\nlisten = \"127.0.0.1:1\"\n[source]\n");
    let c = with_env(
        &text,
        &[
            ("SLUICE_HTTP_LISTEN", "0.0.0.0:9750"),
            ("SLUICE_SOURCE_MODE", "logical"),
            ("SLUICE_DELIVERY_MAX_ATTEMPTS", "8"),
            ("SLUICE_HISTORY_TTL", "12h"),
            ("SLUICE_HISTORY_ENABLED", "false"),
            ("SLUICE_SOURCE_MAX_RETAINED_WAL", "1GiB"),
            ("SLUICE_REDIS_CA_FILE", "/ca.pem"),
            ("SLUICE_CONFIG", "ignored.toml"),
            ("SLUICE_LOG", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(c.http.listen, "0.0.0.0:9750");
    assert_eq!(c.source.mode, SourceMode::Logical);
    assert_eq!(c.delivery.max_attempts, 8);
    assert_eq!(c.history.ttl, Duration::from_secs(12 * 3600));
    assert!(!c.history.enabled);
    assert_eq!(c.source.max_retained_wal, 1 << 30);
    assert_eq!(c.redis.ca_file, Some("/ca.pem".into()));
    assert_eq!(
        c.origins.of("http.listen"),
        Origin::Env("SLUICE_HTTP_LISTEN".into())
    );
    assert_eq!(c.origins.of("source.batch_size"), Origin::Default);
    // an empty variable is ignored, except listen, where "" means no HTTP
    let c = with_env(
        &text,
        &[("SLUICE_HTTP_LISTEN", ""), ("SLUICE_SOURCE_SLOT", "")],
    )
    .unwrap();
    assert_eq!(
        (c.http.listen.as_str(), c.source.slot.as_str()),
        ("", "sluice")
    );
    // every key of the schema can be set so
    for key in schema::KEYS {
        let raw = key.example.trim_matches('"');
        let c = with_env(MINIMAL, &[(key.var().as_str(), raw)]);
        assert!(c.is_ok(), "{}={raw}: {c:?}", key.var());
    }
}

#[test]
fn the_url_variables_rank_below_their_sluice_names() {
    let c = with_env(
        MINIMAL,
        &[
            ("DATABASE_URL", "postgres://legacy/db"),
            ("SLUICE_POSTGRES_URL", "postgres://sluice/db"),
        ],
    )
    .unwrap();
    assert_eq!(c.postgres.url, "postgres://sluice/db");
}

#[test]
fn a_bad_variable_names_itself_and_the_right_form() {
    let e = with_env(MINIMAL, &[("SLUICE_DELIVERY_MAX_ATTEMPTS", "lots")]).unwrap_err();
    assert_eq!(e, "environment SLUICE_DELIVERY_MAX_ATTEMPTS: delivery.max_attempts: found \"lots\", expected a whole number from 0 to 4294967295; write it like SLUICE_DELIVERY_MAX_ATTEMPTS=5");
    let e = with_env(MINIMAL, &[("SLUICE_POSTGRES_CONNECT_TIMEOUT", "10")]).unwrap_err();
    assert!(e.contains("SLUICE_POSTGRES_CONNECT_TIMEOUT=10s"), "{e}");
    let e = with_env(MINIMAL, &[("SLUICE_HTTP_LISTN", "x")]).unwrap_err();
    assert!(
        e.contains("environment SLUICE_HTTP_LISTN: ") && e.contains("SLUICE_HTTP_LISTEN"),
        "{e}"
    );
    let e = with_env(MINIMAL, &[("SLUICE_TABLES_0_APP", "x")]).unwrap_err();
    assert!(e.contains("cannot be set from the environment"), "{e}");
}

#[test]
fn postgres_may_be_absent_when_the_environment_names_the_database() {
    let text = MINIMAL.replace("[postgres]\nurl = \"postgres://x@127.0.0.1/app\"\n", "");
    let e = with_env(&text, &[]).unwrap_err();
    assert!(
        e.starts_with("sluice.toml:1: no [postgres] section") && e.contains("DATABASE_URL"),
        "{e}"
    );
    let c = with_env(&text, &[("DATABASE_URL", "postgres://u@db/x")]).unwrap();
    assert_eq!(c.postgres.url, "postgres://u@db/x");
    let c = with_env(&text, &[("PGHOST", "db"), ("PGDATABASE", "orders")]).unwrap();
    assert_eq!(
        c.postgres.url,
        "host=db port=5432 user=sluice dbname=orders"
    );
    assert_eq!(
        c.origins.of("postgres.url"),
        Origin::Env("PGHOST, PGDATABASE".into())
    );
    // a [postgres] section without url keeps the documented default
    let c = with_env(&text.replace("[source]", "[postgres]\n[source]"), &[]).unwrap();
    assert_eq!(c.postgres.url, "postgres://sluice@127.0.0.1:5432/app");
}

/// The mistakes operators made, each worded without serde and placed on the key's own line
/// (line 1 is a comment that names the keys).
#[test]
fn type_errors_name_the_key_its_line_what_was_found_and_the_right_form() {
    let cases = [
        ("[delivery]\nmax_attempts = \"1000\"", "sluice.toml:3: delivery.max_attempts: found the string \"1000\", expected a whole number from 0 to 4294967295; write it like max_attempts = 5"),
        ("[postgres]\nconnect_timeout = 10", "sluice.toml:3: postgres.connect_timeout: found the number 10, expected a duration in quotes (units: ms, s, m, h, d); write it like connect_timeout = \"10s\""),
        ("[source]\nbatch_size = -1", "sluice.toml:3: source.batch_size: found the number -1, expected a whole number, 0 or more; write it like batch_size = 1000"),
        ("[history]\nenabled = \"yes\"", "sluice.toml:3: history.enabled: found the string \"yes\", expected true or false; write it like enabled = true"),
        ("[[tables]]\ntable = \"t\"\ntype = \"t\"\ntenant = \"x\"\n# app: operation_code\napp = \"code\"", "sluice.toml:7: tables[0].app: found the string \"code\", expected a table with one of operation_code, any_of or fixed; write it like app = { operation_code = \"code\" } (or { any_of = \"permissions\" }, or { fixed = [\"crm\"] })"),
        ("[[tables]]\ntable = \"t\"\ntype = \"t\"\ntenant = \"x\"\napp = { fixed = \"crm\" }", "sluice.toml:6: tables[0].app.fixed: found the string \"crm\", expected a list of strings; write it like app = { fixed = [\"crm\", \"hrms\"] }"),
        ("[[tables]]\ntable = \"t\"\ntype = \"t\"\napp = { fixed = [] }", "sluice.toml:2: tables[0]: tenant is missing; write it like tenant = \"tenant_id\""),
        ("[sourc]\nmode = \"trigger\"", "sluice.toml:2: unknown section [sourc] (did you mean source?); the sections are postgres, source, redis, http, delivery, history, apps and tables"),
    ];
    for (text, want) in cases {
        let text =
            format!("# max_attempts, connect_timeout, batch_size, enabled, app, tenant\n{text}");
        let e = with_env(&text, &[("DATABASE_URL", "postgres://h/d")]).unwrap_err();
        assert_eq!(e, want);
    }
}

#[test]
fn a_semantic_error_is_placed_on_its_key_not_on_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let text = MINIMAL.replace(
        "[source]\n",
        "# batch_size = 0 would be refused\n[source]\n# batch_size: how many\nbatch_size = 0\n",
    );
    std::fs::write(&path, &text).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.ends_with("sluice.toml:7: source.batch_size must be at least 1"),
        "{e}"
    );
}

#[test]
fn the_schema_lists_every_key_the_sections_have() {
    let c = parse(MINIMAL).unwrap();
    let root = toml::Value::try_from(&c).unwrap();
    for section in schema::SECTIONS {
        let mut serialized: Vec<&str> = root[section]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed: Vec<&str> = schema::section(section)
            .filter(|k| k.kind != schema::Kind::Path)
            .map(|k| k.name)
            .collect();
        serialized.sort();
        listed.sort();
        assert_eq!(serialized, listed, "[{section}]");
    }
    // and what is printed parses back to the same values
    let shown = show(&c, Path::new("sluice.toml"));
    let again = Config::parse(&shown, Path::new("shown.toml")).unwrap();
    assert_eq!(format!("{:?}", again.history), format!("{:?}", c.history));
    assert_eq!(format!("{:?}", again.tables), format!("{:?}", c.tables));
}
