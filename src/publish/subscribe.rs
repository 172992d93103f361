//! Sharded subscriptions on a Redis Cluster, for `sluice tail`.
//!
//! `SSUBSCRIBE` must go to the master of each channel's slot. When the slot moves (a reshard)
//! or the master becomes a replica, Redis ends the subscription itself with a `sunsubscribe`
//! push that no command asked for. fred 10 drops such pushes without telling its caller (its
//! subscriber only re-subscribes after a reconnect), so `tail` uses these connections instead
//! and treats that push, like a lost connection, as "subscribe again where the slot is now".

use std::collections::BTreeMap;

use super::resp::{self, Reply};
use super::topology::slot;
use super::{Backend, Conn, PublishError, Publisher, Unavailable};

/// What a subscription connection received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// `smessage`: a message on a channel.
    Message { channel: String, payload: Vec<u8> },
    /// `sunsubscribe`: Redis ended the channel's subscription (its slot moved).
    Unsubscribed(String),
    /// A confirmation, or anything else that needs no action.
    Other,
    /// An error reply (a refused `SSUBSCRIBE`, say).
    Refused(String),
}

/// One connection's sharded subscriptions.
pub struct Subscription {
    conn: Conn,
    pub node: String,
}

impl Publisher {
    /// The cluster's channels grouped by the master that serves each one's slot (`host:port`),
    /// as the cluster says now.
    pub async fn owners(
        &self,
        channels: impl IntoIterator<Item = &String>,
    ) -> Result<BTreeMap<String, Vec<String>>, PublishError> {
        let Backend::Cluster(cluster) = &self.backend else {
            return Err(PublishError::NotCluster);
        };
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let owners = cluster.owners(channels).await?;
        for (channel, node) in owners {
            out.entry(node).or_default().push(channel);
        }
        Ok(out)
    }

    /// A connection to `node` subscribed (`SSUBSCRIBE`) to `channels`.
    pub async fn ssubscribe(
        &self,
        node: &str,
        channels: &[String],
    ) -> Result<Subscription, PublishError> {
        let Backend::Cluster(cluster) = &self.backend else {
            return Err(PublishError::NotCluster);
        };
        let mut conn = cluster.open(node).await?;
        // one SSUBSCRIBE per slot: channels of different slots in one command are CROSSSLOT
        let mut by_slot: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for c in channels {
            by_slot.entry(slot(c)).or_default().push(c.as_bytes());
        }
        for list in by_slot.into_values() {
            let mut args: Vec<&[u8]> = vec![b"SSUBSCRIBE"];
            args.extend(list);
            resp::command(&mut conn.write, &args);
        }
        conn.exchange(0).await?;
        Ok(Subscription {
            conn,
            node: node.to_string(),
        })
    }
}

impl Subscription {
    /// The next push; an error when the connection is gone.
    pub async fn next(&mut self) -> Result<Push, Unavailable> {
        let reply = self.conn.read_one().await?;
        Ok(push(reply))
    }
}

/// Reads a RESP2 pub/sub frame: `[kind, channel, payload-or-count]`.
pub fn push(reply: Reply) -> Push {
    let items = match reply {
        Reply::Array(items) => items,
        Reply::Error(e) => return Push::Refused(e),
        _ => return Push::Other,
    };
    let text = |r: Option<&Reply>| match r {
        Some(Reply::Bulk(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    match (text(items.first()).as_deref(), text(items.get(1))) {
        (Some("smessage"), Some(channel)) => match items.into_iter().nth(2) {
            Some(Reply::Bulk(payload)) => Push::Message { channel, payload },
            _ => Push::Other,
        },
        (Some("sunsubscribe"), Some(channel)) => Push::Unsubscribed(channel),
        _ => Push::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sharded_pushes() {
        let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
        let frame = Reply::Array(vec![bulk("smessage"), bulk("a:b:c"), bulk("{}")]);
        assert_eq!(
            push(frame),
            Push::Message {
                channel: "a:b:c".into(),
                payload: b"{}".to_vec()
            }
        );
        let gone = Reply::Array(vec![bulk("sunsubscribe"), bulk("a:b:c"), Reply::Integer(0)]);
        assert_eq!(push(gone), Push::Unsubscribed("a:b:c".into()));
        let ok = Reply::Array(vec![bulk("ssubscribe"), bulk("a:b:c"), Reply::Integer(1)]);
        assert_eq!(push(ok), Push::Other);
    }
}
