"""Redis Cluster: sharded pub/sub (SSUBSCRIBE) on the master owning each channel's slot, one
connection per master, moved when the server unsubscribes a channel (its slot moved, its
master became a replica) or the master fails; patterns by periodic discovery."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from .keys import channel_of_meta_key, glob_match, meta_key
from .link import NETWORK_ERRORS, Backoff, Command, Sink, run_commands
from .topology import Seeds, Topology, is_transient, redirect_of, slot_of

log = logging.getLogger("sluice_consumer")


@dataclass
class _Pending:
    """An SSUBSCRIBE sent and not yet answered: one confirmation per channel, or one error."""

    slot: int
    channels: list[str]
    left: int


class NodeSubscriber:
    """One connection to one master: an SSUBSCRIBE per slot, then messages, confirmations and
    the server's own `sunsubscribe` pushes."""

    def __init__(self, link: "ClusterLink", addr: str) -> None:
        self.link = link
        self.addr = addr
        self.channels: set[str] = set()
        self._pending: deque[_Pending] = deque()
        self._client = link.topology.pubsub_client(addr)
        self._pubsub = self._client.pubsub()
        self._reader: asyncio.Task[None] | None = None

    async def add(self, channels: Iterable[str]) -> None:
        by_slot: dict[int, list[str]] = {}
        for ch in channels:
            by_slot.setdefault(slot_of(ch), []).append(ch)
        self.channels.update(*by_slot.values())
        for slot, group in by_slot.items():
            # Every channel of one SSUBSCRIBE must hash to one slot.
            self._pending.append(_Pending(slot, group, len(group)))
            await self._pubsub.execute_command("SSUBSCRIBE", *group)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name=f"sluice-shard:{self.addr}")

    async def _read(self) -> None:
        message = self.link.sink.message
        parse = self._pubsub.parse_response
        try:
            while True:
                try:
                    msg = await parse(block=True)
                except ResponseError as exc:
                    self._refused(exc)
                    continue
                kind = msg[0]
                if kind == b"smessage":
                    message(msg[1].decode(), msg[2])
                elif kind == b"ssubscribe":
                    self._confirmed(msg[1].decode())
                elif kind == b"sunsubscribe":
                    self._taken(msg[1].decode())
        except NETWORK_ERRORS as exc:
            log.warning("sluice consumer: connection to %s lost (%s); resubscribing its channels", self.addr, exc)
            self._reader = None  # ending by itself: aclose must not cancel it
            await self.aclose()
            self.link.node_lost(self)

    def _confirmed(self, channel: str) -> None:
        if self._pending:
            head = self._pending[0]
            head.left -= 1
            if head.left == 0:
                self._pending.popleft()
        self.link.confirmed(channel)

    def _refused(self, exc: ResponseError) -> None:
        """An error answers the oldest SSUBSCRIBE still waiting (MOVED: our view was stale)."""
        if not self._pending:
            log.warning("sluice consumer: %s answered %s", self.addr, exc)
            return
        pending = self._pending.popleft()
        redirect = redirect_of(exc)
        if redirect is not None and redirect.kind == "MOVED":
            self.link.topology.moved(redirect.slot, redirect.addr)
        else:
            log.warning("sluice consumer: SSUBSCRIBE on %s refused (%s); retrying", self.addr, exc)
            self.link.topology.mark_stale()
        self.channels.difference_update(pending.channels)
        self.link.rehome(self, pending.channels, failed=True)

    def _taken(self, channel: str) -> None:
        """The server unsubscribed us: the channel's slot is no longer served by this master."""
        if channel in self.channels:
            self.channels.discard(channel)
            self.link.sink.moved(channel)
            self.link.topology.mark_stale()
            self.link.rehome(self, [channel], failed=False)

    @property
    def idle(self) -> bool:
        return not self.channels and not self._pending

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        try:
            await self._pubsub.aclose()
            await self._client.aclose()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass


