//! Logs never carry a secret: with passwords in both URLs, the daemon's text and JSON logs,
//! through a PostgreSQL crash, and `check`'s findings show `***` where the passwords were.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{config_text, insert, redis_command, wait_until, Env, DB};

const WAIT: Duration = Duration::from_secs(30);
const PG_PASSWORD: &str = "pg-pw-s3cret";
const REDIS_PASSWORD: &str = "redis-pw-s3cret";

fn secret_config(env: &Env) -> std::path::PathBuf {
    // The throwaway PostgreSQL trusts local connections, so any password is accepted;
    // Redis is made to require its password.
    redis_command(
        env.redis.port(),
        &["CONFIG", "SET", "requirepass", REDIS_PASSWORD],
    );
    let pg = env
        .pg
        .url_for(DB)
        .replace("postgres@", &format!("postgres:{PG_PASSWORD}@"));
    let redis = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", env.redis.port());
    let path = env.dir.path().join("secret.toml");
    std::fs::write(&path, config_text(&pg, &redis, "")).unwrap();
    path
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PG_PASSWORD, REDIS_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_and_no_finding_shows_a_password() {
    let env = Env::start("");
    let config = secret_config(&env);
    for format in ["text", "json"] {
        let log_path = env.dir.path().join(format!("{format}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(&config)
            .args(["--log-format", format, "--log-level", "debug", "run"])
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        wait_until!(WAIT, || log().contains("connected to PostgreSQL"), log).await;
        let offset = if format == "text" { 0 } else { 1000 };
        insert(&env, offset + 1, offset + 20);
        wait_until!(WAIT, || env.pending() == 0, log).await;
        env.pg.kill().unwrap();
        wait_until!(WAIT, || log().contains("PostgreSQL is unavailable"), log).await;
        env.pg.restart().unwrap();
        insert(&env, offset + 21, offset + 40);
        wait_until!(WAIT, || env.pending() == 0, log).await;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
        let text = log();
        assert!(
            text.contains("***"),
            "the URLs are logged, redacted:\n{text}"
        );
        if format == "json" {
            assert!(
                text.lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
                "every line is JSON:\n{text}"
            );
        }
        assert_no_secret(&format!("the {format} log"), &text);
    }
    let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(findings.contains("***"), "{findings}");
    assert_no_secret("check", &findings);
}

/// Written to a file (not a terminal), the log has no colour codes; SIGHUP is logged and
/// ignored rather than ending the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_is_plain_text_and_sighup_does_not_stop_the_daemon() {
    let env = Env::start("");
    let sub = env.subscribe().await;
    let mut daemon = env.daemon();
    insert(&env, 1, 3);
    sub.wait_for(3, WAIT, || daemon.log()).await;
    assert!(
        !daemon.log().contains('\u{1b}'),
        "no ANSI escapes in a file:\n{}",
        daemon.log()
    );
    daemon.send_signal("-HUP");
    daemon.wait_for_log("SIGHUP received and ignored").await;
    insert(&env, 4, 6);
    sub.wait_for(6, WAIT, || daemon.log()).await;
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_none(),
        "still running:\n{}",
        daemon.log()
    );
}
