//! TLS to both servers, on real ones: a throwaway PostgreSQL with `ssl = on` and a
//! redis-server with a TLS port, both holding a certificate for 127.0.0.1 and localhost that a
//! CA made by the test signed. Both capture modes run end to end over TLS, the certificate
//! checks fail the way an operator can act on, and `check` says what is encrypted.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{config_text, insert, Env, DB};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sluice::source::replication::ReplicationConn;
use sluice::testkit::{PgOptions, Postgres, Redis};

/// A CA, a server certificate it signed, and a second CA that signed nothing here.
struct Pki {
    dir: tempfile::TempDir,
    server_cert: String,
    server_key: String,
}

impl Pki {
    fn new() -> Pki {
        let (ca, ca_key) = make_ca("sluice test CA");
        let (other, _) = make_ca("some other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();
        Pki { dir, server_cert: server.pem(), server_key: server_key.serialize_pem() }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// PostgreSQL with `ssl = on` and the server certificate.
    fn postgres(&self) -> Postgres {
        let options = PgOptions {
            settings: [("ssl", "on"), ("ssl_cert_file", "server.crt"), ("ssl_key_file", "server.key")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec(),
            files: vec![("server.crt".into(), self.server_cert.clone().into()), ("server.key".into(), self.server_key.clone().into())],
        };
        Postgres::start_with(&options).expect("start postgres with ssl")
    }

    fn redis(&self) -> Redis {
        Redis::start_tls(self.server_cert.as_bytes(), self.server_key.as_bytes()).expect("start redis with a TLS port")
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
    pg_url(pg, "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display()))
}

/// The harness's config with these URLs and `redis.ca_file`.
fn tls_config(pg_url: &str, redis_url: &str, ca_file: &Path, extra: &str) -> String {
    let text = config_text(pg_url, redis_url, extra);
    let line = format!("url = \"{redis_url}\"\n");
    text.replacen(&line, &format!("{line}ca_file = \"{}\"\n", ca_file.display()), 1)
}

/// TLS servers, the seed schema, and `sluice setup` run over TLS to both.
fn tls_env(pki: &Pki, extra: &str) -> Env {
    let (pg, redis) = (pki.postgres(), pki.redis());
    let (url, redis_url) = (verify_full(&pg, &pki.ca()), redis.tls_url().unwrap());
    let ca = pki.ca();
    Env::start_on(pg, redis, |_| tls_config(&url, &redis_url, &ca, extra))
}

/// Runs `sluice check` (or another command) with a config of these URLs, within a deadline.
fn sluice_with(env: &Env, name: &str, pg_url: &str, redis_ca: &Path, args: &[&str]) -> Output {
    let path = env.dir.path().join(name);
    std::fs::write(&path, tls_config(pg_url, &env.redis.tls_url().unwrap(), redis_ca, "")).unwrap();
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
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The `check` line about `what` ("postgres ", "redis "), failing or not.
fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report.lines().find(|l| l[5..].starts_with(what)).unwrap_or_else(|| panic!("no {what:?} line in:\n{report}"))
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
    let env = tls_env(&pki, "");
    let check = env.sluice(&["check"]);
    let report = text(&check);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("ok   postgres: TLS TLSv1.3 (sslmode=verify-full: certificate and host name verified)"), "{report}");
    assert!(line(&report, "redis ").contains("PING answered, TLS (certificate and host name verified against redis.ca_file"), "{report}");

    let sub = env.subscribe().await;
    let daemon = env.daemon();
    insert(&env, 1, 20);
    sub.wait_for(20, Duration::from_secs(60), || daemon.log()).await;
    let (plain, all) = sessions(&env);
    assert!(plain == 0 && all >= 1, "the daemon's sessions are all TLS: {plain} plain of {all}");

    let mut tail = env.command().args(["tail", "crm:*:*"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (stdout, stderr) = (tail.stdout.take().unwrap(), tail.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
    std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let listening = rx.recv_timeout(Duration::from_secs(30)).expect("tail says it listens");
    assert!(listening.starts_with("listening on crm:*:*"), "{listening}");
    insert(&env, 21, 21);
    let event = rx.recv_timeout(Duration::from_secs(30)).expect("tail prints the event that arrived over TLS");
    assert!(event.starts_with("crm:tenant-1:credit-configs {") && event.contains("\"k21\""), "{event}");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_over_tls_to_both_servers() {
    let pki = Pki::new();
    let env = tls_env(&pki, "mode = \"logical\"");
    let sub = env.subscribe().await;
    let daemon = env.daemon();
    common::wait_until(Duration::from_secs(60), || env.sql("SELECT count(*) FROM pg_stat_replication").trim() == "1", || daemon.log()).await;
    insert(&env, 1, 20);
    sub.wait_for(20, Duration::from_secs(60), || daemon.log()).await;
    let ssl = env.sql("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)");
    assert_eq!(ssl.trim(), "t", "the replication stream is encrypted");
    assert_eq!(sessions(&env).0, 0, "so is every SQL session of the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_one_line_errors_with_their_fix() {
    let pki = Pki::new();
    let env = tls_env(&pki, "");
    let wrong = verify_full(&env.pg, &pki.other_ca());

    let out = sluice_with(&env, "wrong-ca.toml", &wrong, &pki.other_ca(), &["check"]);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    let pg = line(&report, "postgres ");
    assert!(pg.starts_with("FAIL") && pg.contains("TLS certificate problem: the server's certificate is not signed by a trusted CA; put the CA that signed it in postgres.url as sslrootcert="), "{report}");
    let redis = line(&report, "redis ");
    assert!(redis.starts_with("FAIL") && redis.contains("TLS certificate problem") && redis.contains("redis.ca_file"), "{report}");

    for command in [&["setup"][..], &["run"], &["tail"]] {
        let out = sluice_with(&env, "wrong-ca.toml", &wrong, &pki.other_ca(), command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(!out.status.success() && last.contains("TLS certificate problem"), "{command:?}: {stderr}");
    }

    let repl = ReplicationConn::connect(&wrong, Duration::from_secs(10)).await.err().expect("the replication connection checks the CA too");
    assert!(repl.to_string().contains("not signed by a trusted CA"), "{repl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pki = Pki::new();
    let env = tls_env(&pki, "");
    let ca = pki.ca();
    let other_name = |mode: &str| pg_url(&env.pg, "db.invalid", &format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}", ca.display()));

    let out = sluice_with(&env, "full.toml", &other_name("verify-full"), &ca, &["check"]);
    let report = text(&out);
    let pg = line(&report, "postgres ");
    assert!(!out.status.success() && pg.contains("certificate does not name the host you connect to (expected db.invalid, it lists localhost, 127.0.0.1)"), "{report}");
    assert!(pg.contains("use sslmode=verify-ca"), "{report}");
    let repl = ReplicationConn::connect(&other_name("verify-full"), Duration::from_secs(10)).await.err().expect("name mismatch");
    assert!(repl.to_string().contains("does not name the host"), "{repl}");

    let out = sluice_with(&env, "ca.toml", &other_name("verify-ca"), &ca, &["check"]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("postgres: TLS TLSv1.3 (sslmode=verify-ca: certificate chain verified, host name not checked)"), "{report}");
    let mut repl = ReplicationConn::connect(&other_name("verify-ca"), Duration::from_secs(10)).await.expect("verify-ca ignores the name");
    assert_eq!(repl.simple_query("IDENTIFY_SYSTEM").await.unwrap().len(), 1);

    let require = pg_url(&env.pg, "127.0.0.1", "sslmode=require");
    let out = sluice_with(&env, "require.toml", &require, &ca, &["check"]);
    let report = text(&out);
    assert!(out.status.success() && report.contains("(sslmode=require: certificate not verified;"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_against_a_server_without_tls_and_prefer_falls_back() {
    let pg = Postgres::start().unwrap();
    let url = |mode: &str| format!("{}?sslmode={mode}", pg.url());
    let e = sluice::pg::connect(&url("require"), Duration::from_secs(10)).await.err().expect("require needs TLS");
    assert!(e.to_string().starts_with("PostgreSQL does not accept TLS connections"), "{e}");
    let e = ReplicationConn::connect(&url("verify-full"), Duration::from_secs(10)).await.err().expect("verify-full needs TLS");
    assert!(e.to_string().contains("does not accept TLS connections"), "{e}");
    for mode in ["prefer", "disable"] {
        sluice::pg::connect(&url(mode), Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        ReplicationConn::connect(&url(mode), Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}
