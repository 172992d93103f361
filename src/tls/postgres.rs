//! TLS for both PostgreSQL connections: the SQL one (tokio-postgres, through [`MakeRustls`])
//! and the replication one (our own protocol code, through [`negotiate`]). Both take their
//! settings from the same libpq parameters in `postgres.url`, so they can never disagree.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default, as in libpq) | when the server offers TLS, else plain | no |
//! | `require` | yes, or the connection fails | no (the chain, when `sslrootcert` is given, as libpq does) |
//! | `verify-ca` | yes | chain up to the CA |
//! | `verify-full` | yes | chain and host name |
//!
//! The CA comes from `sslrootcert=/path/ca.pem`; without it (or with `sslrootcert=system`)
//! the system's trust store is used. libpq would read `~/.postgresql/root.crt` instead; a
//! daemon's home is no place for trust decisions, so Sluice wants the path spelled out. The
//! same goes for a client certificate: `sslcert=/path/client.crt&sslkey=/path/client.key`
//! (an unencrypted PEM key), sent when the server asks for one (`cert` in pg_hba.conf).
//! libpq's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` stand in for parameters the
//! URL leaves out ([`split_with`]), and [`config`] fills the rest as libpq would
//! ([`crate::libpq`]).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::{client_config, pg_url, Identity, Settings, Stream, TlsError, Verify};

#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error("{from}: sslmode={value:?} is not supported; use disable, prefer, require, verify-ca or verify-full")]
    BadMode { value: String, from: &'static str },
    #[error("postgres.url: sslrootcert=system needs sslmode=verify-full, as in libpq")]
    SystemNeedsVerifyFull,
    #[error("postgres.url: sslcert and sslkey go together: give both, or neither")]
    HalfIdentity,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("PostgreSQL does not accept TLS connections, but postgres.url asks for sslmode={0}: turn ssl on in postgresql.conf, or lower sslmode")]
    Refused(&'static str),
    #[error("bad postgres.url: {0}")]
    BadUrl(tokio_postgres::Error),
}

