//! The command line as an operator meets it: help, config errors, unreachable servers.

use std::process::Command;

use crate::common::ConfigText;

fn sluice(config: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The tests' config for servers on these ports (there or not), with a password in the
/// PostgreSQL URL, quick to give up on either server.
fn config(pg_port: u16, redis_port: u16, extra: &str) -> String {
    config_for(pg_port, &format!("redis://127.0.0.1:{redis_port}"), extra)
}

fn config_for(pg_port: u16, redis_url: &str, extra: &str) -> String {
    ConfigText::new(
        &format!("postgres://postgres:secret@127.0.0.1:{pg_port}/app"),
        redis_url,
    )
    .postgres("connect_timeout = \"2s\"")
    .redis("command_timeout = \"1s\"")
    .extra(extra)
    .text()
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "setup", "check", "tail"] {
        assert!(help.contains(command), "{help}");
    }
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into()
}

/// A reason is why an event was parked: only the dead-letter commands offer --reason, and
/// replay change-log refuses it as an unknown option rather than after a connect.
#[test]
fn only_dead_letter_commands_offer_reason() {
    let change_log = help(&["replay", "change-log"]);
    for option in ["--tenant", "--app", "--table", "--dry-run"] {
        assert!(change_log.contains(option), "{change_log}");
    }
    assert!(!change_log.contains("--reason"), "{change_log}");
    for command in [&["replay", "dead-letters"][..], &["dead-letters", "list"]] {
        assert!(help(command).contains("--reason"), "{command:?}");
    }
    let (ok, _, err) = sluice(
        &config(1, 1, ""),
        &[
            "replay",
            "change-log",
            "--from",
            "1",
            "--reason",
            "unroutable",
        ],
    );
    assert!(
        !ok && err.contains("unexpected argument '--reason'"),
        "{err}"
    );
}

#[test]
fn a_config_typo_is_one_line_naming_file_line_and_key() {
    let text = config(1, 1, "batch_sise = 10");
    let typo = 1 + text.lines().position(|l| l.contains("batch_sise")).unwrap();
    let (ok, _, err) = sluice(&text, &["check"]);
    assert!(!ok);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(
        line.contains(&format!("sluice.toml:{typo}:")) && line.contains("batch_sise"),
        "{err}"
    );
}

#[test]
fn unreachable_servers_fail_with_one_sentence_and_no_password() {
    let (pg_port, redis_port) = (sluice::testkit::free_port(), sluice::testkit::free_port());
    let (ok, stdout, _) = sluice(&config(pg_port, redis_port, ""), &["check"]);
    assert!(!ok);
    assert!(
        stdout.contains("FAIL postgres postgres://postgres:***@127.0.0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL redis"), "{stdout}");
    assert!(!stdout.contains("secret"));
    let (ok, _, err) = sluice(&config(pg_port, redis_port, ""), &["setup"]);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("cannot connect to PostgreSQL"),
        "{err}"
    );
}

/// `check` connects to Redis as the daemon does: the daemon sends channel transactions, not
/// scripts, so a user whose ACL forbids scripting passes (one that forbids MULTI fails, see
/// `channel_transactions`); a replica fails as one.
#[test]
fn check_passes_a_redis_user_without_scripting_and_fails_a_replica() {
    let redis = sluice::testkit::Redis::start().unwrap();
    let send = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(send(&[
        "ACL",
        "SETUSER",
        "noscript",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-@scripting"
    ])
    .contains("OK"));
    let redis_line = |url: &str| {
        let text = config_for(sluice::testkit::free_port(), url, "");
        let (_, stdout, _) = sluice(&text, &["check"]);
        stdout
            .lines()
            .find(|l| l.contains(" redis "))
            .unwrap_or_default()
            .to_string()
    };
    let plain = format!("redis://127.0.0.1:{}", redis.port());
    assert!(
        redis_line(&plain).starts_with("ok ") || redis_line(&plain).starts_with("OK "),
        "{}",
        redis_line(&plain)
    );
    let noscript = redis_line(&format!("redis://noscript:pw@127.0.0.1:{}", redis.port()));
    assert!(
        noscript.starts_with("ok ") && noscript.contains("channel transactions"),
        "{noscript}"
    );
    send(&[
        "REPLICAOF",
        "127.0.0.1",
        &sluice::testkit::free_port().to_string(),
    ]);
    let replica = redis_line(&plain);
    assert!(
        replica.starts_with("FAIL") && replica.contains("replica"),
        "{replica}"
    );
}

/// `sluice completions SHELL` needs no config; the bash script completes commands and options
/// when bash runs it.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let empty = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(empty.path())
            .env_remove("SLUICE_CONFIG")
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(script("zsh").starts_with("#compdef sluice"));
    assert!(script("fish").contains("complete -c sluice"));
    let bash = empty.path().join("sluice.bash");
    std::fs::write(&bash, script("bash")).unwrap();
    let complete = |words: &str| {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _sluice sluice \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            bash.display()
        );
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("sluice rep"), "replay");
    assert_eq!(complete("sluice replay change-log --ta"), "--table");
}
