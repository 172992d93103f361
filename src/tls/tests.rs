use std::io::Write;

use super::*;

#[test]
fn a_ca_file_must_exist_and_hold_a_certificate() {
    let e = read_ca(Path::new("/nonexistent/ca.pem"), "redis.ca_file")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("redis.ca_file \"/nonexistent/ca.pem\": cannot read it"),
        "{e}"
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"not a certificate\n").unwrap();
    let e = read_ca(file.path(), "redis.ca_file")
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
}

#[test]
fn a_generated_ca_is_read() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(ca.pem().as_bytes()).unwrap();
    assert_eq!(read_ca(file.path(), "k").unwrap().len(), 1);
    for verify in [Verify::Nothing, Verify::Chain, Verify::Full] {
        client_config(&Settings {
            verify,
            ca_file: Some(file.path()),
            ca_key: "k",
            identity: None,
        })
        .unwrap();
    }
}

#[test]
fn certificate_failures_are_explained_with_their_fix() {
    let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let unknown = io(rustls::Error::InvalidCertificate(
        rustls::CertificateError::UnknownIssuer,
    ));
    let text = explain(&unknown, Server::Postgres).unwrap();
    assert!(
        text.starts_with("TLS certificate problem: ") && text.contains("sslrootcert"),
        "{text}"
    );
    assert!(is_certificate_problem(&unknown));
    let name = rustls::CertificateError::NotValidForNameContext {
        expected: ServerName::try_from("db.example").unwrap(),
        presented: vec!["DnsName(\"localhost\")".into()],
    };
    let text = explain(
        &io(rustls::Error::InvalidCertificate(name)),
        Server::Postgres,
    )
    .unwrap();
    assert!(
        text.contains("(expected db.example, it lists localhost)") && text.contains("verify-ca"),
        "{text}"
    );
    let text = explain(
        &io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )),
        Server::Redis,
    )
    .unwrap();
    assert!(text.contains("redis.ca_file"), "{text}");
    let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(explain(&plain, Server::Redis), None);
    assert!(!is_certificate_problem(&plain));
}

#[test]
fn a_missing_ca_file_is_a_config_error_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let text = "[postgres]\nurl = \"postgres://x@h/app?sslmode=verify-full&sslrootcert=/nope/pg.pem\"\n[redis]\nurl = \"rediss://h:1\"\nca_file = \"/nope/redis.pem\"\n\
        [source]\nmode = \"trigger\"\n[apps]\ncrm = { prefixes = [\"crm.\"] }\n[[tables]]\ntable = \"t\"\ntype = \"x\"\ntenant = \"t\"\napp = { fixed = [\"crm\"] }\n";
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        crate::config::Config::load(&path)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let e = load(text).unwrap_err();
    assert!(e.lines().next().unwrap().ends_with("sluice.toml:2: postgres.url sslrootcert \"/nope/pg.pem\": cannot read it: No such file or directory (os error 2)"), "{e}");
    let e = load(&text.replace("&sslrootcert=/nope/pg.pem", "")).unwrap_err();
    assert!(
        e.contains("sluice.toml:5: redis.ca_file \"/nope/redis.pem\": cannot read it"),
        "{e}"
    );
    let e = load(
        &text
            .replace("rediss://", "redis://")
            .replace("&sslrootcert=/nope/pg.pem", ""),
    )
    .unwrap_err();
    assert!(
        e.contains(":5: redis.ca_file/cert_file are set but redis.url is not rediss://"),
        "{e}"
    );
    let e = load(&text.replace(
        "&sslrootcert=/nope/pg.pem",
        "&sslcert=/nope/c.crt&sslkey=/nope/c.key",
    ))
    .unwrap_err();
    assert!(
        e.contains(":2: postgres.url sslcert \"/nope/c.crt\": cannot read it"),
        "{e}"
    );
    let half = text.replace("&sslrootcert=/nope/pg.pem", "").replace(
        "ca_file = \"/nope/redis.pem\"",
        "key_file = \"/nope/k.pem\"",
    );
    let e = load(&half).unwrap_err();
    assert!(
        e.contains(":5: redis.key_file is set without redis.cert_file"),
        "{e}"
    );
    let e = load(&text.replace("verify-full", "verify_full")).unwrap_err();
    assert!(
        e.contains(":2: postgres.url: sslmode=\"verify_full\" is not supported"),
        "{e}"
    );
}
