//! Recoverable channels: every message numbered, kept, and published exactly once.
//!
//! Redis pub/sub forgets what a subscriber was not there to hear. So each channel `<ch>` has:
//! - `sluice:meta:{<ch>}`: the channel's `epoch`, the last `seq` given, and what tells which
//!   events Redis already took (`pos`, or `origin` and `ids`; below);
//! - `sluice:history:{<ch>}`: a stream of the published messages, entry id `<seq>-0`, field
//!   `event`, trimmed to about `history.max_len` and expiring `history.ttl` after its last
//!   write;
//! - `sluice:state:{<ch>}` (routes with `state = true`): the latest message per record id.
//!
//! The braces make the channel a Redis Cluster hash tag: the three keys of a channel live in
//! one slot. One transaction per channel per batch ([`transaction`]) publishes that channel's
//! events of the batch, writes their history entries and state and moves the meta, all at once,
//! and the transactions of a batch go out as one pipeline: no round trip per event.
//!
//! Sluice numbers the messages itself (it is the only writer): it keeps each channel's meta as
//! it last wrote it ([`Channels`], per connection) and reads the metas it does not know in one
//! pipelined `HMGET` round trip first (a new connection, a channel not seen since). Each
//! transaction reads the meta again as its first command; when that is not what the numbers
//! came from (Redis flushed or evicted it, or another writer moved it while the connection
//! stayed up), the run is published again at once in a new epoch, so consumers resynchronise
//! as they would after any loss, and history and state hold the run.
//!
//! Exactly once: after a crash the source reads again what was not confirmed, and the publisher
//! skips what the channel already has. Logical mode's order keys grow with commit order on
//! every channel, so the last one published (`pos`) is the bound. Trigger mode's change_log
//! ids do not follow commit order; but a re-read starts from the stored checkpoint the batch
//! was read from (its `origin`), so the meta keeps the ids published since that origin. When
//! the meta is gone (Redis lost it), a new epoch starts at seq 1 and the old history and
//! state go with it.

use std::time::{SystemTime, UNIX_EPOCH};

mod answer;
mod batch;
mod meta;
mod transaction;

use super::resp::{self, Reply};
use super::{Delivery, Unavailable};
use crate::config::HistoryConfig;
use crate::route::Event;
pub use batch::Publishing;
pub use meta::{Channels, Meta};
pub use transaction::Publish;

/// What each channel keeps.
#[derive(Debug, Clone)]
pub struct History {
    /// 0: no history stream (numbers are given anyway).
    pub(super) max_len: usize,
    pub(super) ttl_ms: u128,
}

impl History {
    pub fn new(config: &HistoryConfig) -> History {
        let max_len = if config.enabled { config.max_len } else { 0 };
        History {
            max_len,
            ttl_ms: config.ttl.as_millis().max(1),
        }
    }
}

/// The events of one channel within a batch, in batch order.
pub struct Run<'a> {
    pub channel: &'a str,
    pub(super) events: Vec<usize>,
}

/// Groups a batch by channel, keeping each channel's events in order.
pub fn runs(events: &[Event]) -> Vec<Run<'_>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let r = *at.entry(&e.channel).or_insert_with(|| {
            runs.push(Run {
                channel: &e.channel,
                events: Vec::new(),
            });
            runs.len() - 1
        });
        runs[r].events.push(i);
    }
    runs
}

/// The epoch a channel starts when it has none: the time in milliseconds, base 36, so a new
/// one always differs from the one Redis lost.
pub fn new_epoch() -> String {
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut digits = Vec::new();
    while ms > 0 || digits.is_empty() {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(ms % 36) as usize]);
        ms /= 36;
    }
    digits.reverse();
    String::from_utf8(digits).expect("ascii digits")
}

/// The three keys of a channel.
pub fn keys(channel: &str) -> [String; 3] {
    ["meta", "history", "state"].map(|k| format!("sluice:{k}:{{{channel}}}"))
}

/// Queued and discarded on every new connection: Redis checks a user's rights (ACL commands
/// and key patterns) when it queues a command, so a user who may not run what a channel's
/// transaction runs is told at connect time, not per event. `PUBLISH` is left out: a channel
/// the user may not publish on is that event's rejection (a dead letter), not the daemon's.
/// A single server only: on a cluster the probe's keys hash to one shard.
pub const PROBE: &[&[&[u8]]] = &[
    &[b"MULTI"],
    &[b"HMGET", b"sluice:meta:{sluice}", b"epoch"],
    &[b"HSET", b"sluice:meta:{sluice}", b"seq", b"0"],
    &[b"DEL", b"sluice:history:{sluice}", b"sluice:state:{sluice}"],
    &[b"XADD", b"sluice:history:{sluice}", b"1-0", b"event", b"{}"],
    &[b"XTRIM", b"sluice:history:{sluice}", b"MAXLEN", b"~", b"1"],
    &[b"PEXPIRE", b"sluice:history:{sluice}", b"1"],
    &[b"HSET", b"sluice:state:{sluice}", b"r", b"{}"],
    &[b"HDEL", b"sluice:state:{sluice}", b"r"],
    &[b"DISCARD"],
];

