"""The consumer process killed mid-stream, and a slow consumer cut off by Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import redis

from sluice_consumer import Consumer, Event
from support import Recorder, assert_exactly_once_in_order, assert_no_seq_gaps, caught_up, metas, until
from test_end_to_end import TENANTS, expected_ids, insert_sql, psql

HERE = Path(__file__).resolve().parent


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def test_consumer_killed_and_restarted_from_persisted_position(redis_server, make_servers, tmp_path):
    servers = make_servers(redis_server)
    store, log = tmp_path / "positions.json", tmp_path / "applied.log"

    def spawn() -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(HERE))
        return subprocess.Popen([sys.executable, str(HERE / "consumer_proc.py"), redis_server.url,
                                 str(store), str(log)], env=env)

    proc = spawn()
    try:
        writer = asyncio.create_task(psql(servers, insert_sql(1, 10000)))
        for threshold in (1500, 4000):
            await until(lambda: len(read_log(log)) > threshold, 120, f"{threshold} applied")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert store.exists()
            proc = spawn()
        await writer
        await until(lambda: len(read_log(log)) >= 10000, 120, "every event applied")
        heads = await metas(redis_server.url)
        await until(lambda: all(json.loads(store.read_text())["channels"].get(ch) ==
                                {"epoch": e, "seq": s} for ch, (e, s) in heads.items()), 30,
                    "positions persisted at the heads")
    finally:
        proc.terminate()
        proc.wait()
    entries = read_log(log)
    assert not [e for e in entries if "resync" in e]
    by_channel: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        by_channel[e["channel"]].append(e["seq"])
    for ch, (epoch, seq) in heads.items():
        assert by_channel[ch] == list(range(1, seq + 1)), f"{ch}: not once, in order"
    assert {e["recordId"] for e in entries} == expected_ids(1, 10000)
    assert len({(e["channel"], e["eventId"]) for e in entries}) == len(entries)


BIG_HISTORY = "[history]\nmax_len = 200000\n"


async def test_slow_consumer_cut_off_by_output_buffer_limit(redis_server, make_servers, schema_validator):
    """100k events of ~750 bytes while the handler blocks the loop: Redis passes the 32 MB
    pubsub hard limit and disconnects us; the consumer resubscribes and reads the rest from
    history."""
    servers = make_servers(redis_server, config_extra=BIG_HISTORY)
    redis_server.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")
    sync = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    blocked = {"done": False}

    def stats_disconnections() -> int:
        return int(sync.info("stats").get("client_output_buffer_limit_disconnections", -1))

    def handle(event: Event) -> None:
        rec.handle(event)
        if not blocked["done"]:
            blocked["done"] = True
            # Block the event loop (no reading from the socket) until Redis cut us off.
            deadline = time.monotonic() + 180
            while sync.client_list(_type="pubsub"):
                assert time.monotonic() < deadline, "Redis never disconnected the slow subscriber"
                time.sleep(0.1)

    total = 100_000
    sql = insert_sql(1, total).replace("operation_code)", "operation_code, updated_by)").replace(
        "'crm.leads.create'", "'crm.leads.create', repeat('x', 300)")
    c = Consumer(redis_server.url, ["crm:*:*"], handle, on_resync=rec.on_resync, history_batch=2000)
    async with c:
        # A thread of its own: the handler blocks this event loop.
        writer = threading.Thread(target=servers.stack.psql, args=(sql,))
        writer.start()

        async def done() -> bool:
            return not writer.is_alive() and rec.count >= total and await caught_up(c, redis_server.url)

        await until(done, 300, "caught up")
        writer.join()
    assert "overcoming of output buffer limits" in redis_server.log()
    assert c.stats.reconnects >= 1
    assert c.stats.from_history > 0
    assert rec.record_ids() == expected_ids(1, total)
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)
    sync.close()
