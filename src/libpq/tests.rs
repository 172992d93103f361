use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn config(url: &str) -> tokio_postgres::Config {
    url.parse().unwrap()
}

#[test]
fn the_url_wins_over_the_environment() {
    let mut c = config("postgres://app:fromurl@db:6000/orders");
    let get = env(&[
        ("PGHOST", "other"),
        ("PGPORT", "7000"),
        ("PGUSER", "u"),
        ("PGPASSWORD", "env"),
        ("PGDATABASE", "d"),
    ]);
    let out = apply(&mut c, &get);
    assert!(out.applied.is_empty(), "{:?}", out.applied);
    assert_eq!(c.get_hosts(), &[Host::Tcp("db".into())]);
    assert_eq!(c.get_ports(), &[6000]);
    assert_eq!(c.get_password(), Some(&b"fromurl"[..]));
}

#[test]
fn the_environment_fills_what_the_url_leaves_out() {
    let mut c = config("postgres:///orders");
    let get = env(&[
        ("PGHOST", "db1,db2"),
        ("PGPORT", "6432"),
        ("PGUSER", "app"),
        ("PGPASSWORD", "s3cret"),
        ("PGDATABASE", "ignored"),
    ]);
    let out = apply(&mut c, &get);
    let from: Vec<(&str, &str)> = out
        .applied
        .iter()
        .map(|a| (a.setting, a.from.as_str()))
        .collect();
    assert_eq!(
        from,
        [
            ("host", "PGHOST"),
            ("port", "PGPORT"),
            ("user", "PGUSER"),
            ("password", "PGPASSWORD")
        ]
    );
    assert_eq!(
        c.get_hosts(),
        &[Host::Tcp("db1".into()), Host::Tcp("db2".into())]
    );
    assert_eq!(
        (c.get_user(), c.get_dbname()),
        (Some("app"), Some("orders"))
    );
    assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
}

#[test]
fn the_password_file_comes_after_pgpassword() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        "# host:port:db:user:password\nother:*:*:*:no\ndb:5432:app:sluice:from\\:file\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.to_str().unwrap();
    let mut c = config("postgres://sluice@db/app");
    let out = apply(&mut c, &env(&[("PGPASSFILE", path)]));
    assert_eq!(c.get_password(), Some(&b"from:file"[..]));
    assert_eq!(out.applied[0].from, format!("{path}:3"));

    let mut c = config("postgres://sluice@db/app");
    apply(&mut c, &env(&[("PGPASSFILE", path), ("PGPASSWORD", "env")]));
    assert_eq!(c.get_password(), Some(&b"env"[..]));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut c = config("postgres://sluice@db/app");
    let out = apply(&mut c, &env(&[("PGPASSFILE", path)]));
    assert_eq!(c.get_password(), None);
    assert!(matches!(out.warning, Some(pgpass::Refused::Open(_))));
}

#[test]
fn a_url_is_made_from_the_environment_only_when_it_names_something() {
    assert_eq!(url_from_env(&env(&[("PGPASSWORD", "x")])), None);
    let (url, used) = url_from_env(&env(&[("PGHOST", "db"), ("PGUSER", "o'brien x")])).unwrap();
    assert_eq!(url, "host=db port=5432 user='o\\'brien x' dbname=app");
    assert_eq!(used, ["PGHOST", "PGUSER"]);
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    assert_eq!(parsed.get_user(), Some("o'brien x"));
}
