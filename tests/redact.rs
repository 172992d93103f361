//! No password is printed or stored, in any form a connection string can carry it: a URL's
//! user info or `?password=`, libpq key=value (bare or quoted), for PostgreSQL and Redis.
//! For each form, with the right password, a wrong one, and a server that is not there,
//! `sluice check`, `status`, `setup --dry-run` and `run` are run against real servers
//! (PostgreSQL asking for passwords, Redis with `requirepass` and an ACL user), and their
//! stdout, stderr (the daemon's log), `/readyz`, `/status` and `sluice.checkpoint.last_error`
//! must not hold any password, nor any part of one: every password here contains [`MARK`].

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{redis_command, Env, DB};
use sluice::testkit::{free_port, PgOptions, Postgres, Redis};

/// In every password below; found anywhere in the output, something leaked.
const MARK: &str = "S3cr";
/// The password of role `u_plain`, written bare.
const PG_PLAIN: &str = "S3cr-pg-plain";
/// The password of role `u_spaced`, which only a quoted key=value can carry.
const PG_SPACED: &str = "S3cr et pg";
/// Redis's `requirepass` (the default user).
const REDIS_DEFAULT: &str = "S3cr-redis";
/// The password of the Redis ACL user `sluice`.
const REDIS_ACL: &str = "S3cr-acl";
/// How long one `sluice run` is watched at most: long enough for a slow start, short enough
/// for 21 runs.
const RUN_LIMIT: Duration = Duration::from_secs(15);

/// The superuser keeps trust (the harness's psql); everyone else must give a password.
const HBA: &str = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Right,
    Wrong,
    Down,
}

/// One thing Sluice printed or stored.
struct Capture {
    case: String,
    what: &'static str,
    text: String,
}

fn servers() -> Env {
    let options = PgOptions {
        settings: Vec::new(),
        files: vec![("pg_hba.conf".into(), HBA.as_bytes().to_vec())],
    };
    let pg = Postgres::start_with(&options).expect("start postgres");
    let redis = Redis::start().expect("start redis");
    let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
    let env = Env::start_on(pg, redis, |_| config(&pg_url, &redis_url, 0));
    env.sql(&format!(
        "CREATE ROLE u_plain LOGIN SUPERUSER PASSWORD '{PG_PLAIN}'; CREATE ROLE u_spaced LOGIN SUPERUSER PASSWORD '{PG_SPACED}'"
    ));
    let port = env.redis.port();
    redis_command(
        port,
        &[
            "ACL",
            "SETUSER",
            "sluice",
            "on",
            &format!(">{REDIS_ACL}"),
            "~*",
            "&*",
            "+@all",
        ],
    );
    assert_eq!(
        redis_command(port, &["CONFIG", "SET", "requirepass", REDIS_DEFAULT]).trim(),
        "+OK"
    );
    env
}

