"""The consumer: subscribes, keeps every channel's (epoch, seq), fills gaps from history."""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .dedup import RecentIds
from .errors import HandlerError, ResyncNeeded, ResyncReason
from .event import Event, Position, parse_event
from .keys import channel_of_meta_key, history_key, is_pattern, meta_key, state_key
from .store import MemoryPositionStore, PositionStore

log = logging.getLogger("sluice_consumer")

Handler = Callable[[Event], Awaitable[None] | None]
ResyncCallback = Callable[[ResyncNeeded], Awaitable[None] | None]
StartFrom = Literal["earliest", "latest"]

# Errors after which the consumer reconnects and catches up.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.IncompleteReadError,
)

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
    ) -> None:
        subs = list(subscriptions)
        if not subs:
            raise ValueError("subscribe to at least one channel or pattern")
        self.redis_url = redis_url
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
        self._saves = 0
        self.stats = Stats()
        self._channels: dict[str, _Channel] = {}
        self._redis: aioredis.Redis | None = None
        self._done: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; raises HandlerError when the handler fails."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._redis = aioredis.Redis.from_url(self.redis_url)
        reader: asyncio.Task[None] | None = None
        flusher: asyncio.Task[None] | None = None
        try:
            for name, pos in (await self.store.load()).items():
                if self._wanted(name):
                    self._channel(name, pos)
            for ch in self._channels.values():
                if ch.task is None:
                    ch.task = asyncio.create_task(self._work(ch), name=f"sluice:{ch.name}")
            reader = asyncio.create_task(self._connection_loop(), name="sluice-reader")
            reader.add_done_callback(self._on_reader_done)
            flusher = asyncio.create_task(self._flush_loop(), name="sluice-flusher")
            await self._done
        finally:
            tasks = [t for t in [reader, flusher, *(c.task for c in self._channels.values())] if t]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.store.flush()
            await self._redis.aclose()

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
        """Read `sluice:state:{<channel>}` and the channel's seq in one MULTI, and go on from
        that seq. Apply `records` (recordId -> latest event) in place of your copy of the
        channel's data; for routes with `state = true`. Call it from `on_resync` (the channel
        is paused there), or before `start()`/`run()`."""
        redis = self._redis or aioredis.Redis.from_url(self.redis_url)
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(state_key(channel))
                pipe.hget(meta_key(channel), "seq")
                pipe.hget(meta_key(channel), "epoch")
                state, seq, epoch = await pipe.execute()
        finally:
            if redis is not self._redis:
                await redis.aclose()
        records = {rid.decode(): parse_event(raw, channel) for rid, raw in state.items()}
        position = Position(epoch.decode(), int(seq)) if epoch is not None and seq is not None else None
        ch = self._channel(channel, position)
        ch.position = position
        ch.bootstrapped = True
        # Saved once the application applied the snapshot: when on_resync returns, or with
        # the next event it handles.
        return Snapshot(channel, position, records)

    # ---- connection ------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = 0.05
        first = True
        while True:
            # No retries inside redis-py: a silent reconnect would hide a gap from us.
            client = aioredis.Redis.from_url(self.redis_url, retry=Retry(NoBackoff(), 0))
            pubsub = client.pubsub()
            try:
                if not first:
                    self.stats.reconnects += 1
                if self.channels:
                    await pubsub.subscribe(*self.channels)
                if self.patterns:
                    await pubsub.psubscribe(*self.patterns)
                backoff = 0.05
                await self._read(pubsub)
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: connection lost (%s); resubscribing", exc)
            finally:
                first = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already gone
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        pending = len(self.channels) + len(self.patterns)
        channels = self._channels
        limit = self.buffer_limit
        parse = pubsub.parse_response
        while True:
            msg = await parse(block=True)
            kind = msg[0]
            if kind == b"message" or kind == b"pmessage":
                name = msg[-2].decode()
                ch = channels.get(name) or self._channel(name, None)
                queue = ch.queue
                if len(queue) >= limit:
                    ch.overflowed = True
                    self.stats.dropped += 1
                    continue
                queue.append(msg[-1])
                if len(queue) == 1:
                    ch.wake.set()
            elif kind == b"subscribe" or kind == b"psubscribe":
                # Subscribed: whatever is published from now on reaches us; read the rest
                # from history.
                await self._catch_up_after_subscribe(msg[1].decode(), kind == b"psubscribe")
                pending -= 1
                if pending <= 0:
                    self._subscribed.set()

    async def _catch_up_after_subscribe(self, name: str, pattern: bool) -> None:
        if not pattern:
            self._enqueue_catch_up(self._channel(name, None))
            return
        for known in list(self._channels.values()):
            if fnmatch.fnmatchcase(known.name, name):
                self._enqueue_catch_up(known)
        # Channels that started (or got messages) while we were away.
        keys = await self._command(lambda r: r.scan_iter(match=meta_key(name), count=1000), iterate=True)
        for key in keys:
            channel = channel_of_meta_key(key.decode())
            if channel not in self._channels and fnmatch.fnmatchcase(channel, name):
                self._enqueue_catch_up(self._channel(channel, None))

    def _enqueue_catch_up(self, ch: _Channel) -> None:
        ch.queue.append(_CATCH_UP)
        ch.wake.set()

    def _wanted(self, name: str) -> bool:
        return name in self.channels or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def _channel(self, name: str, position: Position | None) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = _Channel(name, position, RecentIds(self.dedup_size))
            self._channels[name] = ch
            if self._done is not None:
                ch.task = asyncio.create_task(self._work(ch), name=f"sluice:{name}")
        return ch

    async def _command(self, call: Callable[[aioredis.Redis], Any], iterate: bool = False) -> Any:
        """Run a command, retrying through connection loss (Redis restarting, loading)."""
        assert self._redis is not None
        backoff = 0.05
        while True:
            try:
                if iterate:
                    return [item async for item in call(self._redis)]
                return await call(self._redis)
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: redis command failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

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
            start = 0 if self.start_from == "earliest" else ev.seq - 1
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
            epoch, seq = await self._command(lambda r: r.hmget(meta_key(name), "epoch", "seq"))
            if epoch is None or seq is None:
                return  # nothing published since Redis last lost its data
            target = Position(epoch.decode(), int(seq))
            if ch.position is None:
                start = 0 if self.start_from == "earliest" else target.seq
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
            entries = await self._command(lambda r: r.xrange(key, lo, hi, count=count))
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
        entries = await self._command(lambda r: r.xrange(key, "-", "+", count=1))
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
