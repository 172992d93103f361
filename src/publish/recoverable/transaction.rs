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

use super::{History, Run};
use crate::publish::resp::{self, Reply};
use crate::publish::topology;
use crate::publish::{Delivery, Unavailable};
use crate::route::Event;

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

fn unexpected(what: &'static str) -> Unavailable {
    Unavailable::Protocol(resp::ProtocolError::Unexpected(what))
}

/// One channel's transaction, planned: which events are new and their numbers.
#[derive(Debug)]
pub struct Tx {
    /// The epoch and seq the transaction must find in the meta.
    expect: (Option<String>, u64),
    /// Per event of the run: its seq, or `None` when Redis already has it.
    numbers: Vec<Option<u64>>,
    /// A new epoch starts (the old history and state go).
    started: bool,
    /// History is kept (`XADD`, `XTRIM`, `PEXPIRE`).
    history: bool,
    /// The route keeps state (`HSET`/`HDEL` per record).
    state: bool,
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

/// What the transaction's answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published as planned; the number of history entries trimmed.
    Done { trimmed: i64 },
    /// Published, but the meta was not what the numbers were given from: this is what it was.
    Mismatch(Expect),
    /// Redis refused the transaction (each event of the run got [`Delivery::Rejected`]).
    Refused,
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
        let [meta, hist, state] = super::keys(run.channel);
        let (hist, state) = (hist.as_bytes(), state.as_bytes());
        let epoch = self.after.epoch.as_deref().unwrap_or_default();
        let mut queued = 0;
        let mut cmd = |out: &mut Vec<u8>, args: &[&[u8]]| {
            resp::command(out, args);
            queued += 1;
        };
        resp::command(out, &[b"MULTI"]);
        cmd(out, &[b"HMGET", meta.as_bytes(), b"epoch", b"seq"]);
        if self.started && self.history {
            cmd(out, &[b"DEL", hist]);
        }
        if self.started && self.state {
            cmd(out, &[b"DEL", state]);
        }
        let (mut msg, mut id) = (Vec::new(), Vec::new());
        for (&i, seq) in run.events.iter().zip(&self.numbers) {
            let (Some(seq), e) = (seq, &events[i]) else {
                continue;
            };
            message(&mut msg, *seq, epoch, &e.payload);
            if ctx.publish == Publish::Inside {
                cmd(out, &[b"PUBLISH", run.channel.as_bytes(), &msg]);
            }
            if self.history {
                id.clear();
                resp::push_decimal(&mut id, *seq);
                id.extend_from_slice(b"-0");
                cmd(out, &[b"XADD", hist, &id, b"event", &msg]);
            }
            match e.record_id.as_deref() {
                Some(rid) if self.state && !rid.is_empty() && e.removes => {
                    cmd(out, &[b"HDEL", state, rid.as_bytes()])
                }
                Some(rid) if self.state && !rid.is_empty() => {
                    cmd(out, &[b"HSET", state, rid.as_bytes(), &msg])
                }
                _ => {}
            }
        }
        if self.history {
            let (max, ttl) = (
                ctx.history.max_len.to_string(),
                ctx.history.ttl_ms.to_string(),
            );
            cmd(out, &[b"XTRIM", hist, b"MAXLEN", b"~", max.as_bytes()]);
            cmd(out, &[b"PEXPIRE", hist, ttl.as_bytes()]);
        }
        let seq = self.after.seq.to_string();
        let a = &self.after;
        cmd(
            out,
            &[
                b"HSET",
                meta.as_bytes(),
                b"epoch",
                epoch.as_bytes(),
                b"seq",
                seq.as_bytes(),
                b"pos",
                a.pos.as_bytes(),
                b"origin",
                a.origin.as_bytes(),
                b"ids",
                a.ids.as_bytes(),
            ],
        );
        resp::command(out, &[b"EXEC"]);
        let mut replies = queued + 2;
        if ctx.publish == Publish::After {
            for (&i, seq) in run.events.iter().zip(&self.numbers) {
                let Some(seq) = seq else { continue };
                message(&mut msg, *seq, epoch, &events[i].payload);
                if asking {
                    resp::command(out, &[b"ASKING"]);
                }
                resp::command(out, &[b"SPUBLISH", run.channel.as_bytes(), &msg]);
                replies += 1 + usize::from(asking);
            }
        }
        replies
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

/// A transaction's replies as one: the first queued command's error when Redis refused the
/// transaction (`EXECABORT`: a redirect, `READONLY`, `OOM` ...), or `EXEC`'s own error
/// (`TRYAGAIN`), else `EXEC`'s results followed by the `tail` replies after it (`ASKING`'s
/// `OK`s left out).
pub fn collapse(mut replies: Vec<Reply>, tail: usize) -> Reply {
    let after = replies.split_off(replies.len().saturating_sub(tail));
    let Some(exec) = replies.pop() else {
        return Reply::Other;
    };
    match exec {
        Reply::Error(e) if e.starts_with("EXECABORT") => replies
            .into_iter()
            .find(|r| matches!(r, Reply::Error(_)))
            .unwrap_or(Reply::Error(e)),
        Reply::Array(mut items) => {
            items.extend(after.into_iter().filter(|r| *r != Reply::Other));
            Reply::Array(items)
        }
        exec => exec,
    }
}

impl Tx {
    /// Whether the transaction writes `e`'s state entry.
    fn writes_state(&self, e: &Event) -> bool {
        self.state && e.record_id.as_deref().is_some_and(|r| !r.is_empty())
    }

