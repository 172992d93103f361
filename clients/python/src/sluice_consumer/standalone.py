"""One Redis server: SUBSCRIBE/PSUBSCRIBE on one connection, reads on a second."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .link import NETWORK_ERRORS, Backoff, Command, Sink, run_commands

log = logging.getLogger("sluice_consumer")


class StandaloneLink:
    def __init__(self, url: str, channels: list[str], patterns: list[str], max_backoff: float) -> None:
        self.url = url
        self.channels = channels
        self.patterns = patterns
        self.max_backoff = max_backoff
        self._redis = aioredis.Redis.from_url(url)

    async def run(self, sink: Sink) -> None:
        backoff = Backoff(self.max_backoff)
        first = True
        while True:
            # No retries inside redis-py: a silent reconnect would hide a gap from us.
            client = aioredis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
            pubsub = client.pubsub()
            try:
                if not first:
                    sink.reconnected()
                if self.channels:
                    await pubsub.subscribe(*self.channels)
                if self.patterns:
                    await pubsub.psubscribe(*self.patterns)
                backoff.reset()
                await self._read(pubsub, sink)
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: connection lost (%s); resubscribing", exc)
            finally:
                first = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is already gone
                    pass
            await backoff.wait()

    async def _read(self, pubsub: aioredis.client.PubSub, sink: Sink) -> None:
        pending = len(self.channels) + len(self.patterns)
        parse = pubsub.parse_response
        message = sink.message
        while True:
            msg = await parse(block=True)
            kind = msg[0]
            if kind == b"message" or kind == b"pmessage":
                message(msg[-2].decode(), msg[-1])
            elif kind == b"subscribe" or kind == b"psubscribe":
                if kind == b"subscribe":
                    sink.subscribed(msg[1].decode())
                else:
                    await sink.pattern_subscribed(msg[1].decode())
                pending -= 1
                if pending == 0:
                    sink.ready()

    async def execute(self, key: str, commands: Sequence[Command], transaction: bool = False) -> list[Any]:
        backoff = Backoff(self.max_backoff)
        while True:
            try:
                return await run_commands(self._redis, commands, transaction)
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: redis command failed (%s); retrying", exc)
                await backoff.wait()

    async def scan(self, match: str) -> list[str]:
        backoff = Backoff(self.max_backoff)
        while True:
            try:
                return [key.decode() async for key in self._redis.scan_iter(match=match, count=1000)]
            except NETWORK_ERRORS as exc:
                log.warning("sluice consumer: redis command failed (%s); retrying", exc)
                await backoff.wait()

    async def aclose(self) -> None:
        await self._redis.aclose()
