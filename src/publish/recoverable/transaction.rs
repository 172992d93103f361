//! One channel's part of a batch as a Redis transaction (`MULTI` ... `EXEC`).
//!
//! Sluice is the channel's only writer, so it numbers the messages itself, from the channel's
//! meta as it last wrote or read it ([`Meta`], kept per connection). The transaction reads the
//! meta as its first command (`HMGET`, run atomically with the rest), so its answer says
//! whether the numbers were right: if Redis lost or changed the meta meanwhile (a flush, an
//! eviction, another writer), the caller publishes the run again in a new epoch (see
//! [`super`]). A transaction costs Redis about half what the same work cost as a
//! Lua script call (no Lua values per command, no string building inside Redis).
//!
//! ```text
//! MULTI
//! HMGET sluice:meta:{ch} epoch seq           the meta the numbers were given from
//! DEL sluice:history:{ch}, sluice:state:{ch}  only when a new epoch starts
//! PUBLISH ch <msg>                            per new event, msg = {"seq":N,"epoch":"E",...
//! XADD sluice:history:{ch} N-0 event <msg>    when history is kept
//! HSET/HDEL sluice:state:{ch} <recordId>      when the route keeps state
//! XTRIM sluice:history:{ch} MAXLEN ~ <max>; PEXPIRE sluice:history:{ch} <ttl>
//! HSET sluice:meta:{ch} epoch seq pos origin ids
//! EXEC
//! ```

use std::collections::HashSet;

use super::meta::Meta;
use super::{History, Run};
use crate::publish::resp;
use crate::publish::Unavailable;
use crate::route::Event;

pub(super) fn unexpected(what: &'static str) -> Unavailable {
    Unavailable::Protocol(resp::ProtocolError::Unexpected(what))
}

/// One channel's transaction, planned: which events are new and their numbers.
#[derive(Debug)]
pub struct Tx {
    /// The epoch and seq the transaction must find in the meta.
    pub(super) expect: Expect,
    /// Per event of the run: its seq, or `None` when Redis already has it.
    pub(super) numbers: Vec<Option<u64>>,
    /// A new epoch starts (the old history and state go).
    pub(super) started: bool,
    /// History is kept (`XADD`, `XTRIM`, `PEXPIRE`).
    pub(super) history: bool,
    /// The route keeps state (`HSET`/`HDEL` per record).
    pub(super) state: bool,
    /// The meta the numbers were given from.
    pub base: Meta,
    /// The meta after the transaction.
    pub after: Meta,
}

/// The epoch and seq a transaction must find in the meta.
pub type Expect = (Option<String>, u64);

/// What every transaction of a batch shares.
pub struct Context<'a> {
    pub history: &'a History,
    /// Trigger mode's checkpoint the batch was read from; empty in logical mode.
    pub origin: &'a str,
    /// The epoch a channel without one starts.
    pub epoch: String,
    /// How the messages are published.
    pub publish: Publish,
}

/// Where a transaction's messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// `PUBLISH` inside the transaction (one server).
    Inside,
    /// `SPUBLISH` right after `EXEC`, in the same pipeline (a Redis Cluster): Redis counts a
    /// shard channel as a key that does not exist, so a transaction holding `SPUBLISH` answers
    /// `TRYAGAIN` for as long as its slot is migrating. History and meta are written first, so
    /// a reader still never sees a `seq` the history lacks.
    After,
}

impl Tx {
    /// Numbers the run's new events after `base`, expecting the meta to read `expect` (`base`'s
    /// epoch and seq, but for a run published again after a mismatch). With no epoch in `base`,
    /// the context's epoch starts.
    pub fn plan(run: &Run, events: &[Event], base: &Meta, expect: Expect, ctx: &Context) -> Tx {
        let trigger = !ctx.origin.is_empty();
        let mut after = Meta {
            epoch: Some(base.epoch.clone().unwrap_or_else(|| ctx.epoch.clone())),
            ..base.clone()
        };
        // trigger mode: the ids published since the batch's origin (see recoverable)
        let mut seen: HashSet<&str> = HashSet::new();
        if trigger && base.origin == ctx.origin {
            seen.extend(base.ids.split(',').filter(|s| !s.is_empty()));
        } else if trigger {
            after.origin = ctx.origin.to_string();
            after.ids.clear();
        }
        let mut numbers = Vec::with_capacity(run.events.len());
        let mut pos = base.pos.as_str();
        for &i in &run.events {
            let key = events[i].key.as_str();
            let new = if trigger {
                seen.insert(key)
            } else {
                pos.is_empty() || key > pos
            };
            if !new {
                numbers.push(None);
                continue;
            }
            after.seq += 1;
            numbers.push(Some(after.seq));
            if trigger {
                after.ids.push_str(key);
                after.ids.push(',');
            } else {
                pos = key;
            }
        }
        if pos != after.pos {
            after.pos = pos.to_string();
        }
        Tx {
            expect,
            numbers,
            started: base.epoch.is_none(),
            history: ctx.history.max_len > 0,
            state: run.events.iter().any(|&i| events[i].state),
            base: base.clone(),
            after,
        }
    }

    /// Whether there is anything to send: some event is new (a run of duplicates only changes
    /// nothing in Redis).
    pub fn is_empty(&self) -> bool {
        self.numbers.iter().all(Option::is_none)
    }
}

