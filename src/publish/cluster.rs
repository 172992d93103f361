//! Publishing to a Redis Cluster: one pipeline per master, all in flight at once.
//!
//! A channel's message and its recoverable keys (`sluice:*:{<ch>}`, the channel as hash tag)
//! hash to one slot, so the channel's transaction runs on the master of that slot and its
//! messages go out with `SPUBLISH` (sharded pub/sub: only that shard's subscribers hear it,
//! instead of every node relaying every message), right after the transaction's `EXEC` (see
//! [`super::recoverable::Publish::After`]). A batch is split by master: each gets its channels'
//! transactions and the `DEL`s of the cache keys that hash to it, in one write; the masters
//! answer in parallel. Cache keys may hash to another shard than their channel, so in a
//! cluster their `DEL` is not atomic with the publish (it still rides the same batch). The
//! channel metas Sluice does not know yet are read the same way first.
//!
//! Slots move. A `MOVED` answer updates the slot map and the transaction goes again to the
//! new master within the same batch; `ASK` sends it once to the importing node behind
//! `ASKING`; `TRYAGAIN` (a slot half migrated) and `CLUSTERDOWN` wait a moment and retry.
//! Nothing is duplicated by going again: a refused transaction wrote nothing, and the meta
//! moved with the slot, so the seq stays contiguous. A master that does not answer (failing
//! over, say) fails the batch as [`Unavailable::Shard`], naming it; the slot map is read again
//! before the retry, which finds the promoted replica, and the channel metas are read anew
//! (a promoted replica may lack what its master acknowledged).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Mutex;

use super::fence::Fences;
use super::recoverable::{Channels, History, Publish, Publishing};
use super::resp::{self, Reply};
use super::topology::{self, Addr, Redirect, SlotMap};
use super::{Conn, Delivery, Target, Unavailable, Wait};
use crate::route::Event;

/// Redirections one batch may follow before it is retried as a whole.
const MAX_ROUNDS: usize = 16;

pub(super) struct Cluster {
    seeds: Vec<Addr>,
    target: Target,
    state: Mutex<State>,
    /// The masters' connections carrying a batch, and those given up on (see
    /// [`super::fence`]); outside `state`, as a batch that times out is dropped mid-way.
    fences: std::sync::Mutex<Fences<Addr>>,
}

#[derive(Default)]
struct State {
    map: Option<SlotMap>,
    conns: HashMap<Addr, Conn>,
    /// What the masters' connections know of each recoverable channel's meta; forgotten when
    /// a batch fails (a master failing over may have lost what it acknowledged).
    channels: Channels,
}

impl State {
    /// A node failed the batch: the error, naming its shard if the map knows it; the map is
    /// read again before the retry.
    fn failed(&mut self, addr: &Addr, e: Unavailable) -> Unavailable {
        let map = self.map.take();
        match map
            .as_ref()
            .and_then(|m| Some((m, m.masters.iter().position(|a| a == addr)?)))
        {
            Some((map, i)) => shard(map, i, e),
            None => e,
        }
    }
}

/// One command of a batch, and where it must go.
#[derive(Clone)]
struct Item {
    op: Op,
    slot: u16,
    /// Sent once to this node behind `ASKING` (a slot being imported there).
    ask: Option<Addr>,
}

#[derive(Clone, Copy)]
enum Op {
    /// `HMGET` of run `i`'s channel meta.
    Meta(usize),
    /// Run `i`'s transaction.
    Run(usize),
    /// `SPUBLISH` of event `i` (replays: not numbered).
    Publish(usize),
    /// `DEL` of event `i`'s cache key `k`.
    Del(usize, usize),
}

/// What a batch is: the events, and how they are published.
struct Batch<'a> {
    events: &'a [Event],
    /// Recoverable channels; `None` for replays.
    channels: Option<Publishing<'a>>,
    wait: Option<Wait>,
}

impl Cluster {
    pub(super) fn new(seeds: Vec<Addr>, target: Target) -> Cluster {
        Cluster {
            seeds,
            target,
            state: Mutex::new(State::default()),
            fences: std::sync::Mutex::default(),
        }
    }

