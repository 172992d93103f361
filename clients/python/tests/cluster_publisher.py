"""Publishes on a Redis Cluster leaving what `sluice run` leaves in cluster mode: the
repository's clients/testing/channel.lua (the channel protocol as one script) with PUBLISH
replaced by SPUBLISH, one call per channel per batch on the master owning the channel's slot,
as the daemon sends one transaction there (logical mode: origin '' and order keys that grow
with commit order)."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cluster_harness import RedisCluster
from harness import REPO

SCRIPT = (REPO / "clients" / "testing" / "channel.lua").read_text()
assert SCRIPT.count("'PUBLISH'") == 1
SHARDED_SCRIPT = SCRIPT.replace("'PUBLISH'", "'SPUBLISH'")
RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def keys(channel: str) -> list[str]:
    return [f"sluice:{k}:{{{channel}}}" for k in ("meta", "history", "state")]


def _kind(exc: ResponseError) -> str | None:
    """ASK, or RETRY for what a moving or failing-over cluster answers (MOVED, TRYAGAIN,
    CLUSTERDOWN), by redis-py's class or the error's text (a pipeline's error names the
    command first); None for anything else."""
    name, text = type(exc).__name__, str(exc)
    if name == "AskError" or re.search(r"(^|\W)ASK \d", text):
        return "ASK"
    if name in ("MovedError", "TryAgainError", "ClusterDownError", "MasterDownError") or \
            re.search(r"(^|\W)(MOVED \d|TRYAGAIN|CLUSTERDOWN|MASTERDOWN)", text):
        return "RETRY"
    return None


def _ask_target(exc: ResponseError) -> str:
    if hasattr(exc, "host"):  # redis-py's AskError
        return f"{exc.host}:{exc.port}"
    found = re.search(r"ASK \d+ ([^\s'\"]+)", str(exc))
    assert found, exc
    return found[1]


class ClusterPublisher:
    """`epoch`: the epoch a channel starts when it has none. With `wait_replicas`, every call
    is followed by WAIT on the same connection, so a master killed afterwards has passed the
    call on to its replica."""

    def __init__(self, cluster: RedisCluster, epoch: str = "e1", max_len: int = 100_000,
                 wait_replicas: bool = False, first_lsn: int = 0x16B0000) -> None:
        self.cluster = cluster
        self.epoch = epoch
        self.max_len = max_len
        self.wait_replicas = wait_replicas
        self.published: dict[str, list[str]] = defaultdict(list)  # channel -> eventIds, in order
        self.retries = 0
        self.lsn = first_lsn
        self._owners: dict[int, str] = {}
        self._clients: dict[str, aioredis.Redis] = {}
        self._replicated: set[str] = set()

    def _event(self, channel: str) -> tuple[str, str, str]:
        """(order key, record id, payload) of the next change, as the daemon routes it."""
        self.lsn += 0x100
        app, tenant, data_type = channel.split(":")
        lsn = f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"
        event_id = f"{lsn}:0"
        record = f"r{len(self.published[channel]) + 1}"
        payload = json.dumps({
            "eventId": event_id, "operation": "INSERT", "app": app, "tenantId": tenant,
            "dataType": data_type, "table": f"public.{data_type.replace('-', '_')}", "recordId": record,
            "data": {"id": record}, "timestamp": "2026-01-01T00:00:00.000001Z",
            "source": {"mode": "logical", "lsn": lsn, "xid": self.lsn},
        }, separators=(",", ":"))
        self.published[channel].append(event_id)
        return f"L{self.lsn:016x}{0:08x}", record, payload

    async def publish(self, channel: str, count: int = 1) -> list[Any]:
        """`count` new changes on `channel` in one script call; the script's reply."""
        args: list[Any] = [channel, self.epoch, self.max_len, 3_600_000, "", "1"]
        for _ in range(count):
            order, record, payload = self._event(channel)
            args += [order, record, "0", payload]
        return await self._call(channel, args)

    async def _call(self, channel: str, args: list[Any]) -> list[Any]:
        """Retried until it succeeds, like the daemon: the script skips what Redis already took."""
        slot = key_slot(channel.encode())
        asking: str | None = None
        for _ in range(600):
            addr = asking or self._owners.get(slot) or await self._refresh(slot)
            try:
                if addr is not None:
                    return await self._send(addr, args, asking is not None)
            except ResponseError as exc:
                kind, asking = _kind(exc), None
                if kind == "ASK":
                    asking = _ask_target(exc)
                    continue
                if kind is None:
                    raise
            except RETRYABLE:
                pass
            self.retries += 1
            self._owners.clear()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"could not publish on {channel}")

    async def _send(self, addr: str, args: list[Any], asking: bool) -> list[Any]:
        client = self._clients.get(addr)
        if client is None:
            client = self._clients[addr] = aioredis.Redis.from_url(f"redis://{addr}", protocol=2,
                                                                   socket_timeout=2, socket_connect_timeout=2)
        async with client.pipeline(transaction=False) as pipe:
            if asking:
                pipe.execute_command("ASKING")
            pipe.execute_command("EVAL", SHARDED_SCRIPT, 3, *keys(args[0]), *args)
            if self.wait_replicas and addr in self._replicated:
                pipe.execute_command("WAIT", 1, 2000)
            replies = await pipe.execute()
        return replies[1] if asking else replies[0]

    async def _refresh(self, slot: int) -> str | None:
        self._owners = await asyncio.to_thread(self.cluster.slot_owners)
        self._replicated = {a for a in set(self._owners.values())
                            if "connected_slaves:0" not in await asyncio.to_thread(
                                self.cluster.node(a).cli, "INFO", "replication")}
        return self._owners.get(slot)  # None while the slot's master is failing over

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


async def metas(cluster: RedisCluster) -> dict[str, tuple[str, int]]:
    """Every channel's (epoch, seq), read from every master."""
    out: dict[str, tuple[str, int]] = {}
    for addr in await asyncio.to_thread(cluster.masters):
        client = aioredis.Redis.from_url(f"redis://{addr}", protocol=2)
        try:
            async for key in client.scan_iter(match="sluice:meta:{*}", count=1000):
                epoch, seq = await client.hmget(key, "epoch", "seq")
                out[key.decode()[len("sluice:meta:{"):-1]] = (epoch.decode(), int(seq))
        finally:
            await client.aclose()
    return out
