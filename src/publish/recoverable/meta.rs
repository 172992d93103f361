//! A channel's meta (`sluice:meta:{<ch>}`) as Sluice reads it, and the memory of each
//! channel's meta that lets it number messages without asking Redis first.

use std::collections::HashMap;

use super::transaction::unexpected;
use crate::publish::resp::{self, Reply};
use crate::publish::Unavailable;

/// A channel's meta: its epoch (none: Redis has no meta), the last seq given, and what tells
/// which events it already has (`pos` in logical mode; `origin` and `ids` in trigger mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub epoch: Option<String>,
    pub seq: u64,
    pub pos: String,
    pub origin: String,
    pub ids: String,
}

/// The meta's fields, in the order [`Meta::read`] and [`Meta::parse`] use.
const FIELDS: [&[u8]; 5] = [b"epoch", b"seq", b"pos", b"origin", b"ids"];

impl Meta {
    /// Appends `HMGET sluice:meta:{ch} epoch seq pos origin ids`.
    pub fn read(out: &mut Vec<u8>, meta_key: &str) {
        let mut args: Vec<&[u8]> = vec![b"HMGET", meta_key.as_bytes()];
        args.extend(FIELDS);
        resp::command(out, &args);
    }

    /// The answer to [`Meta::read`] (or to the transaction's own `HMGET epoch seq`).
    pub fn parse(reply: &Reply) -> Result<Meta, Unavailable> {
        let Reply::Array(items) = reply else {
            return Err(unexpected("the channel meta's fields"));
        };
        let text = |i: usize| match items.get(i) {
            Some(Reply::Bulk(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let Some(epoch) = text(0) else {
            return Ok(Meta::default());
        };
        Ok(Meta {
            epoch: Some(epoch),
            seq: text(1).and_then(|s| s.parse().ok()).unwrap_or(0),
            pos: text(2).unwrap_or_default(),
            origin: text(3).unwrap_or_default(),
            ids: text(4).unwrap_or_default(),
        })
    }
}

/// Each channel's meta as this connection last read or wrote it. A new connection starts
/// empty: Redis may have lost, or a failover rolled back, what the last one knew.
#[derive(Default)]
pub struct Channels(HashMap<String, Meta>);

/// Channels remembered at most; past it the memory starts over at the next batch (metas are
/// read again as channels come back), so a daemon serving many tenants stays small.
const MAX_KNOWN: usize = 50_000;

impl Channels {
    pub fn get(&self, channel: &str) -> Option<&Meta> {
        self.0.get(channel)
    }

    pub fn knows(&self, channel: &str) -> bool {
        self.0.contains_key(channel)
    }

    pub fn remember(&mut self, channel: &str, meta: Meta) {
        self.0.insert(channel.to_string(), meta);
    }

    /// Before a batch (never within one: its plan needs every meta it read).
    pub fn bound(&mut self) {
        if self.0.len() > MAX_KNOWN {
            self.0.clear();
        }
    }

    pub fn forget(&mut self, channel: &str) {
        self.0.remove(channel);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_memory_starts_over_between_batches_past_its_bound() {
        let mut known = Channels::default();
        for c in 0..=MAX_KNOWN {
            known.remember(&c.to_string(), Meta::default());
        }
        assert!(known.knows("0"), "never within a batch");
        known.bound();
        assert!(!known.knows("0") && !known.knows(&MAX_KNOWN.to_string()));
        known.remember("a", Meta::default());
        known.bound();
        assert!(known.knows("a"));
    }
}
