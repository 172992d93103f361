"""The consumer: subscribes, keeps every channel's (epoch, seq), fills gaps from history."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .cluster import ClusterLink
from .dedup import RecentIds
from .errors import HandlerError, ResyncNeeded, ResyncReason
from .event import Event, Position, parse_event
from .keys import channel_of_meta_key, glob_match, history_key, is_pattern, meta_key, state_key
from .link import Link
from .standalone import StandaloneLink
from .store import MemoryPositionStore, PositionStore
from .topology import is_cluster_url

log = logging.getLogger("sluice_consumer")

Handler = Callable[[Event], Awaitable[None] | None]
ResyncCallback = Callable[[ResyncNeeded], Awaitable[None] | None]
StartFrom = Literal["earliest", "latest"]

_CATCH_UP = object()  # queue marker: read history up to the channel's meta


@dataclass(frozen=True, slots=True)
class Snapshot:
    """`bootstrap(channel)`: the channel's state hash and the position it is consistent with."""

    channel: str
    position: Position | None
    records: dict[str, Event]


@dataclass(slots=True)
class Stats:
    applied: int = 0
    """Events handed to the handler."""
    from_history: int = 0
    """Of those, events read from history (catch-up)."""
    duplicates: int = 0
    """Live or history messages skipped because their seq was already applied."""
    deduplicated: int = 0
    """Events skipped because their eventId was already applied (replays, re-publishes)."""
    gaps: int = 0
    """Catch-ups started (a seq jump, a reconnect, a start from a stored position)."""
    resyncs: int = 0
    reconnects: int = 0
    dropped: int = 0
    """Live messages dropped because a channel's buffer was full (read later from history)."""
    moved: int = 0
    """Cluster: channels the server unsubscribed (slot moved, master demoted), resubscribed."""
    discovered: int = 0
    """Cluster: channels pattern discovery found."""


@dataclass(slots=True)
class _Channel:
    name: str
    position: Position | None
    recent: RecentIds
    queue: deque[Any] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    bootstrapped: bool = False
    task: asyncio.Task[None] | None = None
    start: StartFrom = "earliest"
    """Where to start without a position (`start_from`; `earliest` when discovered later)."""


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if value is not None and inspect.isawaitable(value):
        await value


