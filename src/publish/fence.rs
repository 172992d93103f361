//! Closing the connections Sluice gave up on before it goes on.
//!
//! A batch is given up on when Redis does not answer in time (or the connection breaks) and
//! is sent again on a new connection. Its bytes may still be on their way: a network path
//! that failed and heals delivers them late, as TCP retransmits them, and Redis then runs the
//! first batch's channel transactions after the later try. They would set each channel's meta
//! back to what that batch wrote, and the next batch would find the meta changed and start a
//! new epoch. Redis runs a connection's commands in order, and a connection it has closed
//! runs nothing more; so every connection carrying a batch is remembered by what `CLIENT INFO`
//! says of it (its id, and its address as Redis sees it), and the next connection to the same
//! server first sends `CLIENT KILL ID <id> ADDR <addr>` for the one given up on, in the same
//! write as its setup, before it reads any meta. Both must match: a Redis restarted meanwhile
//! numbers its clients from 1 again, and another client may hold the old id.
//!
//! `CLIENT KILL` is an `@admin` command: a Redis user without it gets a warning (once) and
//! Sluice goes on unfenced, with that window open.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

use super::resp::Reply;

/// A connection as Redis knows it: `CLIENT INFO`'s `id` and `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Client {
    pub id: String,
    pub addr: String,
}

impl Client {
    /// Reads `CLIENT INFO`'s answer (`id=7 addr=127.0.0.1:50124 laddr=...`); `None` for an
    /// error (a Redis before 6.2, a user without the command): that connection is not fenced.
    pub fn parse(reply: &Reply) -> Option<Client> {
        let Reply::Bulk(text) = reply else {
            return None;
        };
        let text = std::str::from_utf8(text).ok()?;
        let field = |name: &str| {
            text.split_ascii_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Client {
            id: field("id")?,
            addr: field("addr")?,
        })
    }
}

/// The connections carrying a batch and those given up on, by server.
#[derive(Debug)]
pub(super) struct Fences<K> {
    in_flight: HashMap<K, Client>,
    given_up: HashMap<K, Client>,
}

impl<K> Default for Fences<K> {
    fn default() -> Fences<K> {
        Fences {
            in_flight: HashMap::new(),
            given_up: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Fences<K> {
    /// Connection `client` (if Redis told who it is) to `server` is about to carry a batch.
    pub fn sending(&mut self, server: &K, client: Option<&Client>) {
        match client {
            Some(c) => self.in_flight.insert(server.clone(), c.clone()),
            None => self.in_flight.remove(server),
        };
    }

    /// The batch on `server`'s connection was answered: nothing of it is left to arrive.
    pub fn answered(&mut self, server: &K) {
        self.in_flight.remove(server);
    }

    /// The batch on `server`'s connection was given up on: fence that connection.
    pub fn failed(&mut self, server: &K) {
        if let Some(client) = self.in_flight.remove(server) {
            self.given_up.insert(server.clone(), client);
        }
    }

    /// Every batch in flight was given up on (a timeout over all of them).
    pub fn all_failed(&mut self) {
        self.given_up.extend(self.in_flight.drain());
    }

    /// The connection a new connection to `server` must close first.
    pub fn to_close(&self, server: &K) -> Option<Client> {
        self.given_up.get(server).cloned()
    }

    /// A new connection to `server` has closed [`Fences::to_close`]'s connection.
    pub fn closed(&mut self, server: &K) {
        self.given_up.remove(server);
    }
}

/// `CLIENT KILL ID <id> ADDR <addr>` for `old`.
pub(super) fn command(old: &Client) -> Vec<&[u8]> {
    let (id, addr) = (old.id.as_bytes(), old.addr.as_bytes());
    vec![b"CLIENT", b"KILL", b"ID", id, b"ADDR", addr]
}

/// Reads `CLIENT KILL`'s answer: a count (1, or 0 when Redis had closed it already), or an
/// error (a user without `@admin`), which is warned of once.
pub(super) fn read(reply: &Reply, old: &Client) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    match reply {
        Reply::Integer(n) => {
            tracing::debug!(
                connection = old.id,
                closed = n,
                "closed the Redis connection given up on"
            )
        }
        Reply::Error(e) if !WARNED.swap(true, Ordering::Relaxed) => tracing::warn!(
            error = %e,
            "cannot close the Redis connection given up on (CLIENT KILL); a batch delayed on a \
             broken network path could still run after its retry and start a new epoch on its \
             channels. Allow the Redis user +client|kill to close that window"
        ),
        _ => {}
    }
}

impl super::Conn {
    /// Whether this connection's user may run `CLIENT KILL`, asked with the largest id
    /// (Redis numbers clients from 1 up, so it closes nothing).
    pub(super) async fn may_fence(&mut self) -> Result<bool, super::Unavailable> {
        let none = i64::MAX.to_string();
        super::resp::command(
            &mut self.write,
            &[b"CLIENT", b"KILL", b"ID", none.as_bytes()],
        );
        let reply = self.exchange(1).await?.pop();
        Ok(!matches!(reply, Some(Reply::Error(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Client {
        Client {
            id: id.into(),
            addr: format!("127.0.0.1:5{id}"),
        }
    }

    #[test]
    fn only_a_batch_given_up_on_leaves_a_connection_to_close() {
        let mut f = Fences::default();
        f.sending(&"a", Some(&client("7")));
        f.answered(&"a");
        f.failed(&"a");
        assert_eq!(f.to_close(&"a"), None, "answered: nothing in flight");
        f.sending(&"a", Some(&client("8")));
        f.failed(&"a");
        assert_eq!(f.to_close(&"a"), Some(client("8")));
        f.sending(&"b", Some(&client("9")));
        f.all_failed();
        assert_eq!(f.to_close(&"b"), Some(client("9")));
        f.closed(&"a");
        assert_eq!(f.to_close(&"a"), None);
        f.sending(&"c", None);
        f.failed(&"c");
        assert_eq!(f.to_close(&"c"), None, "not known, nothing to close");
    }

    #[test]
    fn client_info_gives_the_id_and_the_address_redis_sees() {
        let info = "id=12 addr=10.0.0.5:50124 laddr=10.0.0.1:6379 fd=8 name= age=0 cmd=client|info";
        let got = Client::parse(&Reply::Bulk(info.as_bytes().to_vec()));
        let want = Client {
            id: "12".into(),
            addr: "10.0.0.5:50124".into(),
        };
        assert_eq!(got, Some(want.clone()));
        assert_eq!(
            command(&want),
            [
                &b"CLIENT"[..],
                b"KILL",
                b"ID",
                b"12",
                b"ADDR",
                b"10.0.0.5:50124"
            ]
        );
        let refused = Reply::Error("NOPERM no permissions".into());
        assert_eq!(Client::parse(&refused), None);
        assert_eq!(
            Client::parse(&Reply::Bulk(b"laddr=x:1 id=3".to_vec())),
            None
        );
    }
}
