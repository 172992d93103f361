"""What the consumer needs from Redis, standalone or cluster: subscriptions that report each
message and each confirmed subscription, and reads sent to the node that holds a key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors after which the consumer reconnects (or retries a read) and catches up.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.IncompleteReadError,
)

Command = tuple[Any, ...]


class Sink(Protocol):
    """The consumer, as the links see it."""

    def message(self, channel: str, raw: bytes) -> None:
        """A live message."""

    def subscribed(self, channel: str) -> None:
        """The subscription is confirmed: whatever is published from now on arrives live,
        the rest is read from history."""

    async def pattern_subscribed(self, pattern: str) -> None:
        """A PSUBSCRIBE is confirmed (standalone)."""

    def discovered(self, channel: str, initial: bool) -> None:
        """Pattern discovery found a channel (cluster); `initial`: by the first scan."""

    def ready(self) -> None:
        """Every subscription asked for at start is confirmed."""

    def reconnected(self) -> None: ...

    def moved(self, channel: str) -> None:
        """The server unsubscribed the channel (its slot moved); it is being resubscribed."""


class Link(Protocol):
    async def run(self, sink: Sink) -> None:
        """Keep the subscriptions up until cancelled."""

    async def execute(self, key: str, commands: Sequence[Command], transaction: bool = False) -> list[Any]:
        """Run `commands` (all on `key`'s slot) on the node holding `key`, retrying through
        connection loss and redirections."""

    async def scan(self, match: str) -> list[str]:
        """Every key matching `match`, on every master."""

    async def aclose(self) -> None: ...


async def run_commands(client: aioredis.Redis, commands: Sequence[Command], transaction: bool,
                       asking: bool = False) -> list[Any]:
    """One round trip: the commands in a pipeline (MULTI/EXEC with `transaction`), preceded by
    ASKING when `asking` (a slot being imported)."""
    if len(commands) == 1 and not transaction and not asking:
        return [await cast(Any, client).execute_command(*commands[0])]
    async with client.pipeline(transaction=transaction) as pipe:
        if asking:
            pipe.execute_command("ASKING")
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute()
    return replies[1:] if asking else replies


class Backoff:
    """Doubling delays from 50 ms up to `limit` seconds; `reset()` after a success."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.delay = 0.05

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.limit)

    def reset(self) -> None:
        self.delay = 0.05
