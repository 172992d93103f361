//! TLS to both servers, on real ones: a throwaway PostgreSQL with `ssl = on` and a
//! redis-server with a TLS port, both holding a certificate for 127.0.0.1 and localhost that a
//! CA made by the test signed. Both capture modes run end to end over TLS, the certificate
//! checks fail the way an operator can act on, `check` says what is encrypted, and servers
//! that ask for a client certificate get one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common;
use crate::common::{exit_within, insert, ConfigText, Env, DB};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sluice::source::replication::ReplicationConn;
use sluice::testkit::{PgOptions, Postgres, Redis};

/// A CA, a server and a client certificate it signed, and a second CA that signed nothing
/// here. The client certificate is for the role `certuser` (PostgreSQL's `cert` method
/// compares the common name with the role).
struct Pki {
    dir: tempfile::TempDir,
    ca_cert: String,
    server_cert: String,
    server_key: String,
}

impl Pki {
    fn new() -> Pki {
        let (ca, ca_key) = make_ca("sluice test CA");
        let (other, _) = make_ca("some other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "certuser");
        let client = params.signed_by(&client_key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("ca.pem", ca.pem()),
            ("other-ca.pem", other.pem()),
            ("client.crt", client.pem()),
            ("client.key", client_key.serialize_pem()),
        ];
        for (name, pem) in files {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Pki {
            dir,
            ca_cert: ca.pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// PostgreSQL with `ssl = on` and the server certificate; `certuser` must log in with a
    /// client certificate over TLS, everyone else is trusted.
    fn postgres(&self) -> Postgres {
        let hba = "local all all trust\nhostssl all certuser 127.0.0.1/32 cert\nhost all all 127.0.0.1/32 trust\n";
        let settings = [
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
            ("ssl_ca_file", "ca.crt"),
        ];
        let files = [
            ("server.crt", &self.server_cert),
            ("server.key", &self.server_key),
            ("ca.crt", &self.ca_cert),
            ("pg_hba.conf", &hba.to_string()),
        ];
        let options = PgOptions {
            settings: settings
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec(),
            files: files
                .map(|(name, text)| (name.to_string(), text.clone().into_bytes()))
                .to_vec(),
        };
        Postgres::start_with(&options).expect("start postgres with ssl")
    }

    /// redis-server with a TLS port; with `clients`, it asks clients for a certificate.
    fn redis(&self, clients: bool) -> Redis {
        let client_ca = clients.then_some(self.ca_cert.as_bytes());
        Redis::start_tls(
            self.server_cert.as_bytes(),
            self.server_key.as_bytes(),
            client_ca,
        )
        .expect("start redis with a TLS port")
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// `postgres.url` for database `app` with these TLS parameters.
fn pg_url(pg: &Postgres, host: &str, params: &str) -> String {
    format!("postgres://postgres@{host}:{}/{DB}?{params}", pg.port())
}

fn verify_full(pg: &Postgres, ca: &Path) -> String {
    pg_url(
        pg,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
}

/// `[redis]` keys: `ca_file`, and the client certificate when `identity`.
fn redis_keys(pki: &Pki, ca_file: &Path, identity: bool) -> String {
    let mut keys = format!("ca_file = \"{}\"\n", ca_file.display());
    if identity {
        keys += &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.file("client.crt").display(),
            pki.file("client.key").display()
        );
    }
    keys
}

/// The harness's config with these URLs and `[redis]` keys.
fn tls_config(pg_url: &str, redis_url: &str, redis_keys: &str, extra: &str) -> String {
    ConfigText::new(pg_url, redis_url)
        .redis(redis_keys)
        .extra(extra)
        .text()
}

/// TLS servers, the seed schema, and `sluice setup` run over TLS to both. With `clients`,
/// Redis asks for a client certificate and the config has one.
fn tls_env(pki: &Pki, extra: &str, clients: bool) -> Env {
    let (pg, redis) = (pki.postgres(), pki.redis(clients));
    let (url, redis_url) = (verify_full(&pg, &pki.ca()), redis.tls_url().unwrap());
    let keys = redis_keys(pki, &pki.ca(), clients);
    Env::start_on(pg, redis, |_| tls_config(&url, &redis_url, &keys, extra))
}

/// Runs `sluice check` (or another command) with a config of these URLs, within a deadline.
fn sluice_with(env: &Env, name: &str, pg_url: &str, redis_keys: &str, args: &[&str]) -> Output {
    let path = env.dir.path().join(name);
    std::fs::write(
        &path,
        tls_config(pg_url, &env.redis.tls_url().unwrap(), redis_keys, ""),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    if exit_within(&mut child, limit).is_none() {
        let _ = child.kill();
        panic!("sluice did not exit within {limit:?}");
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `check` line about `what` ("postgres ", "redis "), failing or not.
fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l[5..].starts_with(what))
        .unwrap_or_else(|| panic!("no {what:?} line in:\n{report}"))
}

/// `sluice check`, which must pass: its report.
fn check_passes(env: &Env) -> String {
    let check = env.sluice(&["check"]);
    let report = text(&check);
    assert!(check.status.success(), "{report}");
    report
}

/// Starts the daemon and waits for the events of `n` new rows.
async fn events_flow(env: &Env, n: i64) -> common::Daemon {
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(env, 1, n);
    sub.wait_for(n as usize, Duration::from_secs(60), || daemon.log())
        .await;
    daemon
}

/// (unencrypted, all) client sessions on database `app`, this one aside.
fn sessions(env: &Env) -> (i64, i64) {
    let row = env.sql(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = 'app' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
    );
    let (plain, all) = row.trim().split_once('|').unwrap();
    (plain.parse().unwrap(), all.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_over_tls_to_both_servers_and_tail_and_check_say_so() {
    let pki = Pki::new();
    let env = tls_env(&pki, "", false);
    let report = check_passes(&env);
    assert!(
        report.contains(
            "ok   postgres: TLS TLSv1.3 (sslmode=verify-full: certificate and host name verified)"
        ),
        "{report}"
    );
    assert!(
        line(&report, "redis ").contains(
            "a primary that lets Sluice run its channel transactions, TLS (certificate and host name verified against redis.ca_file"
        ),
        "{report}"
    );

    let _daemon = events_flow(&env, 20).await;
    let (plain, all) = sessions(&env);
    assert!(
        plain == 0 && all >= 1,
        "the daemon's sessions are all TLS: {plain} plain of {all}"
    );

    let mut tail = env
        .command()
        .args(["tail", "crm:*:*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (tail.stdout.take().unwrap(), tail.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tail says it listens");
    assert!(listening.starts_with("listening on crm:*:*"), "{listening}");
    insert(&env, 21, 21);
    let event = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tail prints the event that arrived over TLS");
    assert!(
        event.starts_with("crm:tenant-1:credit-configs {") && event.contains("\"k21\""),
        "{event}"
    );
    let _ = tail.kill();
    let _ = tail.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_over_tls_to_both_servers() {
    let pki = Pki::new();
    let env = tls_env(&pki, "mode = \"logical\"", false);
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::wait_until!(
        Duration::from_secs(60),
        || env.sql("SELECT count(*) FROM pg_stat_replication").trim() == "1",
        || daemon.log()
    )
    .await;
    insert(&env, 1, 20);
    sub.wait_for(20, Duration::from_secs(60), || daemon.log())
        .await;
    let ssl = env.sql("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)");
    assert_eq!(ssl.trim(), "t", "the replication stream is encrypted");
    assert_eq!(sessions(&env).0, 0, "so is every SQL session of the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_one_line_errors_with_their_fix() {
    let pki = Pki::new();
    let env = tls_env(&pki, "", false);
    let wrong = verify_full(&env.pg, &pki.other_ca());

    let out = sluice_with(
        &env,
        "wrong-ca.toml",
        &wrong,
        &redis_keys(&pki, &pki.other_ca(), false),
        &["check"],
    );
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    let pg = line(&report, "postgres ");
    assert!(pg.starts_with("FAIL") && pg.contains("TLS certificate problem: the server's certificate is not signed by a trusted CA; put the CA that signed it in postgres.url as sslrootcert="), "{report}");
    let redis = line(&report, "redis ");
    assert!(
        redis.starts_with("FAIL")
            && redis.contains("TLS certificate problem")
            && redis.contains("redis.ca_file"),
        "{report}"
    );

    for command in [&["setup"][..], &["run"], &["tail"]] {
        let out = sluice_with(
            &env,
            "wrong-ca.toml",
            &wrong,
            &redis_keys(&pki, &pki.other_ca(), false),
            command,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            !out.status.success() && last.contains("TLS certificate problem"),
            "{command:?}: {stderr}"
        );
    }

    let repl = ReplicationConn::connect(&wrong, Duration::from_secs(10))
        .await
        .err()
        .expect("the replication connection checks the CA too");
    assert!(
        repl.to_string().contains("not signed by a trusted CA"),
        "{repl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pki = Pki::new();
    let env = tls_env(&pki, "", false);
    let ca = pki.ca();
    let other_name = |mode: &str| {
        pg_url(
            &env.pg,
            "db.invalid",
            &format!(
                "hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
                ca.display()
            ),
        )
    };

    let out = sluice_with(
        &env,
        "full.toml",
        &other_name("verify-full"),
        &redis_keys(&pki, &ca, false),
        &["check"],
    );
    let report = text(&out);
    let pg = line(&report, "postgres ");
    assert!(!out.status.success() && pg.contains("certificate does not name the host you connect to (expected db.invalid, it lists localhost, 127.0.0.1)"), "{report}");
    assert!(pg.contains("use sslmode=verify-ca"), "{report}");
    let repl = ReplicationConn::connect(&other_name("verify-full"), Duration::from_secs(10))
        .await
        .err()
        .expect("name mismatch");
    assert!(
        repl.to_string().contains("does not name the host"),
        "{repl}"
    );

    let out = sluice_with(
        &env,
        "ca.toml",
        &other_name("verify-ca"),
        &redis_keys(&pki, &ca, false),
        &["check"],
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("postgres: TLS TLSv1.3 (sslmode=verify-ca: certificate chain verified, host name not checked)"), "{report}");
    let mut repl = ReplicationConn::connect(&other_name("verify-ca"), Duration::from_secs(10))
        .await
        .expect("verify-ca ignores the name");
    assert_eq!(repl.simple_query("IDENTIFY_SYSTEM").await.unwrap().len(), 1);

    let require = pg_url(&env.pg, "127.0.0.1", "sslmode=require");
    let out = sluice_with(
        &env,
        "require.toml",
        &require,
        &redis_keys(&pki, &ca, false),
        &["check"],
    );
    let report = text(&out);
    assert!(
        out.status.success() && report.contains("(sslmode=require: certificate not verified;"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_against_a_server_without_tls_and_prefer_falls_back() {
    let pg = Postgres::start().unwrap();
    let url = |mode: &str| format!("{}?sslmode={mode}", pg.url());
    let e = sluice::pg::connect(&url("require"), Duration::from_secs(10))
        .await
        .err()
        .expect("require needs TLS");
    assert!(
        e.to_string()
            .starts_with("PostgreSQL does not accept TLS connections"),
        "{e}"
    );
    let e = ReplicationConn::connect(&url("verify-full"), Duration::from_secs(10))
        .await
        .err()
        .expect("verify-full needs TLS");
    assert!(
        e.to_string().contains("does not accept TLS connections"),
        "{e}"
    );
    for mode in ["prefer", "disable"] {
        sluice::pg::connect(&url(mode), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        ReplicationConn::connect(&url(mode), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_go_to_servers_that_ask_for_them() {
    let pki = Pki::new();
    let env = tls_env(&pki, "", true);
    let report = check_passes(&env);
    assert!(
        line(&report, "redis ").contains("channel transactions, TLS"),
        "{report}"
    );
    let _daemon = events_flow(&env, 5).await;

    let out = sluice_with(
        &env,
        "no-identity.toml",
        &verify_full(&env.pg, &pki.ca()),
        &redis_keys(&pki, &pki.ca(), false),
        &["check"],
    );
    let report = text(&out);
    let redis = line(&report, "redis ");
    assert!(
        !out.status.success()
            && redis.contains("TLS client certificate problem")
            && redis.contains("redis.cert_file and redis.key_file"),
        "{report}"
    );

    env.sql("CREATE ROLE certuser LOGIN REPLICATION");
    let ca = pki.ca();
    let url = |identity: &str| {
        format!(
            "postgres://certuser@127.0.0.1:{}/{DB}?sslmode=verify-full&sslrootcert={}{identity}",
            env.pg.port(),
            ca.display()
        )
    };
    let identity = format!(
        "&sslcert={}&sslkey={}",
        pki.file("client.crt").display(),
        pki.file("client.key").display()
    );
    let conn = sluice::pg::connect(&url(&identity), Duration::from_secs(10))
        .await
        .expect("a certificate login");
    let user: String = conn
        .client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "certuser");
    let mut repl = ReplicationConn::connect(&url(&identity), Duration::from_secs(10))
        .await
        .expect("the replication connection sends it too");
    assert_eq!(repl.simple_query("IDENTIFY_SYSTEM").await.unwrap().len(), 1);
    let e = sluice::pg::connect(&url(""), Duration::from_secs(10))
        .await
        .err()
        .expect("no certificate, no login");
    assert!(e.to_string().contains("certificate"), "{e}");
}