    /// Drops every connection and the slot map (after a timeout: nothing is known); the
    /// batches in flight are given up on.
    pub(super) async fn forget(&self) {
        *self.state.lock().await = State::default();
        self.fences().all_failed();
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, Fences<Addr>> {
        self.fences.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection to `addr`, closing the one given up on there first.
    async fn open_fenced(&self, addr: &Addr) -> Result<Conn, Unavailable> {
        let fence = self.fences().to_close(addr);
        let conn = Conn::open(&self.target.at(addr), false, false, fence).await?;
        self.fences().closed(addr);
        Ok(conn)
    }

    /// Reads the slot map and connects to every master (for `check` and startup).
    pub(super) async fn connect_all(&self) -> Result<(), Unavailable> {
        let mut state = self.state.lock().await;
        let map = self.refresh(&mut state).await?;
        if map.uncovered() > 0 {
            return Err(Unavailable::ClusterDown(format!(
                "{} of 16384 hash slots have no master",
                map.uncovered()
            )));
        }
        for (i, addr) in map.masters.iter().enumerate() {
            let mut conn = match state.conns.remove(addr) {
                Some(conn) => conn,
                None => self
                    .open_fenced(addr)
                    .await
                    .map_err(|e| shard(&map, i, e))?,
            };
            cluster_state_ok(&mut conn)
                .await
                .map_err(|e| shard(&map, i, e))?;
            state.conns.insert(addr.clone(), conn);
        }
        Ok(())
    }

    /// Whether every connected master lets the user close a connection given up on.
    pub(super) async fn may_fence(&self) -> Result<bool, Unavailable> {
        let mut state = self.state.lock().await;
        for conn in state.conns.values_mut() {
            if !conn.may_fence().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The masters and the slots each serves, as the cluster tells it now.
    pub(super) async fn shards(&self) -> Result<Vec<(String, String)>, Unavailable> {
        let mut state = self.state.lock().await;
        let map = self.refresh(&mut state).await?;
        Ok((0..map.masters.len())
            .map(|i| (addr_text(&map.masters[i]), map.ranges(i)))
            .collect())
    }

    /// Each channel with the master (`host:port`) that serves its slot, from a fresh slot map.
    pub(super) async fn owners(
        &self,
        channels: impl IntoIterator<Item = &String>,
    ) -> Result<Vec<(String, String)>, Unavailable> {
        let mut state = self.state.lock().await;
        let map = self.refresh(&mut state).await?;
        let mut out = Vec::new();
        for channel in channels {
            let slot = topology::slot(channel);
            let owner = map
                .owner(slot)
                .ok_or_else(|| Unavailable::ClusterDown(format!("slot {slot} has no master")))?;
            out.push((channel.clone(), addr_text(&map.masters[owner])));
        }
        Ok(out)
    }

    /// A new connection to `node` (`host:port`), with the cluster's credentials.
    pub(super) async fn open(&self, node: &str) -> Result<Conn, Unavailable> {
        let addr = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .ok_or_else(|| Unavailable::ClusterDown(format!("not a node address: {node}")))?;
        Conn::open(&self.target.at(&addr), false, false, None).await
    }

    /// Publishes a batch; one [`Delivery`] per event, in order: the channel metas not known
    /// yet, then the transactions (or plain `SPUBLISH`es) and cache `DEL`s, then the runs to
    /// publish again in a new epoch, if any (see [`super::recoverable`]).
    pub(super) async fn publish(
        &self,
        events: &[Event],
        history: Option<&History>,
        origin: &str,
        wait: Option<Wait>,
    ) -> Result<Vec<Delivery>, Unavailable> {
        let mut batch = Batch {
            events,
            channels: history.map(|h| Publishing::new(events, h, origin, Publish::After)),
            wait,
        };
        let mut done = Done {
            out: vec![None; events.len()],
            del_errors: Vec::new(),
        };
        let mut state = self.state.lock().await;
        let passes = self.passes(&mut state, &mut batch, &mut done).await;
        if passes.is_err() {
            // what the batch left in Redis is unknown: read the metas anew next time
            state.channels.clear();
        }
        passes.map(|()| finish(done, events))
    }

    /// The batch's passes: unknown metas, the transactions (and `DEL`s), the runs again.
    async fn passes(
        &self,
        state: &mut State,
        batch: &mut Batch<'_>,
        done: &mut Done,
    ) -> Result<(), Unavailable> {
        if let Some(p) = &batch.channels {
            state.channels.bound();
            let unknown = p.unknown(&state.channels);
            let items = unknown
                .iter()
                .map(|&r| item(Op::Meta(r), p.runs[r].channel));
            let items = items.collect();
            self.settle_all(state, batch, items, done).await?;
        }
        let items = batch.items(&state.channels, done)?;
        self.settle_all(state, batch, items, done).await?;
        let again = batch.channels.as_mut().is_some_and(|p| p.repeat());
        if let Some(p) = batch.channels.as_ref().filter(|_| again) {
            let items = p.pending().into_iter().filter(|&r| p.sends(r));
            let items = items.map(|r| item(Op::Run(r), p.runs[r].channel)).collect();
            self.settle_all(state, batch, items, done).await?;
        }
        Ok(())
    }

    /// Sends `items` and follows redirects until each has its answer.
    async fn settle_all(
        &self,
        state: &mut State,
        batch: &mut Batch<'_>,
        mut pending: Vec<Item>,
        done: &mut Done,
    ) -> Result<(), Unavailable> {
        for round in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if state.map.is_none() {
                self.refresh(state).await?;
            }
            let map = state.map.as_ref().expect("refreshed above");
            let groups = group(map, std::mem::take(&mut pending))?;
            let results = self.send_all(state, batch, groups).await;
            let mut wait = false;
            for (addr, result) in results {
                let (items, replies) = match result {
                    Ok(answered) => answered,
                    Err(e) => return Err(state.failed(&addr, e)),
                };
                for (item, reply) in items.into_iter().zip(replies) {
                    match settle(state, batch, item, reply, done)? {
                        Settled::Done => {}
                        Settled::Again(item, pause) => {
                            wait |= pause;
                            pending.push(item);
                        }
                    }
                }
            }
            if wait && !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(20 * (round as u64 + 1))).await;
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        state.map = None;
        Err(Unavailable::Unsettled)
    }

    /// Sends each node its items in one write, all nodes at once; answers per node.
    async fn send_all(
        &self,
        state: &mut State,
        batch: &Batch<'_>,
        groups: HashMap<Addr, Vec<Item>>,
    ) -> Vec<(Addr, Result<(Vec<Item>, Vec<Reply>), Unavailable>)> {
        let trips = groups.into_iter().map(|(addr, items)| {
            let conn = state.conns.remove(&addr);
            async move {
                let mut conn = match conn {
                    Some(c) => c,
                    None => match self.open_fenced(&addr).await {
                        Ok(c) => c,
                        Err(e) => return (addr, None, Err(e)),
                    },
                };
                self.fences().sending(&addr, conn.me.as_ref());
                let result = trip(&mut conn, batch, &items).await;
                match result {
                    Ok(_) => self.fences().answered(&addr),
                    Err(_) => self.fences().failed(&addr),
                }
                let keep = result.is_ok().then_some(conn);
                (addr, keep, result.map(|replies| (items, replies)))
            }
        });
        let mut results = Vec::new();
        for (addr, conn, result) in join_all(trips).await {
            if let Some(conn) = conn {
                state.conns.insert(addr.clone(), conn);
            }
            results.push((addr, result));
        }
        results
    }

    /// Reads the slot map from the first node that answers: known masters, then the seeds.
    async fn refresh(&self, state: &mut State) -> Result<SlotMap, Unavailable> {
        let mut candidates: Vec<Addr> = state.map.iter().flat_map(|m| m.masters.clone()).collect();
        candidates.extend(self.seeds.iter().cloned());
        let mut failures = Vec::new();
        for addr in candidates {
            match self.slots_from(&addr).await {
                Ok(map) => {
                    state.conns.retain(|a, _| map.masters.contains(a));
                    state.map = Some(map.clone());
                    return Ok(map);
                }
                Err(e) => failures.push(format!("{}: {e}", addr_text(&addr))),
            }
        }
        Err(Unavailable::NoTopology(failures.join("; ")))
    }

    async fn slots_from(&self, addr: &Addr) -> Result<SlotMap, Unavailable> {
        let mut conn = Conn::open(&self.target.at(addr), false, false, None).await?;
        resp::command(&mut conn.write, &[b"CLUSTER", b"SLOTS"]);
        let reply = conn.exchange(1).await?.pop().ok_or(Unavailable::Closed)?;
        if let Reply::Error(e) = &reply {
            return Err(Unavailable::SetupRefused(format!("CLUSTER SLOTS: {e}")));
        }
        SlotMap::parse(&reply, addr).map_err(|e| Unavailable::ClusterDown(e.to_string()))
    }
}

/// `CLUSTER INFO` must say `cluster_state:ok`: this node serves its slots.
async fn cluster_state_ok(conn: &mut Conn) -> Result<(), Unavailable> {
    resp::command(&mut conn.write, &[b"CLUSTER", b"INFO"]);
    match conn.exchange(1).await?.pop() {
        Some(Reply::Bulk(info)) if info.windows(16).any(|w| w == b"cluster_state:ok") => Ok(()),
        Some(Reply::Bulk(_)) => Err(Unavailable::ClusterDown(
            "the node says cluster_state is not ok".into(),
        )),
        other => Err(Unavailable::SetupRefused(format!(
            "CLUSTER INFO: {other:?}"
        ))),
    }
}

impl Batch<'_> {
    /// The batch's commands: a transaction per channel with something new (or a `SPUBLISH`
    /// per event), then one `DEL` per cache key, each on its own slot. Runs of duplicates only
    /// are settled here.
    fn items(&mut self, known: &Channels, done: &mut Done) -> Result<Vec<Item>, Unavailable> {
        let mut items: Vec<Item> = match self.channels.as_mut() {
            Some(p) => {
                p.plan(known);
                let mut items = Vec::new();
                for r in p.pending() {
                    if p.sends(r) {
                        items.push(item(Op::Run(r), p.runs[r].channel));
                    } else {
                        p.settle(r, None, &mut Channels::default(), &mut done.out)?;
                    }
                }
                items
            }
            None => (0..self.events.len())
                .map(|i| item(Op::Publish(i), &self.events[i].channel))
                .collect(),
        };
        for (i, e) in self.events.iter().enumerate() {
            for (k, key) in e.invalidate.iter().enumerate() {
                items.push(item(Op::Del(i, k), key));
            }
        }
        Ok(items)
    }

    /// Appends `item`'s commands to `out`; returns how many replies they get.
    fn encode(&self, out: &mut Vec<u8>, item: &Item) -> usize {
        let channels = || self.channels.as_ref().expect("runs are recoverable");
        match item.op {
            Op::Meta(r) => {
                channels().read_meta(out, r);
                1
            }
            Op::Run(r) => channels().encode(out, r, item.ask.is_some()),
            Op::Publish(i) => {
                let e = &self.events[i];
                resp::command(out, &[b"SPUBLISH", e.channel.as_bytes(), &e.payload]);
                1
            }
            Op::Del(i, k) => {
                resp::command(out, &[b"DEL", self.events[i].invalidate[k].as_bytes()]);
                1
            }
        }
    }
}

fn item(op: Op, key: &str) -> Item {
    Item {
        op,
        slot: topology::slot(key),
        ask: None,
    }
}

/// Splits items by the node they go to.
fn group(map: &SlotMap, items: Vec<Item>) -> Result<HashMap<Addr, Vec<Item>>, Unavailable> {
    let mut groups: HashMap<Addr, Vec<Item>> = HashMap::new();
    for item in items {
        let addr = match &item.ask {
            Some(addr) => addr.clone(),
            None => match map.owner(item.slot) {
                Some(i) => map.masters[i].clone(),
                None => {
                    return Err(Unavailable::ClusterDown(format!(
                        "slot {} has no master",
                        item.slot
                    )))
                }
            },
        };
        groups.entry(addr).or_default().push(item);
    }
    Ok(groups)
}

/// One node's pipeline: every item's commands (behind `ASKING` where redirected so), one
/// write, and one reply per item (the `ASKING` answers dropped, a transaction's collapsed).
async fn trip(
    conn: &mut Conn,
    batch: &Batch<'_>,
    items: &[Item],
) -> Result<Vec<Reply>, Unavailable> {
    let mut counts = Vec::with_capacity(items.len());
    for item in items {
        if item.ask.is_some() {
            resp::command(&mut conn.write, &[b"ASKING"]);
        }
        counts.push(batch.encode(&mut conn.write, item));
    }
    let asks = items.iter().filter(|i| i.ask.is_some()).count();
    let mut replies = conn
        .exchange(asks + counts.iter().sum::<usize>())
        .await?
        .into_iter();
    if let Some(wait) = batch.wait {
        wait.replicated(conn).await?;
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, &n) in items.iter().zip(&counts) {
        if item.ask.is_some() {
            replies.next();
        }
        let mine: Vec<Reply> = replies.by_ref().take(n).collect();
        if mine.len() < n {
            return Err(Unavailable::Closed);
        }
        out.push(match (item.op, &batch.channels) {
            (Op::Run(r), Some(p)) => p.collapse(r, mine, item.ask.is_some()),
            _ => mine.into_iter().next().ok_or(Unavailable::Closed)?,
        });
    }
    Ok(out)
}

enum Settled {
    Done,
    /// Send again; `true`: after a pause.
    Again(Item, bool),
}

/// Applies one reply: a redirect sends the item again, anything else is the item's outcome.
fn settle(
    state: &mut State,
    batch: &mut Batch<'_>,
    mut item: Item,
    reply: Reply,
    done: &mut Done,
) -> Result<Settled, Unavailable> {
    if let Reply::Error(e) = &reply {
        if let Some(redirect) = Redirect::parse(e) {
            item.ask = None;
            match redirect {
                Redirect::Moved(slot, addr) => {
                    if let Some(map) = state.map.as_mut() {
                        map.moved(slot, addr);
                    }
                }
                Redirect::Ask(_, addr) => item.ask = Some(addr),
            }
            return Ok(Settled::Again(item, false));
        }
        if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") {
            item.ask = None;
            return Ok(Settled::Again(item, true));
        }
        if e.starts_with("READONLY") {
            state.map = None;
            return Ok(Settled::Again(item, true));
        }
    }
    let channels = batch.channels.as_mut();
    match item.op {
        Op::Meta(r) => {
            channels
                .expect("metas are recoverable")
                .learn(r, &reply, &mut state.channels)?
        }
        Op::Run(r) => channels.expect("runs are recoverable").settle(
            r,
            Some(reply),
            &mut state.channels,
            &mut done.out,
        )?,
        Op::Publish(i) => {
            done.out[i] = Some(match reply {
                Reply::Error(e) => Delivery::Rejected(format!("SPUBLISH: {e}")),
                Reply::Integer(receivers) => Delivery::Sent { receivers },
                _ => Delivery::Sent { receivers: 0 },
            })
        }
        Op::Del(i, _) => {
            if let Reply::Error(e) = reply {
                done.del_errors.push((i, e));
            }
        }
    }
    Ok(Settled::Done)
}

/// The batch's outcomes so far.
struct Done {
    out: Vec<Option<Delivery>>,
    /// Failed `DEL`s of cache keys, by event.
    del_errors: Vec<(usize, String)>,
}

/// Every event's delivery; a failed `DEL` of its cache keys rejects an event Redis took.
fn finish(Done { out, del_errors }: Done, events: &[Event]) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = out
        .into_iter()
        .map(|d| d.expect("every event has an outcome"))
        .collect();
    for (i, err) in del_errors {
        if matches!(out[i], Delivery::Sent { .. } | Delivery::Duplicate) {
            out[i] =
                Delivery::Rejected(format!("DEL of cache keys of {}: {err}", events[i].channel));
        }
    }
    out
}

/// `e`, said of master `i` of `map`.
fn shard(map: &SlotMap, i: usize, e: Unavailable) -> Unavailable {
    Unavailable::Shard {
        node: addr_text(&map.masters[i]),
        slots: map.ranges(i),
        source: Box::new(e),
    }
}

fn addr_text((host, port): &Addr) -> String {
    format!("{host}:{port}")
}