class ClusterLink:
    """Keeps every wanted channel SSUBSCRIBEd on its slot's master, and reads from masters."""

    def __init__(self, url: str, channels: list[str], patterns: list[str], max_backoff: float,
                 discovery_interval: float) -> None:
        self.topology = Topology(Seeds.parse(url))
        self.patterns = patterns
        self.max_backoff = max_backoff
        self.discovery_interval = discovery_interval
        self.sink: Sink
        self._wanted: set[str] = set(channels)
        self._homeless: set[str] = set(channels)
        self._unconfirmed: set[str] = set(channels)
        self._subs: dict[str, NodeSubscriber] = {}
        self._scanned = not patterns
        self._ready = False
        self._failed = False
        self._backoff = Backoff(max_backoff)
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    # ---- subscriptions ---------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        self.sink = sink
        self._wake.set()
        tasks = [asyncio.create_task(self._place_loop(), name="sluice-placer"),
                 asyncio.create_task(self._watch_loop(), name="sluice-watch")]
        if self.patterns:
            tasks.append(asyncio.create_task(self._discover_loop(), name="sluice-discovery"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _place_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._failed:
                self._failed = False
                await self._backoff.wait()
            if not self._homeless:
                continue
            try:
                await self._place()
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: cannot subscribe yet (%s); retrying", exc)
                self.topology.mark_stale()
                self._failed = True
                self._wake.set()

    async def _place(self) -> None:
        """SSUBSCRIBE every homeless channel on its slot's master."""
        groups: dict[str, list[str]] = {}
        for ch in sorted(self._homeless):
            groups.setdefault(await self.topology.owner(slot_of(ch)), []).append(ch)
        for addr, channels in groups.items():
            sub = self._subs.get(addr)
            if sub is None:
                sub = self._subs[addr] = NodeSubscriber(self, addr)
            self._homeless.difference_update(channels)
            try:
                await sub.add(channels)
            except NETWORK_ERRORS:
                await sub.aclose()
                self.node_lost(sub)
                raise

    def confirmed(self, channel: str) -> None:
        self._backoff.reset()
        self.sink.subscribed(channel)
        self._unconfirmed.discard(channel)
        self._check_ready()

    def _check_ready(self) -> None:
        if not self._ready and self._scanned and not self._unconfirmed:
            self._ready = True
            self.sink.ready()

    def rehome(self, sub: NodeSubscriber, channels: Iterable[str], failed: bool) -> None:
        """Channels `sub` no longer has: subscribe them again where their slot is now."""
        self._homeless.update(ch for ch in channels if ch in self._wanted)
        self._failed = self._failed or failed
        if sub.idle and self._subs.get(sub.addr) is sub:
            del self._subs[sub.addr]
            self._close_later(sub)
        self._wake.set()

    def node_lost(self, sub: NodeSubscriber) -> None:
        """The connection to a master failed: its channels go back to be placed again once the
        topology says where (the same master restarted, or its promoted replica)."""
        if self._subs.get(sub.addr) is sub:
            del self._subs[sub.addr]
        self.topology.mark_stale()
        self.sink.reconnected()
        channels, sub.channels = list(sub.channels), set()
        self.rehome(sub, channels, failed=True)

    def _close_later(self, sub: NodeSubscriber) -> None:
        task = asyncio.create_task(sub.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _watch_loop(self) -> None:
        """Read the slot map every `discovery_interval`: a master that stopped answering (hung,
        or cut off from the cluster but not from us) sends no push and breaks no connection,
        yet its replica may have taken its slots over."""
        while True:
            await asyncio.sleep(self.discovery_interval)
            try:
                await self.topology.refresh()
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: cannot read the slot map (%s)", exc)
                continue
            for addr, sub in list(self._subs.items()):
                gone = [ch for ch in sub.channels if self.topology.owner_now(slot_of(ch)) != addr]
                if gone:
                    log.warning("sluice consumer: %s no longer owns %d channels' slots; moving them", addr, len(gone))
                    sub.channels.difference_update(gone)
                    self.rehome(sub, gone, failed=False)

    # ---- discovery -------------------------------------------------------------------------

    async def _discover_loop(self) -> None:
        initial = True
        while True:
            for pattern in self.patterns:
                for key in await self.scan(meta_key(pattern)):
                    channel = channel_of_meta_key(key)
                    if channel not in self._wanted and glob_match(pattern, channel):
                        self._add(channel, initial)
            if initial:
                initial, self._scanned = False, True
                self._check_ready()
            await asyncio.sleep(self.discovery_interval)

    def _add(self, channel: str, initial: bool) -> None:
        self.sink.discovered(channel, initial)
        self._wanted.add(channel)
        self._homeless.add(channel)
        if initial:
            self._unconfirmed.add(channel)
        self._wake.set()

    # ---- commands --------------------------------------------------------------------------

    async def execute(self, key: str, commands: Sequence[Command], transaction: bool = False) -> list[Any]:
        slot = slot_of(key)
        asking: str | None = None
        backoff = Backoff(self.max_backoff)
        hops = 0
        while True:
            try:
                addr = asking or await self.topology.owner(slot)
                client = self.topology.client(addr)
                return await run_commands(client, commands, transaction, asking is not None)
            except ResponseError as exc:
                redirect, asking = redirect_of(exc), None
                if redirect is None and not is_transient(exc):
                    raise
                hops += 1
                if redirect is not None and redirect.kind == "MOVED":
                    self.topology.moved(redirect.slot, redirect.addr)
                elif redirect is not None and not transaction:
                    asking = redirect.addr  # the slot is being imported there: ASKING first
                if redirect is not None and hops <= 3:
                    continue
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: redis command failed (%s); retrying", exc)
                self.topology.mark_stale()
            await backoff.wait()

    async def scan(self, match: str) -> list[str]:
        backoff = Backoff(self.max_backoff)
        while True:
            try:
                keys: list[str] = []
                for addr in await self.topology.masters():
                    client = self.topology.client(addr)
                    keys += [key.decode() async for key in client.scan_iter(match=match, count=1000)]
                return keys
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: SCAN failed (%s); retrying", exc)
                self.topology.mark_stale()
            except ResponseError as exc:
                if not is_transient(exc):
                    raise
            await backoff.wait()

    async def aclose(self) -> None:
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            await sub.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self.topology.aclose()