class Consumer:
    """Follows Sluice channels and hands each change to `handler` once, in seq order per channel.

    `subscriptions` are channel names (`crm:tenant-1:roles`) or patterns (`crm:tenant-1:*`).
    The handler runs for one event at a time per channel (channels run concurrently); after it
    returns, the position is saved to `store`. When history cannot cover a gap, `on_resync` is
    called (see `ResyncNeeded`).

    `start_from` decides what a channel without a stored position starts with: `earliest`
    (everything its history holds; a resync notice if history no longer starts at seq 1) or
    `latest` (the next live message).

    Redis Cluster: a `redis+cluster://host1:port1,host2:port2` URL (`rediss+cluster://` for
    TLS), or `cluster=True` with a `redis://` URL of any node. Channels are followed with
    sharded pub/sub on the master owning each channel's slot; patterns are matched by looking
    for new channels' `sluice:meta:{...}` keys every `discovery_interval` seconds.
    """

    def __init__(
        self,
        redis_url: str,
        subscriptions: Iterable[str],
        handler: Handler,
        *,
        store: PositionStore | None = None,
        on_resync: ResyncCallback | None = None,
        start_from: StartFrom = "earliest",
        dedup_size: int = 10_000,
        history_batch: int = 1_000,
        buffer_limit: int = 10_000,
        max_backoff: float = 2.0,
        flush_interval: float = 0.2,
        cluster: bool | None = None,
        discovery_interval: float = 5.0,
    ) -> None:
        subs = list(subscriptions)
        if not subs:
            raise ValueError("subscribe to at least one channel or pattern")
        self.redis_url = redis_url
        self.cluster = is_cluster_url(redis_url) if cluster is None else cluster
        self.channels = [s for s in subs if not is_pattern(s)]
        self.patterns = [s for s in subs if is_pattern(s)]
        self.handler = handler
        self.store: PositionStore = store if store is not None else MemoryPositionStore()
        self.on_resync = on_resync
        self.start_from = start_from
        self.dedup_size = dedup_size
        self.history_batch = history_batch
        self.buffer_limit = buffer_limit
        self.max_backoff = max_backoff
        self.flush_interval = flush_interval
        self.discovery_interval = discovery_interval
        self._saves = 0
        self.stats = Stats()
        self._channels: dict[str, _Channel] = {}
        self._link: Link | None = None
        self._done: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def _make_link(self) -> Link:
        if self.cluster:
            # Channels with a stored position that a pattern covers are subscribed by name.
            names = sorted(set(self.channels) | set(self._channels))
            return ClusterLink(self.redis_url, names, self.patterns, self.max_backoff, self.discovery_interval)
        return StandaloneLink(self.redis_url, self.channels, self.patterns, self.max_backoff)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; raises HandlerError when the handler fails."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        tasks: list[asyncio.Task[None]] = []
        try:
            for name, pos in (await self.store.load()).items():
                if self._wanted(name):
                    self._channel(name, pos)
            self._link = link = self._make_link()
            for ch in self._channels.values():
                if ch.task is None:
                    ch.task = asyncio.create_task(self._work(ch), name=f"sluice:{ch.name}")
            reader = asyncio.create_task(link.run(self), name="sluice-reader")
            reader.add_done_callback(self._on_reader_done)
            tasks += [reader, asyncio.create_task(self._flush_loop(), name="sluice-flusher")]
            await self._done
        finally:
            tasks += [c.task for c in self._channels.values() if c.task]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.store.flush()
            if self._link is not None:
                await self._link.aclose()
                self._link = None

    def _on_reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._done and not self._done.done():
            self._done.set_exception(task.exception())  # type: ignore[arg-type]

    async def _flush_loop(self) -> None:
        """Flush the store shortly after positions moved, so an idle channel's last position
        is durable without flushing on every event."""
        saved = -1
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._saves != saved:
                saved = self._saves
                await self.store.flush()

    async def start(self) -> None:
        """Run in the background; returns once subscribed."""
        self._runner = asyncio.create_task(self.run(), name="sluice-consumer")
        waiter = asyncio.create_task(self._subscribed.wait())
        done, _ = await asyncio.wait({self._runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done:
            waiter.cancel()
            self._runner.result()

    async def stop(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self._runner is not None:
            try:
                await self._runner
            finally:
                self._runner = None

    async def __aenter__(self) -> "Consumer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def position(self, channel: str) -> Position | None:
        ch = self._channels.get(channel)
        return ch.position if ch else None

    def known_channels(self) -> list[str]:
        return sorted(self._channels)

    # ---- bootstrap -------------------------------------------------------------------------

    async def bootstrap(self, channel: str) -> Snapshot:
        """Read `sluice:state:{<channel>}` and the channel's seq in one MULTI (on the master
        owning the channel's slot, in cluster mode), and go on from that seq. Apply `records`
        (recordId -> latest event) in place of your copy of the channel's data; for routes
        with `state = true`. Call it from `on_resync` (the channel is paused there), or before
        `start()`/`run()`."""
        link = self._link or self._make_link()
        meta = meta_key(channel)
        try:
            state, seq, epoch = await link.execute(
                meta, [("HGETALL", state_key(channel)), ("HGET", meta, "seq"), ("HGET", meta, "epoch")],
                transaction=True)
        finally:
            if link is not self._link:
                await link.aclose()
        records = {rid.decode(): parse_event(raw, channel) for rid, raw in state.items()}
        position = Position(epoch.decode(), int(seq)) if epoch is not None and seq is not None else None
        ch = self._channel(channel, position)
        ch.position = position
        ch.bootstrapped = True
        # Saved once the application applied the snapshot: when on_resync returns, or with
        # the next event it handles.
        return Snapshot(channel, position, records)

    # ---- what the link reports (link.Sink) -------------------------------------------------

    def message(self, channel: str, raw: bytes) -> None:
        ch = self._channels.get(channel) or self._channel(channel, None)
        queue = ch.queue
        if len(queue) >= self.buffer_limit:
            ch.overflowed = True
            self.stats.dropped += 1
            return
        queue.append(raw)
        if len(queue) == 1:
            ch.wake.set()

    def subscribed(self, channel: str) -> None:
        self._enqueue_catch_up(self._channel(channel, None))

    async def pattern_subscribed(self, pattern: str) -> None:
        for known in list(self._channels.values()):
            if glob_match(pattern, known.name):
                self._enqueue_catch_up(known)
        # Channels that started (or got messages) while we were away.
        assert self._link is not None
        for key in await self._link.scan(meta_key(pattern)):
            channel = channel_of_meta_key(key)
            if channel not in self._channels and glob_match(pattern, channel):
                self._enqueue_catch_up(self._channel(channel, None))

    def discovered(self, channel: str, initial: bool) -> None:
        # Found after start: the channel is newer than this consumer, so everything it has
        # published is new to us.
        self.stats.discovered += 1
        self._channel(channel, None, None if initial else "earliest")

    def ready(self) -> None:
        self._subscribed.set()

    def reconnected(self) -> None:
        self.stats.reconnects += 1

    def moved(self, channel: str) -> None:
        self.stats.moved += 1

    def _enqueue_catch_up(self, ch: _Channel) -> None:
        ch.queue.append(_CATCH_UP)
        ch.wake.set()

    def _wanted(self, name: str) -> bool:
        return name in self.channels or any(glob_match(p, name) for p in self.patterns)

    def _channel(self, name: str, position: Position | None, start: StartFrom | None = None) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = _Channel(name, position, RecentIds(self.dedup_size), start=start or self.start_from)
            self._channels[name] = ch
            if self._done is not None:
                ch.task = asyncio.create_task(self._work(ch), name=f"sluice:{name}")
        return ch

    async def _command(self, key: str, *command: Any) -> Any:
        """One read on the node holding `key`, retried through connection loss."""
        assert self._link is not None
        return (await self._link.execute(key, [command]))[0]

    # ---- per channel -----------------------------------------------------------------------

    async def _work(self, ch: _Channel) -> None:
        try:
            queue = ch.queue
            while True:
                if not queue:
                    if ch.overflowed:
                        ch.overflowed = False
                        await self._catch_up(ch, None)
                        continue
                    ch.wake.clear()
                    await ch.wake.wait()
                    continue
                item = queue.popleft()
                if item is _CATCH_UP:
                    await self._catch_up(ch, None)
                else:
                    await self._on_message(ch, parse_event(item, ch.name))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to run()
            if self._done is not None and not self._done.done():
                self._done.set_exception(exc)
            raise

    async def _on_message(self, ch: _Channel, ev: Event) -> None:
        if ev.seq is None or ev.epoch is None:
            await self._apply_replay(ch, ev)
            return
        if ch.position is None:
            start = 0 if ch.start == "earliest" else ev.seq - 1
            ch.position = Position(ev.epoch, start)
        while True:
            pos = ch.position
            if pos is None:  # bootstrapped from an empty Redis: take what comes
                ch.position = pos = Position(ev.epoch, 0)
            if pos.epoch != ev.epoch:
                await self._resync(ch, "epoch_changed", Position(ev.epoch, ev.seq - 1), None)
                continue
            if ev.seq <= pos.seq:
                self.stats.duplicates += 1
                return
            if ev.seq == pos.seq + 1:
                await self._apply(ch, ev)
                return
            await self._catch_up(ch, Position(ev.epoch, ev.seq - 1))

    async def _catch_up(self, ch: _Channel, target: Position | None) -> None:
        """Apply history from the channel's position up to `target` (None: the meta's seq)."""
        name = ch.name
        if target is None:
            epoch, seq = await self._command(meta_key(name), "HMGET", meta_key(name), "epoch", "seq")
            if epoch is None or seq is None:
                return  # nothing published since Redis last lost its data
            target = Position(epoch.decode(), int(seq))
            if ch.position is None:
                start = 0 if ch.start == "earliest" else target.seq
                ch.position = Position(target.epoch, start)
        pos = ch.position
        if pos is None:
            ch.position = pos = Position(target.epoch, 0)
        if pos.epoch != target.epoch:
            await self._resync(ch, "epoch_changed", target, None)
            return
        if target.seq < pos.seq:
            await self._resync(ch, "position_ahead", target, None)
            return
        if target.seq == pos.seq:
            return
        self.stats.gaps += 1
        key = history_key(name)
        next_seq = pos.seq + 1
        while next_seq <= target.seq:
            lo, hi, count = f"{next_seq}-0", f"{target.seq}-0", self.history_batch
            entries = await self._command(key, "XRANGE", key, lo, hi, "COUNT", count)
            if not entries or int(entries[0][0].split(b"-", 1)[0]) != next_seq:
                first = await self._first_available(key)
                await self._resync(ch, "history_trimmed", target, first)
                return
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[0])
                ev = parse_event(fields[b"event"], name, from_history=True)
                if ev.epoch != pos.epoch or seq != next_seq:
                    await self._resync(ch, "epoch_changed" if ev.epoch != pos.epoch else "history_trimmed", target, None)
                    return
                self.stats.from_history += 1
                await self._apply(ch, ev)
                next_seq += 1

    async def _first_available(self, key: str) -> int | None:
        entries = await self._command(key, "XRANGE", key, "-", "+", "COUNT", 1)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else None

    async def _resync(self, ch: _Channel, reason: ResyncReason, head: Position, first: int | None) -> None:
        notice = ResyncNeeded(ch.name, reason, ch.position, head, first)
        self.stats.resyncs += 1
        ch.bootstrapped = False
        if self.on_resync is None:
            log.warning("sluice consumer: resync needed on %s (%s); going on after %s", ch.name, reason, head)
        else:
            await _maybe_await(self.on_resync(notice))
        if not ch.bootstrapped:
            ch.position = head
        ch.bootstrapped = False
        if ch.position is not None:
            self._saves += 1
            await self.store.save(ch.name, ch.position)

    async def _apply(self, ch: _Channel, ev: Event) -> None:
        if ch.recent.add(ev.event_id):
            try:
                await _maybe_await(self.handler(ev))
            except Exception as exc:
                raise HandlerError(ev, exc) from exc
            self.stats.applied += 1
        else:
            self.stats.deduplicated += 1
        assert ev.epoch is not None and ev.seq is not None
        ch.position = Position(ev.epoch, ev.seq)
        self._saves += 1
        await self.store.save(ch.name, ch.position)

    async def _apply_replay(self, ch: _Channel, ev: Event) -> None:
        if not ch.recent.add(ev.event_id):
            self.stats.deduplicated += 1
            return
        try:
            await _maybe_await(self.handler(ev))
        except Exception as exc:
            raise HandlerError(ev, exc) from exc
        self.stats.applied += 1
