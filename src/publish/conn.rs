//! One connection to a Redis server: opened and set up in one write (see [`Conn::open`]),
//! then pipelines written at once and their replies read in order; and `WAIT` for replicas.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::resp::{self, Reply};
use super::{fence, recoverable, Delivery, Target, Unavailable};
use crate::route::Event;
use crate::tls::{self, Stream};

/// A connection and what it knows.
pub(super) struct Conn {
    stream: Stream,
    read: BytesMut,
    pub(super) write: Vec<u8>,
    /// What this connection knows of each recoverable channel's meta.
    pub(super) channels: recoverable::Channels,
    /// Who it is to Redis (`CLIENT INFO`), if Redis told it: what a later connection closes
    /// (see [`fence`]).
    pub(super) me: Option<fence::Client>,
}

/// `WAIT replicas timeout` after a batch: the master's replicas have what it acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wait {
    replicas: u32,
    timeout_ms: u128,
}

impl Wait {
    /// None for 0 replicas; the `WAIT` timeout is half the command timeout, so an answer
    /// saying "not enough" arrives before the batch times out.
    pub(super) fn new(replicas: u32, command_timeout: Duration) -> Option<Wait> {
        (replicas > 0).then(|| Wait {
            replicas,
            timeout_ms: (command_timeout.as_millis() / 2).max(1),
        })
    }

    /// Sends `WAIT` on `conn` (after the batch's writes) and checks its answer.
    pub(super) async fn replicated(&self, conn: &mut Conn) -> Result<(), Unavailable> {
        let (n, ms) = (self.replicas.to_string(), self.timeout_ms.to_string());
        resp::command(&mut conn.write, &[b"WAIT", n.as_bytes(), ms.as_bytes()]);
        match conn.exchange(1).await?.pop() {
            Some(Reply::Integer(got)) if got >= i64::from(self.replicas) => Ok(()),
            Some(Reply::Integer(got)) => Err(Unavailable::NotReplicated {
                got,
                want: self.replicas,
            }),
            Some(Reply::Error(e)) => Err(Unavailable::SetupRefused(format!("WAIT: {e}"))),
            _ => Err(Unavailable::Protocol(resp::ProtocolError::Unexpected(
                "an answer to WAIT",
            ))),
        }
    }
}

impl Conn {
    /// Connects, authenticates, selects the database, closes the connection `fence` given
    /// up on (see [`fence`]), with `primary` refuses a replica, and with `probe` checks that
    /// the user may run what recoverable channels need (see [`recoverable::PROBE`]).
    pub(super) async fn open(
        t: &Target,
        primary: bool,
        probe: bool,
        fence: Option<fence::Client>,
    ) -> Result<Conn, Unavailable> {
        let unavailable = |e: std::io::Error| Unavailable::Io {
            addr: format!("{}:{}", t.host, t.port),
            text: io_text(&e),
        };
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(unavailable)?;
        tcp.set_nodelay(true).map_err(unavailable)?;
        let stream: Stream = match &t.tls {
            Some(config) => tls::handshake(config.clone(), &t.host, tcp)
                .await
                .map_err(unavailable)?,
            None => Box::new(tcp),
        };
        let mut conn = Conn {
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            write: Vec::with_capacity(64 * 1024),
            channels: recoverable::Channels::default(),
            me: None,
        };
        conn.set_up(t, primary, probe, fence).await?;
        Ok(conn)
    }

