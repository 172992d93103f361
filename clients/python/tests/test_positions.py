"""Edge cases of positions against a real Redis, the channel keys written the way Sluice's
publish script writes them (meta, history entry `<seq>-0`, PUBLISH), for states that are slow
or impossible to reach through `sluice run`."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from sluice_consumer import Consumer, MemoryPositionStore, Position, history_key, meta_key
from support import Recorder, until


def event(channel: str, epoch: str, seq: int) -> str:
    app, tenant, dtype = channel.split(":")
    return json.dumps({"seq": seq, "epoch": epoch, "eventId": f"cl:{epoch}:{seq}", "operation": "INSERT",
                       "app": app, "tenantId": tenant, "dataType": dtype, "table": "public.roles",
                       "recordId": f"r{seq}", "data": {"role_id": f"r{seq}"},
                       "timestamp": "2026-01-01T00:00:00Z", "source": {"mode": "trigger", "id": seq}})


async def publish(r: aioredis.Redis, channel: str, epoch: str, seqs: range, live: bool = True) -> None:
    for seq in seqs:
        msg = event(channel, epoch, seq)
        async with r.pipeline(transaction=True) as p:
            p.xadd(history_key(channel), {"event": msg}, id=f"{seq}-0")
            p.hset(meta_key(channel), mapping={"epoch": epoch, "seq": seq})
            if live:
                p.publish(channel, msg)
            await p.execute()


async def test_channel_born_while_away_is_found_and_read_from_its_start(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await publish(r, "crm:t1:roles", "e", range(1, 4), live=False)
    await publish(r, "hrms:t1:roles", "e", range(1, 4), live=False)  # not ours
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        await until(lambda: c.position("crm:t1:roles") == Position("e", 3), 10, "history read")
        await publish(r, "crm:t1:roles", "e", range(4, 6))
        await until(lambda: c.position("crm:t1:roles") == Position("e", 5), 10, "live")
    assert [e.seq for e in rec.events["crm:t1:roles"]] == [1, 2, 3, 4, 5]
    assert [e.from_history for e in rec.events["crm:t1:roles"]] == [True, True, True, False, False]
    assert set(rec.events) == {"crm:t1:roles"} and rec.resyncs == []
    await r.aclose()


async def test_start_from_latest_skips_the_past(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await publish(r, "crm:t1:roles", "e", range(1, 4), live=False)
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:t1:roles"], rec.handle, start_from="latest") as c:
        await until(lambda: c.position("crm:t1:roles") == Position("e", 3), 10, "at the head")
        await publish(r, "crm:t1:roles", "e", range(4, 5))
        await until(lambda: rec.count == 1, 10, "the live one")
    assert [e.seq for e in rec.events["crm:t1:roles"]] == [4]
    await r.aclose()


async def test_stored_epoch_gone_and_position_ahead_ask_for_resync(redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await publish(r, "crm:t1:roles", "new", range(1, 3), live=False)
    await publish(r, "crm:t2:roles", "e", range(1, 3), live=False)
    store = MemoryPositionStore({"crm:t1:roles": Position("old", 7), "crm:t2:roles": Position("e", 9)})
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, store=store, on_resync=rec.on_resync) as c:
        await until(lambda: len(rec.resyncs) == 2, 10, "two notices")
        await publish(r, "crm:t1:roles", "new", range(3, 4))
        await until(lambda: c.position("crm:t1:roles") == Position("new", 3), 10, "going on")
    reasons = {n.channel: (n.reason, n.last, n.head) for n in rec.resyncs}
    assert reasons == {
        "crm:t1:roles": ("epoch_changed", Position("old", 7), Position("new", 2)),
        "crm:t2:roles": ("position_ahead", Position("e", 9), Position("e", 2)),
    }
    assert [e.seq for e in rec.events["crm:t1:roles"]] == [3]
    assert store.positions["crm:t2:roles"] == Position("e", 2)
    await r.aclose()
