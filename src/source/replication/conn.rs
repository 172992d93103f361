//! The replication connection: startup with `replication=database`, authentication (trust,
//! password, MD5, SCRAM-SHA-256), simple queries, `START_REPLICATION`, then CopyBoth frames.
//! It adds what a bare protocol client lacks: a connect timeout, TCP keepalive, and TLS as
//! `postgres.url`'s libpq `sslmode` asks (the same settings as the SQL connections, see
//! [`crate::tls::postgres`]); after the handshake the stream is boxed, so the protocol code
//! is the same for plain and TLS.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hosts::{self, Target};
use super::wire::{self, Backend, Frame, StandbyStatus, WireError};
use crate::tls::postgres::{negotiate, PgTls, PgTlsError};
use crate::tls::Stream;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Url(#[from] PgTlsError),
    #[error("cannot connect for replication to {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot connect for replication: no answer within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed for a reason [`crate::tls::explain`] can name.
    #[error("cannot connect for replication: {}", crate::tls::explain(.0, crate::tls::Server::Postgres).unwrap_or_default())]
    Tls(std::io::Error),
    #[error("cannot connect for replication: unsupported authentication method {0}")]
    AuthMethod(i32),
    #[error("cannot connect for replication: unix sockets are not supported; give a TCP host")]
    UnixSocket,
    #[error("PostgreSQL refused: {text}")]
    Server { code: Option<String>, text: String },
    #[error("replication connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("replication protocol: {0}")]
    Protocol(#[from] WireError),
    #[error("the server ended the replication stream")]
    Ended,
    #[error("cannot connect for replication: {server} is {}, and postgres.url asks for target_session_attrs={}", if *.read_only { "read-only (a standby)" } else { "read-write" }, if *.read_only { "read-write" } else { "read-only" })]
    SessionAttrs { server: String, read_only: bool },
}

/// An I/O failure, as [`ReplicationError::Tls`] when it is a TLS failure with a known fix.
fn io_or_tls(e: std::io::Error) -> ReplicationError {
    if crate::tls::explain(&e, crate::tls::Server::Postgres).is_some() {
        ReplicationError::Tls(e)
    } else {
        ReplicationError::Io(e)
    }
}

/// Session settings that make the text of every value deterministic (see `values`).
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=1";

/// The low-water mark of [`ReplicationConn::quiet`]: well past what a lingering batch of small
/// transactions brings, well under the socket's receive buffer.
const QUIET_BYTES: libc::c_int = 32 * 1024;

/// A connection in replication mode.
pub struct ReplicationConn {
    stream: Stream,
    /// The TCP socket under `stream` (plain or TLS), for [`ReplicationConn::quiet`].
    fd: RawFd,
    read: BytesMut,
    write: BytesMut,
    /// The server's major version, from its `server_version` parameter at startup.
    major: Option<u32>,
}

impl ReplicationConn {
    /// Connects and authenticates, trying each server `postgres.url` lists in turn (each
    /// within `timeout`), and keeps the first that fits its `target_session_attrs`.
    pub async fn connect(
        url: &str,
        timeout: Duration,
    ) -> Result<ReplicationConn, ReplicationError> {
        let (config, tls) = crate::tls::postgres::config(url)?;
        let wanted = hosts::wants_read_only(config.get_target_session_attrs());
        let mut last = None;
        for target in hosts::targets(&config)? {
            let result = match Self::connect_one(&config, &tls, &target, timeout).await {
                Ok(mut conn) => match conn.fits(wanted, &target).await {
                    Ok(()) => return Ok(conn),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            tracing::debug!(server = %target, error = %result, "not this server for replication");
            last = Some(result);
        }
        Err(last.unwrap_or(ReplicationError::Ended))
    }

    async fn connect_one(
        config: &tokio_postgres::Config,
        tls: &PgTls,
        target: &Target,
        timeout: Duration,
    ) -> Result<ReplicationConn, ReplicationError> {
        match tokio::time::timeout(timeout, Self::connect_inner(config, tls, target)).await {
            Err(_) => Err(ReplicationError::Timeout(timeout)),
            // The server may refuse our client certificate only after the handshake.
            Ok(Err(ReplicationError::Io(e))) => Err(io_or_tls(e)),
            Ok(result) => result,
        }
    }

    /// Whether the server is read-only as `wanted` asks (`None`: any server will do).
    async fn fits(
        &mut self,
        wanted: Option<bool>,
        target: &Target,
    ) -> Result<(), ReplicationError> {
        let Some(want_read_only) = wanted else {
            return Ok(());
        };
        let rows = self.simple_query("SHOW transaction_read_only").await?;
        let value = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref());
        if (value == Some("on")) == want_read_only {
            return Ok(());
        }
        Err(ReplicationError::SessionAttrs {
            server: target.to_string(),
            read_only: value == Some("on"),
        })
    }

    async fn connect_inner(
        config: &tokio_postgres::Config,
        tls: &PgTls,
        target: &Target,
    ) -> Result<ReplicationConn, ReplicationError> {
        let Target { host, addr, port } = target;
        let port = *port;
        let tcp = TcpStream::connect((addr.as_str(), port))
            .await
            .map_err(|source| ReplicationError::Unreachable {
                addr: format!("{addr}:{port}"),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        let fd = tcp.as_raw_fd();
        let stream = negotiate(tcp, tls, host).await.map_err(io_or_tls)?;
        let mut conn = ReplicationConn {
            stream,
            fd,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
            major: None,
        };
        let user = config.get_user().unwrap_or("postgres").to_string();
        let database = config.get_dbname().unwrap_or(&user).to_string();
        let params = [
            ("user", user.as_str()),
            ("database", database.as_str()),
            ("replication", "database"),
            ("options", SESSION_OPTIONS),
            ("application_name", "sluice"),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write)?;
        conn.flush().await?;
        conn.authenticate(&user, config.get_password().unwrap_or_default())
            .await?;
        conn.until_ready().await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, user: &str, password: &[u8]) -> Result<(), ReplicationError> {
        loop {
            let m = self.expect(b'R').await?;
            let kind = i32::from_be_bytes(wire::head(&m.body, 0, "an authentication request")?);
            match kind {
                0 => return Ok(()),
                3 => frontend::password_message(password, &mut self.write)?,
                5 => {
                    let salt = wire::head(&m.body, 4, "an md5 salt")?;
                    frontend::password_message(
                        md5_hash(user.as_bytes(), password, salt).as_bytes(),
                        &mut self.write,
                    )?;
                }
                10 => return self.scram(password).await,
                other => return Err(ReplicationError::AuthMethod(other)),
            }
            self.flush().await?;
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), ReplicationError> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.write)?;
        self.flush().await?;
        let m = self.expect(b'R').await?;
        scram.update(m.body.get(4..).ok_or(WireError::Short("a SCRAM message"))?)?;
        frontend::sasl_response(scram.message(), &mut self.write)?;
        self.flush().await?;
        let m = self.expect(b'R').await?;
        scram.finish(m.body.get(4..).ok_or(WireError::Short("a SCRAM message"))?)?;
        let m = self.expect(b'R').await?;
        match wire::head(&m.body, 0, "an authentication request")? {
            [0, 0, 0, 0] => Ok(()),
            _ => Err(WireError::Unexpected {
                what: "the end of SCRAM",
                tag: 'R',
            }
            .into()),
        }
    }

    /// Runs a replication command and returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        loop {
            let m = self.next_message().await?;
            match m.tag {
                b'D' => rows.push(wire::data_row(&m.body)?),
                b'Z' => return Ok(rows),
                _ => {}
            }
        }
    }

    /// The server's major version (13, 14, ...), as it announced it at startup.
    pub fn server_major(&self) -> Option<u32> {
        self.major
    }

    /// `START_REPLICATION SLOT .. LOGICAL lsn (proto_version '1', publication_names ..)`, with
    /// `messages 'true'` where pgoutput has that option (PostgreSQL 14+). Protocol version 1 on
    /// every server, on purpose: versions 2-4 add streaming of transactions still in progress
    /// (and two-phase and parallel variants of it), which Sluice does not ask for. It publishes
    /// what it reads, so it must only ever read committed work; without streaming, PostgreSQL
    /// sends a transaction only once it has committed (spilling a large one to its own disk).
    pub async fn start(
        &mut self,
        slot: &str,
        publication: &str,
        from: u64,
    ) -> Result<(), ReplicationError> {
        let messages = if self.major.is_some_and(|m| m < 14) {
            ""
        } else {
            ", messages 'true'"
        };
        let sql = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {} (proto_version '1', publication_names '\"{}\"'{messages})",
            slot.replace('"', "\"\""),
            crate::source::lsn::format(from),
            publication.replace('"', "\"\"").replace('\'', "''")
        );
        frontend::query(&sql, &mut self.write)?;
        self.flush().await?;
        self.expect(b'W').await.map(|_| ())
    }

    /// The next replication frame.
    pub async fn next_frame(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            let m = self.next_message().await?;
            match m.tag {
                b'd' => return Ok(Frame::decode(m.body)?),
                b'c' => return Err(ReplicationError::Ended),
                _ => {}
            }
        }
    }

    /// Sends a standby status update.
    pub async fn send_status(&mut self, status: StandbyStatus) -> Result<(), ReplicationError> {
        let mut body = Vec::with_capacity(34);
        status.encode(&mut body);
        wire::put(b'd', &body, &mut self.write);
        self.flush().await
    }

    /// While `on`, the kernel reports the socket readable only once [`QUIET_BYTES`] have
    /// arrived (SO_RCVLOWAT), so a trickle of small messages no longer wakes the process for
    /// each one; a non-blocking read still returns whatever is there. Turning it off signals
    /// readiness at once if data is waiting (Linux re-checks on the change). Best effort: a
    /// platform without the option just keeps waking.
    pub fn quiet(&self, on: bool) {
        let bytes: libc::c_int = if on { QUIET_BYTES } else { 1 };
        // SAFETY: `fd` is the socket `stream` owns, open for as long as `self`; the option value
        // is a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const bytes).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SO_RCVLOWAT not set");
        }
    }

    async fn until_ready(&mut self) -> Result<(), ReplicationError> {
        self.expect(b'Z').await.map(|_| ())
    }

    /// Reads messages until one with `tag`; ErrorResponse becomes an error.
    async fn expect(&mut self, tag: u8) -> Result<Backend, ReplicationError> {
        loop {
            let m = self.next_message().await?;
            if m.tag == tag {
                return Ok(m);
            }
        }
    }

    /// The next message that is not a notice or parameter status; errors are raised.
    async fn next_message(&mut self) -> Result<Backend, ReplicationError> {
        loop {
            if let Some(m) = wire::take(&mut self.read)? {
                match m.tag {
                    b'E' => {
                        return Err(ReplicationError::Server {
                            code: wire::error_code(&m.body),
                            text: wire::error_text(&m.body),
                        })
                    }
                    b'S' => {
                        self.note_parameter(&m.body);
                        continue;
                    }
                    b'N' | b'K' => continue,
                    _ => return Ok(m),
                }
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(ReplicationError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// Keeps the major version from a `server_version` ParameterStatus ("17.10", "13.23 (Debian ...)").
    fn note_parameter(&mut self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        if parts.next() == Some(b"server_version".as_slice()) {
            let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            self.major = digits.parse().ok();
        }
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.stream.write_all(&self.write).await?;
        self.write.clear();
        Ok(())
    }
}
