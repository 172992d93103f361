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
//! one slot. One Lua script call per channel per batch (`channel.lua`) publishes that
//! channel's events of the batch, writes their history entries and state and moves the meta,
//! all or nothing, and the calls of a batch go out as one pipeline: no round trip per event.
//! The script numbers the messages itself (`seq`, `epoch` written at the head of the JSON),
//! so the numbers follow publish order with no gap.
//!
//! Exactly once: after a crash the source reads again what was not confirmed, and the script
//! skips what the channel already has. Logical mode's order keys grow with commit order on
//! every channel, so the last one published (`pos`) is the bound. Trigger mode's change_log
//! ids do not follow commit order; but a re-read starts from the stored checkpoint the batch
//! was read from (its `origin`), so the meta keeps the ids published since that origin. When
//! the meta is gone (Redis lost it), a new epoch starts at seq 1 and the old history and
//! state go with it.

use std::time::{SystemTime, UNIX_EPOCH};

use super::resp::{self, Reply};
use super::{Delivery, Unavailable};
use crate::config::HistoryConfig;
use crate::route::Event;
use crate::telemetry as m;

/// The script, loaded on every connection (`SCRIPT LOAD`) and called by its digest.
pub const SCRIPT: &str = include_str!("channel.lua");

/// The script for a Redis Cluster: the same, publishing with `SPUBLISH` (sharded pub/sub: the
/// message goes to the channel's shard only, which is also where its keys live).
pub fn sharded_script() -> &'static str {
    static SHARDED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHARDED.get_or_init(|| SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
}

/// What the script keeps per channel.
#[derive(Debug, Clone)]
pub struct History {
    /// 0: no history stream (numbers are given anyway).
    max_len: usize,
    ttl_ms: u128,
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
    events: Vec<usize>,
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

/// Appends one `EVALSHA` for `run` to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    sha: &[u8],
    run: &Run,
    events: &[Event],
    history: &History,
    origin: &str,
    epoch: &str,
) {
    let [meta, hist, state] = keys(run.channel);
    let (max_len, ttl) = (history.max_len.to_string(), history.ttl_ms.to_string());
    let keep = if run.events.iter().any(|&i| events[i].state) {
        "1"
    } else {
        "0"
    };
    let mut args: Vec<&[u8]> = Vec::with_capacity(10 + 4 * run.events.len());
    // only the keys the channel has (see channel.lua)
    let mut keys: Vec<&[u8]> = vec![meta.as_bytes()];
    if history.max_len > 0 {
        keys.push(hist.as_bytes());
    }
    if keep == "1" {
        keys.push(state.as_bytes());
    }
    let count = keys.len().to_string();
    args.extend([&b"EVALSHA"[..], sha, count.as_bytes()]);
    args.extend(keys);
    args.extend([
        run.channel.as_bytes(),
        epoch.as_bytes(),
        max_len.as_bytes(),
        ttl.as_bytes(),
        origin.as_bytes(),
        keep.as_bytes(),
    ]);
    for &i in &run.events {
        let e = &events[i];
        let removes: &[u8] = if e.removes { b"1" } else { b"0" };
        args.extend([
            e.key.as_bytes(),
            e.record_id.as_deref().unwrap_or("").as_bytes(),
            removes,
            &e.payload[..],
        ]);
    }
    resp::command(out, &args);
}

/// Reads the script's answer for `run` into `out` (one slot per event of the batch).
pub fn read(answer: Reply, run: &Run, out: &mut [Option<Delivery>]) -> Result<(), Unavailable> {
    let items = match answer {
        Reply::Array(items) if items.len() == run.events.len() + 2 => items,
        Reply::Error(e) if e.starts_with("READONLY") => return Err(Unavailable::ReadOnly(e)),
        Reply::Error(e) if e.starts_with("NOSCRIPT") => return Err(Unavailable::ScriptMissing),
        Reply::Error(e) => {
            for &i in &run.events {
                out[i] = Some(Delivery::Rejected(format!("PUBLISH: {e}")));
            }
            return Ok(());
        }
        _ => {
            return Err(Unavailable::Protocol(resp::ProtocolError::Unexpected(
                "the channel script's results",
            )))
        }
    };
    let count = |r: &Reply| if let Reply::Integer(n) = r { *n } else { 0 };
    if count(&items[0]) > 0 {
        metrics::counter!(m::EPOCHS_STARTED).increment(1);
        tracing::info!(
            channel = run.channel,
            "the channel has no state in Redis: a new epoch starts at seq 1"
        );
    }
    let trimmed = count(&items[1]);
    if trimmed > 0 {
        metrics::counter!(m::HISTORY_TRIMMED).increment(trimmed as u64);
    }
    for (&i, r) in run.events.iter().zip(&items[2..]) {
        out[i] = Some(match count(r) {
            -1 => Delivery::Duplicate,
            receivers => Delivery::Sent { receivers },
        });
    }
    Ok(())
}

impl super::Conn {
    /// The batch as one pipeline: `ROLE`, one script call per channel, then the cache keys'
    /// `DEL`s; every reply read in order.
    pub(super) async fn round_trip_recoverable(
        &mut self,
        events: &[Event],
        history: &History,
        origin: &str,
    ) -> Result<Vec<Delivery>, Unavailable> {
        let sha = self.script.clone().ok_or(Unavailable::ScriptMissing)?;
        let runs = runs(events);
        let epoch = new_epoch();
        resp::command(&mut self.write, &[b"ROLE"]);
        for run in &runs {
            encode(&mut self.write, &sha, run, events, history, origin, &epoch);
        }
        let mut deletes = 0;
        for e in events.iter().filter(|e| !e.invalidate.is_empty()) {
            let mut args: Vec<&[u8]> = vec![b"DEL"];
            args.extend(e.invalidate.iter().map(|k| k.as_bytes()));
            resp::command(&mut self.write, &args);
            deletes += 1;
        }
        let mut replies = self.exchange(1 + runs.len() + deletes).await?.into_iter();
        super::primary(replies.next().as_ref())?;
        let mut out: Vec<Option<Delivery>> = vec![None; events.len()];
        for run in &runs {
            read(replies.next().ok_or(Unavailable::Closed)?, run, &mut out)?;
        }
        for (i, e) in events
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.invalidate.is_empty())
        {
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
                        e.channel
                    )));
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|d| d.expect("every event is in a run"))
            .collect())
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