    /// The setup commands in one write: `AUTH`, `SELECT`, `CLIENT KILL` of `fence`, the probe,
    /// `CLIENT INFO`, `ROLE`.
    async fn set_up(
        &mut self,
        t: &Target,
        primary: bool,
        probe: bool,
        fence: Option<fence::Client>,
    ) -> Result<(), Unavailable> {
        let mut setup: Vec<Vec<&[u8]>> = Vec::new();
        match (&t.username, &t.password) {
            (Some(user), Some(pass)) => setup.push(vec![b"AUTH", user.as_bytes(), pass.as_bytes()]),
            (None, Some(pass)) => setup.push(vec![b"AUTH", pass.as_bytes()]),
            _ => {}
        }
        let db = t.database.map(|d| d.to_string());
        if let Some(db) = &db {
            setup.push(vec![b"SELECT", db.as_bytes()]);
        }
        let kill = fence.as_ref().map(|old| {
            setup.push(fence::command(old));
            setup.len() - 1
        });
        if probe {
            setup.extend(recoverable::PROBE.iter().map(|args| args.to_vec()));
        }
        setup.push(vec![b"CLIENT", b"INFO"]);
        setup.push(vec![b"ROLE"]);
        for args in &setup {
            resp::command(&mut self.write, args);
        }
        let mut replies = self.exchange(setup.len()).await?;
        let role = replies.pop();
        self.me = replies.pop().as_ref().and_then(fence::Client::parse);
        // a refused CLIENT KILL is warned of, not fatal; read once the rest is known good
        let killed = kill.map(|k| std::mem::replace(&mut replies[k], Reply::Other));
        if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
            return Err(Unavailable::SetupRefused(e.clone()));
        }
        if let (Some(reply), Some(old)) = (killed, &fence) {
            fence::read(&reply, old);
        }
        if primary {
            self::primary(role.as_ref())?;
        }
        Ok(())
    }

    /// Encodes the batch behind a `ROLE`, writes it at once, and reads every reply.
    pub(super) async fn round_trip(
        &mut self,
        events: &[Event],
    ) -> Result<Vec<Delivery>, Unavailable> {
        resp::command(&mut self.write, &[b"ROLE"]);
        let mut expected = 1;
        for e in events {
            resp::command(
                &mut self.write,
                &[b"PUBLISH", e.channel.as_bytes(), &e.payload],
            );
            expected += 1;
            if !e.invalidate.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"DEL"];
                args.extend(e.invalidate.iter().map(|k| k.as_bytes()));
                resp::command(&mut self.write, &args);
                expected += 1;
            }
        }
        let mut replies = self.exchange(expected).await?.into_iter();
        primary(replies.next().as_ref())?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let published = replies.next().ok_or(Unavailable::Closed)?;
            let deleted = if e.invalidate.is_empty() {
                None
            } else {
                replies.next()
            };
            out.push(delivery(published, deleted)?);
        }
        Ok(out)
    }

    /// Reads the next reply (or push) off the connection.
    pub(super) async fn read_one(&mut self) -> Result<Reply, Unavailable> {
        loop {
            if let Some(r) = resp::take_reply(&mut self.read)? {
                return Ok(r);
            }
            let n = self.stream.read_buf(&mut self.read).await;
            if n.map_err(redis_io)? == 0 {
                return Err(Unavailable::Closed);
            }
        }
    }

    /// Writes what is buffered and reads `n` replies.
    pub(super) async fn exchange(&mut self, n: usize) -> Result<Vec<Reply>, Unavailable> {
        let written = self.stream.write_all(&self.write).await;
        self.write.clear();
        written.map_err(redis_io)?;
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            replies.push(self.read_one().await?);
        }
        Ok(replies)
    }
}

/// `ROLE`'s answer must name a primary (`master`); a replica holds the batch.
pub(super) fn primary(role: Option<&Reply>) -> Result<(), Unavailable> {
    match role {
        Some(Reply::Error(e)) => Err(Unavailable::SetupRefused(format!("ROLE: {e}"))),
        Some(r) => match r.is_primary_role() {
            Some(true) => Ok(()),
            Some(false) => Err(Unavailable::Replica),
            None => Err(Unavailable::Protocol(resp::ProtocolError::Unexpected(
                "an answer to ROLE",
            ))),
        },
        None => Err(Unavailable::Closed),
    }
}

/// An I/O failure on an open connection.
pub(super) fn redis_io(e: std::io::Error) -> Unavailable {
    Unavailable::Io {
        addr: "Redis".into(),
        text: io_text(&e),
    }
}

/// An I/O failure in one line; a TLS one (a client certificate the server wants, say) with its fix.
pub(super) fn io_text(e: &std::io::Error) -> String {
    tls::explain(e, tls::Server::Redis).unwrap_or_else(|| e.to_string())
}

/// One event's replies: an error reply rejects it, unless it says the server became a
/// replica (then the whole batch waits for a primary).
fn delivery(published: Reply, deleted: Option<Reply>) -> Result<Delivery, Unavailable> {
    Ok(match (published, deleted) {
        (Reply::Error(e), _) | (_, Some(Reply::Error(e))) if e.starts_with("READONLY") => {
            return Err(Unavailable::ReadOnly(e))
        }
        (Reply::Error(e), _) => Delivery::Rejected(format!("PUBLISH: {e}")),
        (_, Some(Reply::Error(e))) => Delivery::Rejected(format!("DEL of cache keys: {e}")),
        (Reply::Integer(receivers), _) => Delivery::Sent { receivers },
        _ => Delivery::Sent { receivers: 0 },
    })
}
