//! TLS to PostgreSQL and Redis, on rustls with the ring provider: the binary carries its own
//! TLS stack, so it runs the same in a scratch container as on a host, with no OpenSSL to match.
//!
//! Both servers share what is here: which certificates to trust (a PEM CA file, or the
//! system's trust store), how much of the server's certificate to check ([`Verify`]), the
//! handshake over a connected socket, and an operator's sentence for a failed handshake
//! ([`explain`]). [`postgres`] turns libpq's `sslmode`/`sslrootcert` URL parameters into
//! these settings and into a tokio-postgres connector; the Redis publisher and `fred` client
//! use [`client_config`] directly.

pub(crate) mod pg_url;
pub mod postgres;
mod verify;

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path:?}: cannot read it: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {path:?}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{key} {path:?}: holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)")]
    NoKey { key: &'static str, path: PathBuf },
    #[error("{key} {path:?}: {reason}")]
    BadCertificate {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the system trust store has no CA certificates: install ca-certificates, or name a CA file in {0}")]
    NoSystemRoots(&'static str),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt only: any certificate is accepted (libpq's `require` and `prefer`).
    Nothing,
    /// The chain must lead to a trusted CA; the host name is not compared (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`, and always for `rediss://`).
    Full,
}

/// Which server a TLS failure is about, so [`explain`] can name the setting to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    Redis,
}

/// What a TLS client trusts and who it is. Each file comes with the name of the setting it
/// came from, so an error can say which one to fix.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub verify: Verify,
    /// The CAs' PEM file; `None` for the system's trust store.
    pub ca_file: Option<&'a Path>,
    pub ca_key: &'static str,
    /// A client certificate, for servers that ask for one.
    pub identity: Option<Identity<'a>>,
}

/// A client certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert: &'a Path,
    pub cert_key: &'static str,
    pub key: &'a Path,
    pub key_key: &'static str,
}

/// The rustls client settings.
pub fn client_config(s: &Settings<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match s.verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(verify::accept_any(provider)),
        Verify::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(verify::chain_only(
                roots(s.ca_file, s.ca_key)?,
                provider,
            )?),
        Verify::Full => builder.with_root_certificates(roots(s.ca_file, s.ca_key)?),
    };
    let config = match &s.identity {
        Some(id) => {
            let (chain, key) = read_identity(id)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Reads every file `s` names, so a config error shows before the first connection.
pub fn check_files(s: &Settings<'_>) -> Result<(), TlsError> {
    if let Some(ca) = s.ca_file {
        read_ca(ca, s.ca_key)?;
    }
    s.identity
        .as_ref()
        .map_or(Ok(()), |id| read_identity(id).map(drop))
}

/// Reads a client certificate chain and its key.
pub fn read_identity(
    id: &Identity<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let bytes = read(id.cert, id.cert_key)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            key: id.cert_key,
            path: id.cert.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            key: id.cert_key,
            path: id.cert.into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read(id.key, id.key_key)?).map_err(|_| TlsError::NoKey {
            key: id.key_key,
            path: id.key.into(),
        })?;
    Ok((chain, key))
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.into(),
        source,
    })
}

/// The CAs in `ca_file`, or the system's when there is none.
fn roots(ca_file: Option<&Path>, key: &'static str) -> Result<Arc<RootCertStore>, TlsError> {
    match ca_file {
        Some(path) => read_ca(path, key).map(Arc::new),
        None => system_roots().ok_or(TlsError::NoSystemRoots(key)),
    }
}

/// Reads a PEM file of CA certificates.
pub fn read_ca(path: &Path, key: &'static str) -> Result<RootCertStore, TlsError> {
    let bytes = read(path, key)?;
    let bad = |reason: String| TlsError::BadCertificate {
        key,
        path: path.into(),
        reason,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        store
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.into(),
        });
    }
    Ok(store)
}

/// The system's trust store, read once (a few hundred certificates); `None` when empty.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Arc::new(store)
    });
    (!roots.is_empty()).then(|| roots.clone())
}

/// A byte stream that may or may not be encrypted, so plain and TLS connections share code.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A connection's stream, plain or TLS.
pub type Stream = Box<dyn AsyncStream>;

/// Runs the TLS handshake over `tcp`, checking the certificate against `host`.
pub async fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<Stream> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })?;
    Ok(Box::new(
        TlsConnector::from(config).connect(name, tcp).await?,
    ))
}

/// The rustls error somewhere in `e`'s chain (an `io::Error` carries it as its inner error).
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = inner.downcast_ref::<rustls::Error>() {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// One line for an operator when `e` is a TLS failure: what is wrong and which setting fixes
/// it. `None` when `e` has nothing to do with TLS.
pub fn explain(e: &(dyn StdError + 'static), server: Server) -> Option<String> {
    rustls_error(e).map(|e| explain_rustls(e, server))
}

fn explain_rustls(e: &rustls::Error, server: Server) -> String {
    use rustls::CertificateError as C;
    let (ca, weaker, identity) = match server {
        Server::Postgres => (
            "postgres.url as sslrootcert=/path/ca.pem",
            "sslmode=verify-ca to check the CA only",
            "postgres.url as sslcert=...&sslkey=...",
        ),
        Server::Redis => (
            "redis.ca_file",
            "a name listed in the certificate",
            "redis.cert_file and redis.key_file",
        ),
    };
    let cert = match e {
        rustls::Error::InvalidCertificate(cert) => cert,
        rustls::Error::AlertReceived(alert) if is_about_client_certificate(*alert) => {
            return format!("TLS client certificate problem: the server refused the handshake ({alert:?}): give a certificate it trusts in {identity}")
        }
        _ => return format!("TLS handshake failed: {e}; check that this port speaks TLS"),
    };
    match cert {
        C::UnknownIssuer | C::BadSignature => {
            format!("TLS certificate problem: the server's certificate is not signed by a trusted CA; put the CA that signed it in {ca}")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("TLS certificate problem: the server's certificate does not name the host you connect to ({}); connect by a name it lists, or use {weaker}", presented(cert))
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("TLS certificate problem: the server's certificate is outside its validity period ({cert:?}); renew it on the server")
        }
        other => {
            format!("TLS certificate problem: {other:?}; fix the server's certificate or {ca}")
        }
    }
}

/// Alerts a server sends when it wants, or does not accept, the client's certificate.
fn is_about_client_certificate(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
    )
}

fn presented(cert: &rustls::CertificateError) -> String {
    match cert {
        rustls::CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            // rustls shows the names as `DnsName("x")` / `IpAddress(1.2.3.4)`: keep the x.
            let names: Vec<&str> = presented
                .iter()
                .map(|n| n.split(['(', ')']).nth(1).unwrap_or(n).trim_matches('"'))
                .collect();
            format!(
                "expected {}, it lists {}",
                expected.to_str(),
                names.join(", ")
            )
        }
        _ => "name mismatch".into(),
    }
}

/// A certificate failure, to tell it from a server that is away.
pub fn is_certificate_problem(e: &(dyn StdError + 'static)) -> bool {
    matches!(rustls_error(e), Some(rustls::Error::InvalidCertificate(_)))
}

#[cfg(test)]
mod tests;