impl super::Conn {
    /// The batch: the metas this connection does not know (one pipeline, only when there are
    /// any), then `ROLE`, one transaction per channel and the cache keys' `DEL`s in one
    /// pipeline, every reply read in order; a run whose meta changed behind Sluice once more.
    pub(super) async fn round_trip_recoverable(
        &mut self,
        events: &[Event],
        history: &History,
        origin: &str,
    ) -> Result<Vec<Delivery>, Unavailable> {
        let mut batch = Publishing::new(events, history, origin, Publish::Inside);
        self.channels.bound();
        let unknown = batch.unknown(&self.channels);
        if !unknown.is_empty() {
            for &r in &unknown {
                batch.read_meta(&mut self.write, r);
            }
            let replies = self.exchange(unknown.len()).await?;
            for (&r, reply) in unknown.iter().zip(&replies) {
                batch.learn(r, reply, &mut self.channels)?;
            }
        }
        batch.plan(&self.channels);
        let mut out: Vec<Option<Delivery>> = vec![None; events.len()];
        self.send_runs(&mut batch, &mut out, true).await?;
        if batch.repeat() {
            self.send_runs(&mut batch, &mut out, false).await?;
        }
        Ok(out
            .into_iter()
            .map(|d| d.expect("every event is in a run"))
            .collect())
    }

    /// One pipeline: `ROLE`, the pass's transactions, and with `deletes` the cache keys' `DEL`s.
    async fn send_runs(
        &mut self,
        batch: &mut Publishing<'_>,
        out: &mut [Option<Delivery>],
        deletes: bool,
    ) -> Result<(), Unavailable> {
        resp::command(&mut self.write, &[b"ROLE"]);
        let pending = batch.pending();
        let counts: Vec<usize> = pending
            .iter()
            .map(|&r| batch.encode(&mut self.write, r, false))
            .collect();
        let events = batch.events;
        let dels: Vec<usize> = if deletes {
            (0..events.len())
                .filter(|&i| !events[i].invalidate.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        for &i in &dels {
            let mut args: Vec<&[u8]> = vec![b"DEL"];
            args.extend(events[i].invalidate.iter().map(|k| k.as_bytes()));
            resp::command(&mut self.write, &args);
        }
        let total = 1 + counts.iter().sum::<usize>() + dels.len();
        let mut replies = self.exchange(total).await?.into_iter();
        super::primary(replies.next().as_ref())?;
        for (&r, &n) in pending.iter().zip(&counts) {
            let mine =
                (n > 0).then(|| batch.collapse(r, replies.by_ref().take(n).collect(), false));
            batch.settle(r, mine, &mut self.channels, out)?;
        }
        for i in dels {
            if let Some(Reply::Error(err)) = replies.next() {
                if err.starts_with("READONLY") {
                    return Err(Unavailable::ReadOnly(err));
                }
                if matches!(
                    out[i],
                    Some(Delivery::Sent { .. }) | Some(Delivery::Duplicate)
                ) {
                    out[i] = Some(Delivery::Rejected(format!(
                        "DEL of cache keys of {}: {err}",
                        events[i].channel
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_keep_each_channels_order() {
        let event = |channel: &str| Event {
            event_id: String::new(),
            channel: channel.into(),
            app: "a".into(),
            data_type: "t".into(),
            table: "t".into(),
            tenant: "x".into(),
            payload: b"{}".to_vec(),
            invalidate: Vec::new(),
            key: String::new(),
            record_id: None,
            removes: false,
            state: false,
        };
        let events: Vec<Event> = ["a", "b", "a", "c", "b"].iter().map(|c| event(c)).collect();
        let got: Vec<(&str, Vec<usize>)> = runs(&events)
            .into_iter()
            .map(|r| (r.channel, r.events))
            .collect();
        assert_eq!(got, [("a", vec![0, 2]), ("b", vec![1, 4]), ("c", vec![3])]);
        assert_eq!(keys("crm:t1:x")[0], "sluice:meta:{crm:t1:x}");
        assert!(new_epoch().len() >= 8 && new_epoch() <= new_epoch());
    }
}
