//! What Redis answered a channel's transaction: one reply made of the transaction's replies
//! ([`collapse`]), and each event's delivery read from it ([`Tx::read`]).

use super::transaction::{unexpected, Context, Expect, Publish, Tx};
use super::{Meta, Run};
use crate::publish::resp::Reply;
use crate::publish::topology;
use crate::publish::{Delivery, Unavailable};
use crate::route::Event;

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
        let mut replies = Replies {
            exec: exec.iter(),
            after: after.iter(),
            inside,
        };
        let found = Meta::parse(replies.exec()?)?;
        let dels =
            usize::from(self.started && self.history) + usize::from(self.started && self.state);
        for _ in 0..dels {
            replies.exec()?;
        }
        for (&i, seq) in run.events.iter().zip(&self.numbers) {
            out[i] = Some(match seq {
                None => Delivery::Duplicate,
                Some(_) => self.delivery(&mut replies, run, &events[i])?,
            });
        }
        let trimmed = match self.history.then(|| replies.exec()).transpose()? {
            Some(Reply::Integer(n)) => *n,
            _ => 0,
        };
        let found = (found.epoch, found.seq);
        if found != self.expect {
            return Ok(Outcome::Mismatch(found));
        }
        Ok(Outcome::Done { trimmed })
    }

    /// One new event's delivery: its publish's answer, rejected if its history entry or state
    /// write failed.
    fn delivery(
        &self,
        replies: &mut Replies,
        run: &Run,
        e: &Event,
    ) -> Result<Delivery, Unavailable> {
        let mut delivery = match replies.publish()? {
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
        let writes = usize::from(self.history) + usize::from(self.writes_state(e));
        for _ in 0..writes {
            if let Reply::Error(err) = replies.exec()? {
                delivery =
                    Delivery::Rejected(format!("history or state of {}: {err}", run.channel));
            }
        }
        Ok(delivery)
    }
}

/// A transaction's answers in order: `EXEC`'s results, then the publishes after it.
struct Replies<'r> {
    exec: std::slice::Iter<'r, Reply>,
    after: std::slice::Iter<'r, Reply>,
    /// The publishes are among `EXEC`'s results.
    inside: bool,
}

impl<'r> Replies<'r> {
    fn exec(&mut self) -> Result<&'r Reply, Unavailable> {
        self.exec
            .next()
            .ok_or(unexpected("a reply per queued command"))
    }

    fn publish(&mut self) -> Result<&'r Reply, Unavailable> {
        match self.inside {
            true => self.exec(),
            false => self.after.next().ok_or(unexpected("a reply per publish")),
        }
    }
}
