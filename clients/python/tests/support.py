"""What the end-to-end tests share: a recording handler, waits, and the exactly-once check."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from sluice_consumer import Event, ResyncNeeded


class Recorder:
    """The handler and resync callback of a test: remembers what it was given."""

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = defaultdict(list)
        self.resyncs: list[ResyncNeeded] = []
        self.count = 0

    def handle(self, event: Event) -> None:
        self.events[event.channel].append(event)
        self.count += 1

    def on_resync(self, notice: ResyncNeeded) -> None:
        self.resyncs.append(notice)

    def record_ids(self, suffix: str = ":credit-configs") -> set[str]:
        return {e.record_id for ch, evs in self.events.items() if ch.endswith(suffix)
                for e in evs if e.record_id is not None}


async def until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def metas(redis_url: str, pattern: str = "crm:*") -> dict[str, tuple[str, int]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        out = {}
        async for key in client.scan_iter(match=f"sluice:meta:{{{pattern}}}", count=1000):
            epoch, seq = await client.hmget(key, "epoch", "seq")
            out[key.decode()[len("sluice:meta:{"):-1]] = (epoch.decode(), int(seq))
        return out
    finally:
        await client.aclose()


async def caught_up(consumer: Any, redis_url: str, pattern: str = "crm:*") -> bool:
    """Every channel Redis has is at the consumer's position."""
    try:
        heads = await metas(redis_url, pattern)
    except Exception:  # noqa: BLE001 - Redis restarting
        return False
    if not heads:
        return False
    for ch, (epoch, seq) in heads.items():
        pos = consumer.position(ch)
        if pos is None or (pos.epoch, pos.seq) != (epoch, seq):
            return False
    return True


def assert_exactly_once_in_order(rec: Recorder, validator: Any | None = None) -> None:
    """Per channel: seq strictly increasing within an epoch, every eventId once, valid events."""
    for ch, evs in rec.events.items():
        ids = [e.event_id for e in evs]
        assert len(ids) == len(set(ids)), f"{ch}: an eventId was handled twice"
        last: tuple[str | None, int] = (None, 0)
        for e in evs:
            if e.seq is None:
                continue
            if e.epoch == last[0]:
                assert e.seq > last[1], f"{ch}: seq {e.seq} after {last[1]}"
            last = (e.epoch, e.seq)
    if validator is not None:
        for evs in rec.events.values():
            for e in evs:
                validator.validate(json.loads(e.raw))


def assert_no_seq_gaps(rec: Recorder, consumer: Any) -> None:
    """Within each epoch, handled seqs are 1..n, n = the channel's head, with no hole (the
    producer published no duplicate in these runs)."""
    for ch, evs in rec.events.items():
        by_epoch: dict[str, list[int]] = defaultdict(list)
        for e in evs:
            if e.seq is not None and e.epoch is not None:
                by_epoch[e.epoch].append(e.seq)
        for epoch, seqs in by_epoch.items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{ch}/{epoch}: hole in {seqs[:5]}..."
