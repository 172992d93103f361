"""Following one channel: apply its messages in seq order, fill gaps from history, and tell
the application when history cannot."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .dedup import RecentIds
from .errors import HandlerError, ResyncNeeded, ResyncReason
from .event import Event, Position, parse_event
from .keys import history_key, meta_key
from .store import PositionStore

log = logging.getLogger("sluice_consumer")

Handler = Callable[[Event], Awaitable[None] | None]
ResyncCallback = Callable[[ResyncNeeded], Awaitable[None] | None]
StartFrom = Literal["earliest", "latest"]

CATCH_UP = object()  # queue marker: read history up to the channel's meta


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
class Channel:
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
    last_id: str | None = None
    """The eventId of the event at `position`, when this process applied it."""


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if value is not None and inspect.isawaitable(value):
        await value


class Follower:
    """The per-channel half of the Consumer."""

    handler: Handler
    on_resync: ResyncCallback | None
    store: PositionStore
    stats: Stats
    history_batch: int
    _saves: int
    _done: asyncio.Future[None] | None

    async def _command(self, key: str, *command: Any) -> Any:
        raise NotImplementedError

    async def _work(self, ch: Channel) -> None:
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
                if item is CATCH_UP:
                    await self._catch_up(ch, None)
                else:
                    await self._on_message(ch, parse_event(item, ch.name))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to run()
            if self._done is not None and not self._done.done():
                self._done.set_exception(exc)
            raise

    async def _on_message(self, ch: Channel, ev: Event) -> None:
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

    async def _catch_up(self, ch: Channel, target: Position | None) -> None:
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
        if target.seq < pos.seq or not await self._history_agrees(ch):
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

    async def _history_agrees(self, ch: Channel) -> bool:
        """The history entry at our position holds the event we applied there. It does not
        when Redis lost what we applied and gave the same seqs to other events: a failover to
        a replica that had not received them, a restore of an older copy. Unknown (no entry,
        or a position this process did not apply) counts as agreeing."""
        if ch.last_id is None or ch.position is None or ch.position.seq == 0:
            return True
        key, at = history_key(ch.name), f"{ch.position.seq}-0"
        entries = await self._command(key, "XRANGE", key, at, at)
        return not entries or parse_event(entries[0][1][b"event"], ch.name).event_id == ch.last_id

    async def _first_available(self, key: str) -> int | None:
        entries = await self._command(key, "XRANGE", key, "-", "+", "COUNT", 1)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else None

    async def _resync(self, ch: Channel, reason: ResyncReason, head: Position, first: int | None) -> None:
        notice = ResyncNeeded(ch.name, reason, ch.position, head, first)
        self.stats.resyncs += 1
        ch.bootstrapped = False
        ch.last_id = None
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

    async def _apply(self, ch: Channel, ev: Event) -> None:
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
        ch.last_id = ev.event_id
        self._saves += 1
        await self.store.save(ch.name, ch.position)

    async def _apply_replay(self, ch: Channel, ev: Event) -> None:
        if not ch.recent.add(ev.event_id):
            self.stats.deduplicated += 1
            return
        try:
            await _maybe_await(self.handler(ev))
        except Exception as exc:
            raise HandlerError(ev, exc) from exc
        self.stats.applied += 1