/// A config for `pg` and `redis`, quick to give up on a server, serving HTTP on `http_port`.
fn config(pg: &str, redis: &str, http_port: u16) -> String {
    format!(
        r#"[postgres]
url = "{pg}"
connect_timeout = "1s"
[redis]
url = "{redis}"
command_timeout = "1s"
[source]
mode = "trigger"
poll_interval = "100ms"
[delivery]
max_backoff = "1s"
[apps]
crm = {{ prefixes = ["crm."] }}
[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = {{ operation_code = "operation_code" }}
[http]
listen = "127.0.0.1:{http_port}"
"#
    )
}

/// The PostgreSQL URLs of every form for `case`, each with a Redis URL that works.
fn pg_forms(env: &Env, case: Case) -> Vec<(String, String, String)> {
    let port = if case == Case::Down {
        free_port()
    } else {
        env.pg.port()
    };
    let (plain, spaced) = if case == Case::Wrong {
        ("S3cr-wrong", "S3cr wr ong")
    } else {
        (PG_PLAIN, PG_SPACED)
    };
    let redis = format!("redis://:{REDIS_DEFAULT}@127.0.0.1:{}", env.redis.port());
    [
        (
            "postgres user info",
            format!("postgresql://u_plain:{plain}@127.0.0.1:{port}/{DB}"),
        ),
        (
            "postgres ?password=",
            format!("postgres://u_plain@127.0.0.1:{port}/{DB}?password={plain}"),
        ),
        (
            "postgres key=value",
            format!("host=127.0.0.1 port={port} user=u_plain password={plain} dbname={DB}"),
        ),
        (
            "postgres key=value quoted",
            format!("host=127.0.0.1 port={port} user=u_spaced password='{spaced}' dbname={DB}"),
        ),
    ]
    .into_iter()
    .map(|(name, url)| (format!("{name}, {case:?}"), url, redis.clone()))
    .collect()
}

/// The Redis URLs of every form for `case`, each with a PostgreSQL URL that works.
fn redis_forms(env: &Env, case: Case) -> Vec<(String, String, String)> {
    let port = if case == Case::Down {
        free_port()
    } else {
        env.redis.port()
    };
    let (default, acl) = if case == Case::Wrong {
        ("S3cr-wrong", "S3cr-wrong")
    } else {
        (REDIS_DEFAULT, REDIS_ACL)
    };
    [
        (
            "redis :password@",
            format!("redis://:{default}@127.0.0.1:{port}"),
        ),
        (
            "redis user:password@",
            format!("redis://sluice:{acl}@127.0.0.1:{port}"),
        ),
        (
            "redis ?password=",
            format!("redis://127.0.0.1:{port}/?password={default}"),
        ),
    ]
    .into_iter()
    .map(|(name, url)| (format!("{name}, {case:?}"), env.pg.url_for(DB), url))
    .collect()
}

/// The `sluice` binary with `config`, and no URL from the environment.
fn sluice(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("--config")
        .arg(config)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    command
}

/// `GET path` on 127.0.0.1:`port`, the whole answer; empty when nothing answers.
fn http_get(port: u16, path: &str) -> String {
    let exchange = || -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    exchange().unwrap_or_default()
}

/// `sluice run` until it exits, turns ready, logs a warning or an error, or `/readyz` names a
/// server as unreachable (it may exit on a server that is down, or stay and retry); then
/// `/readyz` and `/status`, SIGTERM, and what it printed. Returns whether it was ready.
fn run_daemon(config: &Path, http_port: u16, case: &str, out: &mut Vec<Capture>) -> bool {
    let dir = config.parent().unwrap();
    let (stdout, stderr) = (dir.join("run.out"), dir.join("run.err"));
    let mut child = sluice(config)
        .args(["--log-level", "sluice=debug,info", "run"])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn sluice run");
    let deadline = Instant::now() + RUN_LIMIT;
    let mut ready = false;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        let readyz = http_get(http_port, "/readyz");
        ready = readyz.starts_with("HTTP/1.1 200");
        if ready || readyz.contains("unreachable") || log.contains("WARN") || log.contains("ERROR")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (what, path) in [("/readyz", "/readyz"), ("/status", "/status")] {
        out.push(Capture {
            case: case.into(),
            what,
            text: http_get(http_port, path),
        });
    }
    stop(&mut child);
    for (what, path) in [("run stdout", &stdout), ("run stderr", &stderr)] {
        out.push(Capture {
            case: case.into(),
            what,
            text: std::fs::read_to_string(path).unwrap_or_default(),
        });
    }
    ready
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one-shot commands, each with stdout and stderr.
fn commands(config: &Path, case: &str, out: &mut Vec<Capture>) {
    for (what, args) in [
        ("check", &["check"][..]),
        ("status", &["status"]),
        ("setup --dry-run", &["setup", "--dry-run"]),
    ] {
        let output = sluice(config).args(args).output().expect("run sluice");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out.push(Capture {
            case: case.into(),
            what,
            text,
        });
    }
}

/// Every case, one after the other: each run's `last_error` is its own.
fn run_all(env: &Env, cases: Vec<(String, String, String)>) -> (Vec<Capture>, Vec<String>) {
    let mut out = Vec::new();
    let mut ready = Vec::new();
    for (n, (case, pg, redis)) in cases.into_iter().enumerate() {
        let http_port = free_port();
        let path: PathBuf = env.dir.path().join(format!("case-{n}")).join("sluice.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, config(&pg, &redis, http_port)).unwrap();
        commands(&path, &case, &mut out);
        env.sql("UPDATE sluice.checkpoint SET last_error = NULL, last_error_at = NULL");
        // a change to publish, so that a Redis that cannot be used is found out
        env.sql(&format!(
            "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
             VALUES ('redact-{n}', 'acme', 'crm.leads.create')"
        ));
        if run_daemon(&path, http_port, &case, &mut out) {
            ready.push(case.clone());
        }
        let stored =
            env.sql("SELECT coalesce(string_agg(last_error, E'\\n'), '') FROM sluice.checkpoint");
        out.push(Capture {
            case,
            what: "sluice.checkpoint.last_error",
            text: stored.trim().to_string(),
        });
    }
    (out, ready)
}

/// Panics naming every capture that holds [`MARK`], with its lines that do.
fn assert_no_password(captures: &[Capture]) {
    let leaks: Vec<String> = captures
        .iter()
        .filter(|c| c.text.contains(MARK))
        .map(|c| {
            let lines: Vec<&str> = c.text.lines().filter(|l| l.contains(MARK)).collect();
            format!("[{}] {}:\n  {}", c.case, c.what, lines.join("\n  "))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "passwords printed or stored:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn no_password_is_printed_or_stored_in_any_form() {
    let env = servers();
    let mut cases = Vec::new();
    for case in [Case::Right, Case::Wrong, Case::Down] {
        cases.extend(pg_forms(&env, case));
        cases.extend(redis_forms(&env, case));
    }
    let (captures, ready) = run_all(&env, cases);
    let stored = captures
        .iter()
        .filter(|c| c.what == "sluice.checkpoint.last_error" && !c.text.is_empty());
    let stored: Vec<String> = stored.map(|c| format!("[{}] {}", c.case, c.text)).collect();
    eprintln!(
        "ready: {ready:?}\nlast_error stored:\n{}",
        stored.join("\n")
    );
    assert_no_password(&captures);
    // The right passwords work in every form the daemon's clients read (fred takes a Redis
    // password from the user info only).
    for form in [
        "postgres user info",
        "postgres ?password=",
        "postgres key=value",
        "postgres key=value quoted",
        "redis :password@",
        "redis user:password@",
    ] {
        assert!(
            ready.contains(&format!("{form}, Right")),
            "{form} with the right password never became ready: {ready:?}"
        );
    }
}