/// libpq's `sslmode` values (`allow` aside: trying plain first is never what one wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str, from: &'static str) -> Result<SslMode, PgTlsError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(PgTlsError::BadMode {
                    value: other.to_string(),
                    from,
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS half of `postgres.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// `sslrootcert`; `None` means the system's trust store.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: the client certificate, for servers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl PgTls {
    /// How much of the certificate is checked: `require` with a CA file checks the chain, as
    /// libpq does.
    pub fn verify(&self) -> Verify {
        match self.mode {
            SslMode::VerifyFull => Verify::Full,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::Require if self.root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        }
    }

    /// The rustls settings; `None` for `sslmode=disable`. Reads the CA file, so a rotated one
    /// is picked up at the next connect.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, PgTlsError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let mut settings = self.settings();
        if settings.verify == Verify::Nothing {
            settings.ca_file = None;
        }
        Ok(Some(client_config(&settings)?))
    }

    /// The files to read, with the names of their parameters.
    pub fn settings(&self) -> Settings<'_> {
        Settings {
            verify: self.verify(),
            ca_file: self.root_cert.as_deref(),
            ca_key: "postgres.url sslrootcert",
            identity: self.client.as_ref().map(|(cert, key)| Identity {
                cert,
                cert_key: "postgres.url sslcert",
                key,
                key_key: "postgres.url sslkey",
            }),
        }
    }
}

/// Splits `postgres.url` into what tokio-postgres parses and the TLS settings, with this
/// process's libpq variables for the parameters it leaves out.
pub fn split(url: &str) -> Result<(String, PgTls), PgTlsError> {
    split_with(url, &|name| std::env::var(name).ok())
}

/// [`split`] with the variables `get` answers: the URL's parameters win, as in libpq.
pub fn split_with(
    url: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, PgTls), PgTlsError> {
    let (rest, mut params) = pg_url::take_params(url);
    let from_env = crate::libpq::tls_from_env(&params, get);
    let mode_from = match from_env.iter().any(|(name, _, _)| *name == "sslmode") {
        true => "PGSSLMODE",
        false => "postgres.url",
    };
    params.extend(
        from_env
            .into_iter()
            .map(|(name, _, value)| (name.to_string(), value)),
    );
    let mut tls = PgTls {
        mode: SslMode::Prefer,
        root_cert: None,
        client: None,
    };
    let (mut system, mut cert, mut key) = (false, None, None);
    for (name, value) in params {
        let path = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty());
        match name.as_str() {
            "sslmode" => tls.mode = SslMode::parse(&value, mode_from)?,
            "sslcert" => cert = path,
            "sslkey" => key = path,
            _ if value == "system" => system = true,
            _ => tls.root_cert = path,
        }
    }
    tls.client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(PgTlsError::HalfIdentity),
    };
    if system {
        tls.root_cert = None;
        if tls.mode != SslMode::VerifyFull {
            return Err(PgTlsError::SystemNeedsVerifyFull);
        }
    }
    Ok((rest, tls))
}

/// The TLS settings of `url` that libpq's variables give: (parameter, variable).
pub fn tls_vars(
    url: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, &'static str)> {
    let (_, params) = pg_url::take_params(url);
    crate::libpq::tls_from_env(&params, get)
        .into_iter()
        .map(|(name, var, _)| (name, var))
        .collect()
}

/// Parses `postgres.url` for tokio-postgres, with the TLS negotiation its `sslmode` implies,
/// and what it leaves out filled from libpq's variables and password file
/// ([`crate::libpq::apply`]).
pub fn config(url: &str) -> Result<(tokio_postgres::Config, PgTls), PgTlsError> {
    let (rest, tls) = split(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(PgTlsError::BadUrl)?;
    let outcome = crate::libpq::apply(&mut config, &|name| std::env::var(name).ok());
    if let Some(refused) = outcome.warning {
        crate::libpq::warn_once(refused.to_string());
    }
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, tls))
}

/// The replication connection's TLS: SSLRequest, then the handshake when the server says
/// `S`; a server that says `N` gets a plain connection unless `sslmode` insists.
pub async fn negotiate(tcp: TcpStream, tls: &PgTls, host: &str) -> Result<Stream, io::Error> {
    let Some(config) = tls.client_config().map_err(io::Error::other)? else {
        return Ok(Box::new(tcp));
    };
    let mut tcp = tcp;
    let mut request = bytes::BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    match tcp.read_u8().await? {
        b'S' => super::handshake(config, host, tcp).await,
        _ if tls.mode >= SslMode::Require => {
            Err(io::Error::other(PgTlsError::Refused(tls.mode.as_str())))
        }
        _ => Ok(Box::new(tcp)),
    }
}

/// tokio-postgres's TLS hook on rustls.
#[derive(Clone)]
pub struct MakeRustls(Option<Arc<ClientConfig>>);

impl MakeRustls {
    pub fn new(tls: &PgTls) -> Result<MakeRustls, PgTlsError> {
        tls.client_config().map(MakeRustls)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for MakeRustls {
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// `domain` is empty for a Unix socket, where PostgreSQL never offers TLS: the name is
    /// only needed (and checked) once a handshake really starts.
    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        Ok(RustlsConnect {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_string()).ok(),
        })
    }
}

pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for RustlsConnect {
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS is disabled (sslmode=disable)"))?;
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is not a valid TLS server name",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS stream for tokio-postgres. No channel binding: SCRAM-SHA-256 works over it, the
/// `-PLUS` variant (which servers do not require unless told) is not offered.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_become_tls_settings() {
        let (rest, tls) =
            split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(
            tls,
            PgTls {
                mode: SslMode::VerifyFull,
                root_cert: Some("/ca.pem".into()),
                client: None
            }
        );
        assert_eq!(tls.verify(), Verify::Full);
        let (_, tls) = split("postgres://u@h/db").unwrap();
        assert_eq!((tls.mode, tls.verify()), (SslMode::Prefer, Verify::Nothing));
        let (_, tls) = split("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            tls.verify(),
            Verify::Chain,
            "libpq checks the chain when require has a CA"
        );
        assert_eq!(
            split("postgres://h/db?sslmode=verify-ca")
                .unwrap()
                .1
                .verify(),
            Verify::Chain
        );
        let (_, tls) = split("postgres://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(tls.root_cert, None);
        let (_, tls) = split("postgres://h/db?sslcert=/c.crt&sslkey=/c.key").unwrap();
        assert_eq!(tls.client, Some(("/c.crt".into(), "/c.key".into())));
    }

    #[test]
    fn libpq_variables_fill_the_tls_parameters_the_url_lacks() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some("/env-ca.pem".to_string()),
            _ => None,
        };
        let (_, tls) = split_with("postgres://u@h/db", &env).unwrap();
        assert_eq!(
            (tls.mode, tls.root_cert),
            (SslMode::VerifyFull, Some("/env-ca.pem".into()))
        );
        let (_, tls) = split_with("postgres://u@h/db?sslmode=require", &env).unwrap();
        assert_eq!(tls.mode, SslMode::Require, "the URL wins");
        assert_eq!(
            tls_vars("postgres://u@h/db?sslmode=require", &env),
            [("sslrootcert", "PGSSLROOTCERT")]
        );
        let bad = |k: &str| (k == "PGSSLMODE").then(|| "allow".to_string());
        let e = split_with("postgres://u@h/db", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("PGSSLMODE: sslmode=\"allow\""), "{e}");
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        let e = split("postgres://h/db?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sslmode=\"allow\"") && e.contains("verify-full"),
            "{e}"
        );
        assert!(split("postgres://h/db?sslmode=require&sslrootcert=system").is_err());
        assert!(split("postgres://h/db?sslcert=/c.crt")
            .unwrap_err()
            .to_string()
            .contains("give both"));
        let (config, _) =
            config("postgres://u@h:7/db?sslmode=verify-ca&application_name=a").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_application_name(), Some("a"));
    }
}