impl Tx {
    /// Appends the transaction to `out`; returns how many replies it gets (`MULTI`, one
    /// `QUEUED` per command, `EXEC`). Nothing for a run of duplicates.
    /// `asking`: each `SPUBLISH` after `EXEC` goes behind `ASKING` too (the transaction was
    /// redirected to a node importing the slot).
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        run: &Run,
        events: &[Event],
        ctx: &Context,
        asking: bool,
    ) -> usize {
        if self.is_empty() {
            return 0;
        }
        let keys = super::keys(run.channel);
        let mut w = Queue { out, queued: 0 };
        resp::command(w.out, &[b"MULTI"]);
        w.cmd(&[b"HMGET", keys[0].as_bytes(), b"epoch", b"seq"]);
        if self.started && self.history {
            w.cmd(&[b"DEL", keys[1].as_bytes()]);
        }
        if self.started && self.state {
            w.cmd(&[b"DEL", keys[2].as_bytes()]);
        }
        self.encode_events(&mut w, run, events, ctx, &keys);
        self.encode_close(&mut w, ctx, &keys);
        resp::command(w.out, &[b"EXEC"]);
        let replies = w.queued + 2;
        if ctx.publish == Publish::After {
            return replies + self.encode_after(out, run, events, asking);
        }
        replies
    }

    /// Per new event: its `PUBLISH` (inside), history entry and state write.
    fn encode_events(
        &self,
        w: &mut Queue,
        run: &Run,
        events: &[Event],
        ctx: &Context,
        [_, hist, state]: &[String; 3],
    ) {
        let (hist, state) = (hist.as_bytes(), state.as_bytes());
        let epoch = self.epoch();
        let (mut msg, mut id) = (Vec::new(), Vec::new());
        for (&i, seq) in run.events.iter().zip(&self.numbers) {
            let (Some(seq), e) = (seq, &events[i]) else {
                continue;
            };
            message(&mut msg, *seq, epoch, &e.payload);
            if ctx.publish == Publish::Inside {
                w.cmd(&[b"PUBLISH", run.channel.as_bytes(), &msg]);
            }
            if self.history {
                id.clear();
                resp::push_decimal(&mut id, *seq);
                id.extend_from_slice(b"-0");
                w.cmd(&[b"XADD", hist, &id, b"event", &msg]);
            }
            if self.writes_state(e) {
                let rid = e.record_id.as_deref().unwrap_or_default().as_bytes();
                match e.removes {
                    true => w.cmd(&[b"HDEL", state, rid]),
                    false => w.cmd(&[b"HSET", state, rid, &msg]),
                }
            }
        }
    }

    /// The history's trim and expiry, and the meta's new fields.
    fn encode_close(&self, w: &mut Queue, ctx: &Context, [meta, hist, _]: &[String; 3]) {
        if self.history {
            let (max, ttl) = (
                ctx.history.max_len.to_string(),
                ctx.history.ttl_ms.to_string(),
            );
            w.cmd(&[b"XTRIM", hist.as_bytes(), b"MAXLEN", b"~", max.as_bytes()]);
            w.cmd(&[b"PEXPIRE", hist.as_bytes(), ttl.as_bytes()]);
        }
        let (a, seq) = (&self.after, self.after.seq.to_string());
        w.cmd(&[
            b"HSET",
            meta.as_bytes(),
            b"epoch",
            self.epoch().as_bytes(),
            b"seq",
            seq.as_bytes(),
            b"pos",
            a.pos.as_bytes(),
            b"origin",
            a.origin.as_bytes(),
            b"ids",
            a.ids.as_bytes(),
        ]);
    }

    /// The `SPUBLISH`es after `EXEC` (see [`Publish::After`]); returns their replies' count.
    fn encode_after(&self, out: &mut Vec<u8>, run: &Run, events: &[Event], asking: bool) -> usize {
        let mut msg = Vec::new();
        let mut replies = 0;
        for (&i, seq) in run.events.iter().zip(&self.numbers) {
            let Some(seq) = seq else { continue };
            message(&mut msg, *seq, self.epoch(), &events[i].payload);
            if asking {
                resp::command(out, &[b"ASKING"]);
            }
            resp::command(out, &[b"SPUBLISH", run.channel.as_bytes(), &msg]);
            replies += 1 + usize::from(asking);
        }
        replies
    }

    /// The epoch the messages carry.
    fn epoch(&self) -> &str {
        self.after.epoch.as_deref().unwrap_or_default()
    }

    /// How many of the transaction's replies come after `EXEC` (see [`collapse`]).
    pub fn tail(&self, ctx: &Context, asking: bool) -> usize {
        match ctx.publish {
            Publish::Inside => 0,
            Publish::After => {
                let n = self.numbers.iter().flatten().count();
                n * (1 + usize::from(asking))
            }
        }
    }
}

impl Tx {
    /// Whether the transaction writes `e`'s state entry.
    pub(super) fn writes_state(&self, e: &Event) -> bool {
        self.state && e.record_id.as_deref().is_some_and(|r| !r.is_empty())
    }
}

/// Commands queued inside a transaction, counted (each gets a `QUEUED` reply).
struct Queue<'o> {
    out: &'o mut Vec<u8>,
    queued: usize,
}

impl Queue<'_> {
    fn cmd(&mut self, args: &[&[u8]]) {
        resp::command(self.out, args);
        self.queued += 1;
    }
}

/// The numbered message: `{"seq":N,"epoch":"E",` and the event's JSON after its `{`.
fn message(out: &mut Vec<u8>, seq: u64, epoch: &str, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(b"{\"seq\":");
    resp::push_decimal(out, seq);
    out.extend_from_slice(b",\"epoch\":\"");
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(payload.get(1..).unwrap_or_default());
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
