use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let config = Config::parse(text, Path::new("sluice.toml"))?;
    let problems = config.problems();
    if problems.is_empty() {
        return Ok(config);
    }
    let problems = problems
        .into_iter()
        .map(|(_, message)| Located { line: 0, message })
        .collect();
    Err(ConfigError::Invalid {
        path: "sluice.toml".into(),
        problems,
    })
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
    let mut c = parse(MINIMAL).unwrap();
    c.apply_env(|k| match k {
        "DATABASE_URL" => Some("postgres://env/db".into()),
        "REDIS_URL" => Some("redis://env:1".into()),
        _ => None,
    });
    assert_eq!(c.postgres.url, "postgres://env/db");
    assert_eq!(c.redis.url, "redis://env:1");
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
        e.starts_with("sluice.toml:6: ") && e.contains("invalid byte size \"8 GX\""),
        "{e}"
    );
}
