"""The consumer: subscribes, keeps every channel's (epoch, seq), fills gaps from history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .cluster import ClusterLink
from .dedup import RecentIds
from .event import Event, Position, parse_event
from .follow import CATCH_UP, Channel, Follower, Handler, ResyncCallback, StartFrom, Stats
from .keys import channel_of_meta_key, glob_match, is_pattern, meta_key, state_key
from .link import Link
from .standalone import StandaloneLink
from .store import MemoryPositionStore, PositionStore
from .topology import is_cluster_url

__all__ = ["Consumer", "Snapshot", "Stats", "Handler", "ResyncCallback", "StartFrom"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """`bootstrap(channel)`: the channel's state hash and the position it is consistent with."""

    channel: str
    position: Position | None
    records: dict[str, Event]


class Consumer(Follower):
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
    sharded pub/sub on the master owning each channel's slot. Every `discovery_interval`
    seconds the consumer reads the slot map again (a hung master sends no notice) and, for
    patterns, looks for new channels' `sluice:meta:{...}` keys.
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
        self._channels: dict[str, Channel] = {}
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
        ch.last_id = None
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

    def _enqueue_catch_up(self, ch: Channel) -> None:
        ch.queue.append(CATCH_UP)
        ch.wake.set()

    def _wanted(self, name: str) -> bool:
        return name in self.channels or any(glob_match(p, name) for p in self.patterns)

    def _channel(self, name: str, position: Position | None, start: StartFrom | None = None) -> Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = Channel(name, position, RecentIds(self.dedup_size), start=start or self.start_from)
            self._channels[name] = ch
            if self._done is not None:
                ch.task = asyncio.create_task(self._work(ch), name=f"sluice:{name}")
        return ch

    async def _command(self, key: str, *command: Any) -> Any:
        """One read on the node holding `key`, retried through connection loss."""
        assert self._link is not None
        return (await self._link.execute(key, [command]))[0]
