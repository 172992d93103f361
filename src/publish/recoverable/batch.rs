//! One batch on recoverable channels: the metas to read first, a transaction per channel,
//! and the runs to publish again in a new epoch (see [`super`]). The transport (one
//! connection, or a cluster's masters) sends what this plans and hands back the answers.

use std::collections::HashMap;

use super::answer::{self, Outcome};
use super::transaction::{Context, Publish, Tx};
use super::{keys, new_epoch, runs, Channels, History, Meta, Run};
use crate::publish::resp::Reply;
use crate::publish::{Delivery, Unavailable};
use crate::route::Event;
use crate::telemetry as m;

/// One batch on recoverable channels: its runs, their transactions, and their outcomes.
pub struct Publishing<'a> {
    pub events: &'a [Event],
    pub runs: Vec<Run<'a>>,
    ctx: Context<'a>,
    /// Per run, once planned.
    txs: Vec<Tx>,
    /// Runs whose transaction found another meta than the one it was numbered from.
    again: Vec<usize>,
    /// This pass publishes those runs again.
    repeating: bool,
    /// Runs whose meta could not be read, and why: their events are rejected.
    refused: HashMap<usize, String>,
}

impl<'a> Publishing<'a> {
    pub fn new(
        events: &'a [Event],
        history: &'a History,
        origin: &'a str,
        publish: Publish,
    ) -> Publishing<'a> {
        Publishing {
            events,
            runs: runs(events),
            ctx: Context {
                history,
                origin,
                epoch: new_epoch(),
                publish,
            },
            txs: Vec::new(),
            again: Vec::new(),
            repeating: false,
            refused: HashMap::new(),
        }
    }

    /// The runs whose channel's meta `known` lacks: read them first ([`Publishing::read_meta`]).
    pub fn unknown(&self, known: &Channels) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&r| !known.knows(self.runs[r].channel))
            .collect()
    }

    /// Appends the `HMGET` of run `r`'s meta.
    pub fn read_meta(&self, out: &mut Vec<u8>, r: usize) {
        Meta::read(out, &keys(self.runs[r].channel)[0]);
    }

    /// Keeps the answer to [`Publishing::read_meta`]. A meta Redis cannot read (a key of
    /// another type, say) rejects the run's events rather than holding the batch.
    pub fn learn(
        &mut self,
        r: usize,
        reply: &Reply,
        known: &mut Channels,
    ) -> Result<(), Unavailable> {
        match reply {
            Reply::Error(e) if e.starts_with("READONLY") => Err(Unavailable::ReadOnly(e.clone())),
            Reply::Error(e) => {
                self.refused
                    .insert(r, format!("reading the channel meta: {e}"));
                Ok(())
            }
            reply => {
                known.remember(self.runs[r].channel, Meta::parse(reply)?);
                Ok(())
            }
        }
    }

    /// Numbers every run from the metas in `known` (which has them all).
    pub fn plan(&mut self, known: &Channels) {
        let empty = Meta::default();
        self.txs = self
            .runs
            .iter()
            .map(|run| {
                let base = known.get(run.channel).unwrap_or(&empty);
                let expect = (base.epoch.clone(), base.seq);
                Tx::plan(run, self.events, base, expect, &self.ctx)
            })
            .collect();
    }

    /// The runs to send in this pass (all, or those published again).
    pub fn pending(&self) -> Vec<usize> {
        if self.repeating {
            self.again.clone()
        } else {
            (0..self.runs.len()).collect()
        }
    }

    /// Whether run `r` has anything new to send.
    pub fn sends(&self, r: usize) -> bool {
        !self.txs[r].is_empty() && !self.refused.contains_key(&r)
    }

    /// Appends run `r`'s transaction (`asking`: redirected to a node importing its slot);
    /// returns how many replies it gets (0: nothing to send).
    pub fn encode(&self, out: &mut Vec<u8>, r: usize, asking: bool) -> usize {
        if !self.sends(r) {
            return 0;
        }
        self.txs[r].encode(out, &self.runs[r], self.events, &self.ctx, asking)
    }

    /// Run `r`'s replies as one (see [`answer::collapse`]).
    pub fn collapse(&self, r: usize, replies: Vec<Reply>, asking: bool) -> Reply {
        answer::collapse(replies, self.txs[r].tail(&self.ctx, asking))
    }

    /// Applies run `r`'s answer (see [`answer::collapse`]; `None`: nothing was sent) to
    /// `out` and `known`.
    pub fn settle(
        &mut self,
        r: usize,
        reply: Option<Reply>,
        known: &mut Channels,
        out: &mut [Option<Delivery>],
    ) -> Result<(), Unavailable> {
        let (run, tx) = (&self.runs[r], &self.txs[r]);
        let Some(reply) = reply else {
            match self.refused.get(&r) {
                Some(why) => run.events.iter().for_each(|&i| {
                    out[i] = Some(Delivery::Rejected(why.clone()));
                }),
                None if !self.repeating => tx.skipped(run, out),
                None => {}
            }
            return Ok(());
        };
        // a run published again keeps the deliveries of its first pass
        let mut again = Vec::new();
        let target = if self.repeating {
            again.resize(out.len(), None);
            &mut again[..]
        } else {
            out
        };
        match tx.read(run, self.events, &self.ctx, reply, target)? {
            Outcome::Done { trimmed } => {
                if trimmed > 0 {
                    metrics::counter!(m::HISTORY_TRIMMED).increment(trimmed as u64);
                }
                if tx.base.epoch.is_none() {
                    metrics::counter!(m::EPOCHS_STARTED).increment(1);
                    tracing::info!(
                        channel = run.channel,
                        "the channel has no state in Redis: a new epoch starts at seq 1"
                    );
                }
                known.remember(run.channel, tx.after.clone());
            }
            Outcome::Mismatch(found) if !self.repeating => {
                tracing::warn!(
                    channel = run.channel,
                    ?found,
                    expected = ?(&tx.base.epoch, tx.base.seq),
                    "the channel's meta changed behind Sluice (a flush, an eviction, another writer): publishing its run again in a new epoch"
                );
                self.again.push(r);
            }
            Outcome::Mismatch(found) => {
                tracing::warn!(
                    channel = run.channel,
                    ?found,
                    "the channel's meta changed again; reading it anew next batch"
                );
                known.forget(run.channel);
            }
            Outcome::Refused => {
                known.forget(run.channel);
            }
        }
        Ok(())
    }

    /// After a pass: whether runs must go again in a new epoch (then they are planned so:
    /// numbered from 1, with the dedup of before the batch, expecting what the first pass wrote).
    pub fn repeat(&mut self) -> bool {
        if self.repeating || self.again.is_empty() {
            return false;
        }
        self.repeating = true;
        for &r in &self.again {
            let first = &self.txs[r];
            let base = Meta {
                epoch: None,
                seq: 0,
                ..first.base.clone()
            };
            let expect = (first.after.epoch.clone(), first.after.seq);
            self.txs[r] = Tx::plan(&self.runs[r], self.events, &base, expect, &self.ctx);
        }
        true
    }
}
