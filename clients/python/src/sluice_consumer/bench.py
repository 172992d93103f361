"""Events per second a consumer applies with an empty handler, live and in catch-up.

    python -m sluice_consumer.bench [--events 200000] [--channels 10] [--redis URL]

Starts its own redis-server on a free port unless --redis names one (it is flushed!). Messages
are shaped like Sluice's (about 420 bytes). Live: a separate publisher process publishes them in
pipelines while the consumer listens. Catch-up: the same number sit in sluice:history and the
consumer starts from seq 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import redis

from .consumer import Consumer
from .event import Event, Position
from .keys import history_key, meta_key
from .store import MemoryPositionStore

EPOCH = "bench-epoch"


def message(channel: str, seq: int) -> bytes:
    app, tenant, dtype = channel.split(":")
    return json.dumps({
        "seq": seq, "epoch": EPOCH, "eventId": f"cl:{channel}:{seq}", "operation": "UPDATE",
        "app": app, "tenantId": tenant, "dataType": dtype, "table": "public.credit_configurations",
        "recordId": f"k{seq}",
        "data": {"config_id": f"k{seq}", "tenant_id": tenant, "operation_code": "crm.leads.create",
                 "credit_cost": 2.5, "is_active": True, "updated_by": "admin-1", "meta": None,
                 "updated_at": "2026-01-01T00:00:00.123456+00:00"},
        "changedFields": ["credit_cost"], "timestamp": "2026-01-01T00:00:00.123456Z",
        "source": {"mode": "trigger", "id": seq},
    }, separators=(",", ":")).encode()


def channels(n: int) -> list[str]:
    return [f"crm:tenant-{i}:credit-configs" for i in range(n)]


def publish(url: str, names: list[str], per_channel: int, history: bool) -> None:
    """Publish (or write to history only) per_channel messages on each channel."""
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for seq in range(1, per_channel + 1):
        for ch in names:
            msg = message(ch, seq)
            if history:
                pipe.xadd(history_key(ch), {"event": msg}, id=f"{seq}-0")
            else:
                pipe.publish(ch, msg)
        if seq % 200 == 0:
            pipe.execute()
    for ch in names:
        pipe.hset(meta_key(ch), mapping={"epoch": EPOCH, "seq": per_channel})
    pipe.execute()
    r.close()


async def measure(url: str, names: list[str], per_channel: int, live: bool) -> tuple[float, Consumer]:
    total = per_channel * len(names)
    done = asyncio.Event()
    first: list[float] = []
    count = 0

    def handler(event: Event) -> None:
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        count += 1
        if count == total:
            done.set()

    store = MemoryPositionStore() if live else MemoryPositionStore({ch: Position(EPOCH, 0) for ch in names})
    consumer = Consumer(url, names, handler, store=store, buffer_limit=10 * total,
                        history_batch=2000)
    async with consumer:
        start = time.perf_counter()
        if live:
            proc = multiprocessing.Process(target=publish, args=(url, names, per_channel, False))
            proc.start()
        await asyncio.wait_for(done.wait(), timeout=600)
        end = time.perf_counter()
        if live:
            proc.join()
    began = first[0] if live else start
    return total / (end - began), consumer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--redis", help="a Redis to use (FLUSHALL'd); default: start redis-server")
    args = parser.parse_args(argv)
    server: subprocess.Popen[bytes] | None = None
    tmp = tempfile.mkdtemp(prefix="sluice-bench-")
    url = args.redis
    if url is None:
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                   "--dir", tmp], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}"
    try:
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        r.config_set("client-output-buffer-limit", "pubsub 0 0 0")
        names = channels(args.channels)
        per_channel = args.events // len(names)
        results: dict[str, Any] = {}
        r.flushall()
        rate, _ = asyncio.run(measure(url, names, per_channel, live=True))
        results["live_events_per_s"] = round(rate)
        r.flushall()
        publish(url, names, per_channel, history=True)
        rate, _ = asyncio.run(measure(url, names, per_channel, live=False))
        results["catch_up_events_per_s"] = round(rate)
        results.update(events=per_channel * len(names), channels=len(names))
        print(json.dumps(results))
        r.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