    /// The outcome of a run with nothing new: every event a duplicate.
    pub fn skipped(&self, run: &Run, out: &mut [Option<Delivery>]) {
        for &i in &run.events {
            out[i] = Some(Delivery::Duplicate);
        }
    }

    /// Reads the transaction's answer (see [`collapse`]) into `out`, one slot per event of
    /// the batch.
    pub fn read(
        &self,
        run: &Run,
        events: &[Event],
        ctx: &Context,
        reply: Reply,
        out: &mut [Option<Delivery>],
    ) -> Result<Outcome, Unavailable> {
        let items = match reply {
            Reply::Array(items) => items,
            Reply::Error(e) if e.starts_with("READONLY") => return Err(Unavailable::ReadOnly(e)),
            Reply::Error(e) => {
                for &i in &run.events {
                    out[i] = Some(Delivery::Rejected(format!("PUBLISH: {e}")));
                }
                return Ok(Outcome::Refused);
            }
            _ => return Err(unexpected("a transaction's results")),
        };
        let new = self.numbers.iter().flatten().count();
        let inside = ctx.publish == Publish::Inside;
        let (exec, after) =
            items.split_at(items.len().saturating_sub(if inside { 0 } else { new }));
        let (mut exec, mut after) = (exec.iter(), after.iter());
        let mut next = |from_exec: bool| {
            let it = if from_exec { &mut exec } else { &mut after };
            it.next().ok_or(unexpected("a reply per queued command"))
        };
        let found = Meta::parse(next(true)?)?;
        let dels =
            usize::from(self.started && self.history) + usize::from(self.started && self.state);
        for _ in 0..dels {
            next(true)?;
        }
        for (&i, seq) in run.events.iter().zip(&self.numbers) {
            if seq.is_none() {
                out[i] = Some(Delivery::Duplicate);
                continue;
            }
            let mut delivery = match next(inside)? {
                Reply::Integer(receivers) => Delivery::Sent {
                    receivers: *receivers,
                },
                Reply::Error(e) if topology::Redirect::parse(e).is_some() => {
                    // the slot moved between EXEC and SPUBLISH: history has it
                    tracing::warn!(channel = run.channel, error = %e, "a message went to history but not out live");
                    Delivery::Sent { receivers: 0 }
                }
                Reply::Error(e) => Delivery::Rejected(format!("PUBLISH: {e}")),
                _ => Delivery::Sent { receivers: 0 },
            };
            let writes = usize::from(self.history) + usize::from(self.writes_state(&events[i]));
            for _ in 0..writes {
                if let Reply::Error(e) = next(true)? {
                    delivery =
                        Delivery::Rejected(format!("history or state of {}: {e}", run.channel));
                }
            }
            out[i] = Some(delivery);
        }
        let trimmed = match self.history.then(|| next(true)).transpose()? {
            Some(Reply::Integer(n)) => *n,
            _ => 0,
        };
        let found = (found.epoch, found.seq);
        if found != self.expect {
            return Ok(Outcome::Mismatch(found));
        }
        Ok(Outcome::Done { trimmed })
    }
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
