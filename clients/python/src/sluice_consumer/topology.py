"""Redis Cluster topology: seed nodes from the URL, which master owns which slot, a client
per node, and what a redirection error says."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from .errors import ClusterUnavailable
from .link import NETWORK_ERRORS

log = logging.getLogger("sluice_consumer")

SLOTS = 16384
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class Seeds:
    """`redis+cluster://[user:pass@]host1:port1,host2:port2[/?options]` taken apart."""

    scheme: str
    userinfo: str
    addrs: tuple[str, ...]
    tail: str

    @classmethod
    def parse(cls, url: str) -> "Seeds":
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"not a Redis URL: {url!r}")
        scheme = CLUSTER_SCHEMES.get(scheme.lower(), scheme.lower())
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"a cluster URL is redis+cluster://, rediss+cluster://, redis:// or rediss://: {url!r}")
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        userinfo, _, hosts = authority.rpartition("@")
        addrs = tuple(_addr(h) for h in hosts.split(",") if h)
        if not addrs:
            raise ValueError(f"no seed node in {url!r}")
        return cls(scheme, userinfo, addrs, tail)

    def node_url(self, addr: str) -> str:
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{auth}{addr}{self.tail}"


def _addr(hostport: str) -> str:
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        return f"[{host}]:{port.lstrip(':') or 6379}"
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    return f"{host}:{port or 6379}"


@dataclass(frozen=True)
class Redirect:
    kind: str  # MOVED or ASK
    slot: int
    addr: str


# At the start of the text, or after a pipeline's "... caused error: " (redis-py 5 quotes it).
_AT = r"(?:^|error: \(?['\"]?)"
_REDIRECT = re.compile(_AT + r"(MOVED|ASK) (\d+) ([^\s'\"]+)")
_TRANSIENT = re.compile(_AT + r"(TRYAGAIN|CLUSTERDOWN|MASTERDOWN|LOADING)\b")


def redirect_of(exc: ResponseError) -> Redirect | None:
    """MOVED/ASK, whether redis-py raised its own class or a plain ResponseError (older
    versions, and pipelines, which prefix the text with the failing command)."""
    if isinstance(exc, AskError):
        kind = "MOVED" if isinstance(exc, MovedError) else "ASK"
        return Redirect(kind, int(exc.slot_id), f"{exc.host}:{exc.port}")
    found = _REDIRECT.search(str(exc))
    return Redirect(found[1], int(found[2]), found[3]) if found else None


def is_transient(exc: ResponseError) -> bool:
    """Errors a cluster gives while a slot migrates or a shard fails over."""
    return isinstance(exc, (TryAgainError, ClusterDownError)) or bool(_TRANSIENT.search(str(exc)))


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


class Topology:
    """Which master owns each slot, refreshed with CLUSTER SLOTS from any node that answers."""

    def __init__(self, seeds: Seeds) -> None:
        self.seeds = seeds
        self._owner: list[str | None] = [None] * SLOTS
        self._known: list[str] = list(seeds.addrs)
        self._clients: dict[str, aioredis.Redis] = {}
        self._stale = True
        self._refreshing: asyncio.Task[None] | None = None

    def client(self, addr: str) -> aioredis.Redis:
        client = self._clients.get(addr)
        if client is None:
            # Retries are ours: each failure refreshes the topology first. A master that stopped
            # answering (hung, cut off) must not hold a read forever; the URL may say otherwise.
            client = aioredis.Redis.from_url(self.seeds.node_url(addr), retry=Retry(NoBackoff(), 0),
                                             socket_connect_timeout=5.0, socket_timeout=5.0)
            self._clients[addr] = client
        return client

    def pubsub_client(self, addr: str) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.seeds.node_url(addr), retry=Retry(NoBackoff(), 0),
                                       socket_connect_timeout=5.0)

    def mark_stale(self) -> None:
        self._stale = True

    def moved(self, slot: int, addr: str) -> None:
        """A MOVED answer: the slot's owner, authoritative until the next refresh."""
        self._owner[slot] = addr

    def owner_now(self, slot: int) -> str | None:
        """The owner as last read, without asking the cluster."""
        return self._owner[slot]

    async def owner(self, slot: int) -> str:
        if self._stale or self._owner[slot] is None:
            await self.refresh()
        addr = self._owner[slot]
        if addr is None:
            raise ClusterUnavailable(f"slot {slot} has no master")
        return addr

    async def masters(self) -> list[str]:
        if self._stale:
            await self.refresh()
        return sorted({a for a in self._owner if a is not None})

    async def refresh(self) -> None:
        """One CLUSTER SLOTS at a time; concurrent callers wait for the same one."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        errors = []
        failures: tuple[type[BaseException], ...] = (*NETWORK_ERRORS, ResponseError)
        for addr in list(dict.fromkeys(self._known + list(self.seeds.addrs))):
            try:
                reply = await cast(Any, self.client(addr)).execute_command("CLUSTER", "SLOTS")
            except failures as exc:
                errors.append(f"{addr}: {exc}")
                continue
            self._apply(reply, addr)
            self._stale = False
            return
        raise ClusterUnavailable("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _apply(self, reply: Any, via: str) -> None:
        owner: list[str | None] = [None] * SLOTS
        known: list[str] = []
        for entry in reply:
            start, end, *nodes = entry
            addrs = [_node_addr(n, via) for n in nodes]
            for slot in range(int(start), int(end) + 1):
                owner[slot] = addrs[0]
            known += addrs
        self._owner = owner
        # Masters first: they answer with the freshest view.
        self._known = list(dict.fromkeys(sorted({a for a in owner if a}) + known))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _node_addr(node: Any, via: str) -> str:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    if host in ("", "?"):
        host = via.rpartition(":")[0]  # the node does not know its address: the one we asked
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(node[1])}"
