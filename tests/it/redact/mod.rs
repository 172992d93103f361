//! No password is printed or stored, in any form a connection string can carry it: a URL's
//! user info or `?password=`, libpq key=value (bare or quoted), for PostgreSQL and Redis.
//! For each form, with the right password, a wrong one, and a server that is not there,
//! `sluice check`, `status`, `setup --dry-run` and `run` are run against real servers
//! (PostgreSQL asking for passwords, Redis with `requirepass` and an ACL user), and their
//! stdout, stderr (the daemon's log), `/readyz`, `/status` and `sluice.checkpoint.last_error`
//! must not hold any password, nor any part of one: every password here contains [`MARK`].
//! One more run has Redis refuse the daemon's user and then let it in, so that there is a
//! stored `last_error` to look at whether the daemon stops on it or rides it out.

mod process;

use crate::common::{redis_command, Env, DB};
use process::{commands, config, redis_admin, write_config, Capture, Run};
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
/// The superuser keeps trust (the harness's psql); everyone else must give a password.
const HBA: &str = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Right,
    Wrong,
    Down,
}

/// PostgreSQL asking every role but the superuser for a password, Redis with `requirepass`
/// and an ACL user, the seed schema and `sluice setup`.
fn servers() -> Env {
    let options = PgOptions {
        settings: Vec::new(),
        files: vec![("pg_hba.conf".into(), HBA.as_bytes().to_vec())],
    };
    let pg = Postgres::start_with(&options).expect("start postgres");
    let redis = Redis::start().expect("start redis");
    let (pg_url, redis_url) = (pg.url_for(DB), redis.url());
    let env = Env::start_on(pg, redis, |_| config(&pg_url, &redis_url));
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

/// No stored error, and a change to publish (so a Redis that cannot be used is found out).
fn prepare(env: &Env, name: &str) {
    env.sql("UPDATE sluice.checkpoint SET last_error = NULL, last_error_at = NULL");
    env.sql(&format!(
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) \
         VALUES ('{name}', 'acme', 'crm.leads.create')"
    ));
}

fn last_error(env: &Env) -> String {
    let sql = "SELECT coalesce(string_agg(last_error, E'\\n'), '') FROM sluice.checkpoint";
    env.sql(sql).trim().to_string()
}

/// Every case, one after the other: each run's `last_error` is its own.
fn run_all(env: &Env, cases: Vec<(String, String, String)>) -> (Vec<Capture>, Vec<String>) {
    let mut out = Vec::new();
    let mut ready = Vec::new();
    for (n, (case, pg, redis)) in cases.into_iter().enumerate() {
        let path = write_config(env, &format!("case-{n}"), &pg, &redis);
        commands(&path, &case, &mut out);
        prepare(env, &format!("case-{n}"));
        let mut run = Run::start(&path);
        run.watch(Run::settled);
        if run.ready() {
            ready.push(case.clone());
        }
        run.finish(&case, &mut out);
        let text = last_error(env);
        out.push(Capture {
            case,
            what: "sluice.checkpoint.last_error",
            text,
        });
    }
    (out, ready)
}

/// Redis refuses the daemon's ACL user at first and lets it in later: the daemon stops on it
/// or rides it out, and either way stores what happened in `last_error`, which is returned.
fn refused_then_let_in(env: &Env, out: &mut Vec<Capture>) -> String {
    let (case, port) = (
        "redis user:password@, refused then let in",
        env.redis.port(),
    );
    let redis = format!("redis://sluice:{REDIS_ACL}@127.0.0.1:{port}");
    let path = write_config(env, "refused", &env.pg.url_for(DB), &redis);
    prepare(env, "refused");
    redis_admin(port, REDIS_DEFAULT, &["ACL", "SETUSER", "sluice", "off"]);
    let mut run = Run::start(&path);
    run.watch(Run::settled);
    redis_admin(port, REDIS_DEFAULT, &["ACL", "SETUSER", "sluice", "on"]);
    run.watch(|_| !last_error(env).is_empty());
    run.finish(case, out);
    let text = last_error(env);
    out.push(Capture {
        case: case.into(),
        what: "sluice.checkpoint.last_error",
        text: text.clone(),
    });
    text
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
    let (mut captures, ready) = run_all(&env, cases);
    let refused = refused_then_let_in(&env, &mut captures);
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
    assert!(
        !refused.is_empty(),
        "Redis refusing the daemon left no last_error to look at"
    );
}
