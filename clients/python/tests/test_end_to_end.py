"""The consumer against real servers: redis-server, PostgreSQL, `sluice run`."""

from __future__ import annotations

import asyncio

import pytest

from sluice_consumer import Consumer, Event, HandlerError, MemoryPositionStore, ResyncNeeded
from support import Recorder, assert_exactly_once_in_order, assert_no_seq_gaps, caught_up, until

TENANTS = 5


def insert_sql(first: int, count: int) -> str:
    return (
        "INSERT INTO credit_configurations (config_id, tenant_id, operation_code) "
        f"SELECT 'k'||g, 'tenant-'||(g%{TENANTS}), 'crm.leads.create' "
        f"FROM generate_series({first}, {first + count - 1}) g"
    )


def expected_ids(first: int, count: int) -> set[str]:
    return {f"k{g}" for g in range(first, first + count)}


async def psql(servers, sql: str) -> str:
    return await asyncio.to_thread(servers.stack.psql, sql)


@pytest.mark.parametrize("mode", ["trigger", "logical"])
async def test_live_events_once_in_order_and_valid(redis_server, make_servers, schema_validator, mode):
    servers = make_servers(redis_server, mode=mode)
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        await psql(servers, insert_sql(1, 2000))
        await psql(servers, "INSERT INTO roles (role_id, tenant_id, role_name, permissions) VALUES "
                   "('r1','tenant-1','sales','{crm.leads.create}'), ('r2','tenant-1','payroll','{hrms.payroll.process}')")
        await psql(servers, "UPDATE credit_configurations SET credit_cost = 3 WHERE config_id IN ('k1','k2')")
        await psql(servers, "DELETE FROM credit_configurations WHERE config_id = 'k3'")
        await until(lambda: any(e.operation == "DELETE" for e in rec.events["crm:tenant-3:credit-configs"]),
                    60, "the DELETE")
        await until(lambda: caught_up(c, redis_server.url), 60, "consumer at every channel's head")
    assert rec.record_ids() == expected_ids(1, 2000)
    assert [e.record_id for e in rec.events["crm:tenant-1:roles"]] == ["r1"]
    ops = [e.operation for e in rec.events["crm:tenant-3:credit-configs"] if e.record_id == "k3"]
    assert ops == ["INSERT", "DELETE"]
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)


async def test_live_gap_is_filled_from_history(redis_server, make_servers, schema_validator):
    """A channel buffer of 5 with a slow handler drops live messages: the seq jump is seen and
    the missed range read from history."""
    servers = make_servers(redis_server)
    rec = Recorder()

    async def slow(event: Event) -> None:
        rec.handle(event)
        await asyncio.sleep(0.0005)

    c = Consumer(redis_server.url, ["crm:tenant-1:credit-configs", "crm:tenant-2:*"], slow,
                 on_resync=rec.on_resync, buffer_limit=5, history_batch=50)
    async with c:
        await psql(servers, insert_sql(1, 3000))
        await until(lambda: len(rec.record_ids()) >= 1200, 60, "every row of tenants 1, 2")
        await until(lambda: caught_up(c, redis_server.url, "crm:tenant-[12]:*"), 60, "caught up")
    assert c.stats.dropped > 0 and c.stats.gaps > 0 and c.stats.from_history > 0
    assert set(rec.events) == {"crm:tenant-1:credit-configs", "crm:tenant-2:credit-configs"}
    assert rec.record_ids() == {f"k{g}" for g in range(1, 3001) if g % TENANTS in (1, 2)}
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)


async def test_resubscribes_after_disconnect_and_catches_up(redis_server, make_servers, schema_validator):
    servers = make_servers(redis_server)
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        writer = asyncio.create_task(psql(servers, insert_sql(1, 20000)))
        await until(lambda: rec.count > 500, 60, "first events")
        for _ in range(3):
            await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            await asyncio.sleep(0.2)
        await writer
        await until(lambda: rec.record_ids() >= expected_ids(1, 20000), 120, "every row")
        await until(lambda: caught_up(c, redis_server.url), 120, "caught up")
    assert c.stats.reconnects >= 1
    assert rec.record_ids() == expected_ids(1, 20000)
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)


async def test_restart_resumes_from_stored_position(redis_server, make_servers, schema_validator):
    """A new consumer on the same store reads from history what was published meanwhile,
    before live."""
    servers = make_servers(redis_server)
    store = MemoryPositionStore()
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, store=store) as c:
        await psql(servers, insert_sql(1, 500))
        await until(lambda: rec.record_ids() >= expected_ids(1, 500), 60, "every row")
        await until(lambda: caught_up(c, redis_server.url), 60, "caught up")
    await psql(servers, insert_sql(501, 1500))
    await until(lambda: total_published(redis_server.url, 2000), 60, "published")
    rec2 = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec2.handle, store=store,
                        on_resync=rec2.on_resync) as c2:
        await until(lambda: c2.stats.applied >= 1500, 60, "the missed events")
        await psql(servers, insert_sql(2001, 100))
        await until(lambda: rec2.record_ids() >= expected_ids(2001, 100), 60, "the live ones")
        await until(lambda: caught_up(c2, redis_server.url), 60, "caught up")
    assert rec2.resyncs == []
    assert rec2.record_ids() == expected_ids(501, 1600)
    assert c2.stats.from_history >= 1500
    assert_exactly_once_in_order(rec2, schema_validator)
    assert_no_seq_gaps(rec2, c2)


async def test_sluice_kill9_mid_stream(redis_server, make_servers, schema_validator):
    servers = make_servers(redis_server)
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        writer = asyncio.create_task(psql(servers, insert_sql(1, 20000)))
        for i in range(3):
            await until(lambda: rec.count > 1000 * (i + 1), 120, "progress")
            servers.sluice.kill9()
            await asyncio.sleep(0.3)
            servers.sluice.start()
        await writer
        await until(lambda: len(rec.record_ids()) >= 20000, 120, "every row")
        await until(lambda: caught_up(c, redis_server.url), 60, "caught up")
    assert rec.record_ids() == expected_ids(1, 20000)
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "kill9"])
async def test_redis_restart_with_data(persistent_redis, make_servers, schema_validator, kill):
    """Redis with an AOF (appendfsync always) restarts, cleanly or after SIGKILL."""
    servers = make_servers(persistent_redis)
    rec = Recorder()
    async with Consumer(persistent_redis.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        writer = asyncio.create_task(psql(servers, insert_sql(1, 10000)))
        await until(lambda: rec.count > 1000, 60, "first events")
        await asyncio.to_thread(persistent_redis.restart, kill)
        await writer
        await until(lambda: len(rec.record_ids()) >= 10000, 120, "every row")
        await until(lambda: caught_up(c, persistent_redis.url), 60, "caught up")
    assert c.stats.reconnects >= 1
    assert rec.record_ids() == expected_ids(1, 10000)
    assert rec.resyncs == [], "Redis kept its data: history covers every gap"
    assert_exactly_once_in_order(rec, schema_validator)


async def test_redis_restart_without_data_asks_for_resync(redis_server, make_servers, schema_validator):
    servers = make_servers(redis_server)
    rec = Recorder()
    async with Consumer(redis_server.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync) as c:
        await psql(servers, insert_sql(1, 1000))
        await until(lambda: rec.record_ids() >= expected_ids(1, 1000), 60, "every row")
        await until(lambda: caught_up(c, redis_server.url), 60, "caught up")
        before = {ch: c.position(ch) for ch in c.known_channels()}
        await asyncio.to_thread(redis_server.restart)
        await psql(servers, insert_sql(1001, 1000))
        await until(lambda: rec.record_ids() >= expected_ids(1001, 1000), 120, "the new rows")
        await until(lambda: caught_up(c, redis_server.url), 120, "caught up in the new epoch")
    # Exactly one notice per channel, for the epoch change, naming where the consumer was.
    assert sorted(n.channel for n in rec.resyncs) == sorted(before)
    for n in rec.resyncs:
        assert n.reason == "epoch_changed"
        assert n.last == before[n.channel]
        assert n.head.epoch != n.last.epoch
    assert rec.record_ids() == expected_ids(1, 2000)
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)


HISTORY_50 = "[history]\nmax_len = 50\n"


async def test_trimmed_history_asks_for_resync_and_bootstrap(redis_server, make_servers, schema_validator):
    servers = make_servers(redis_server, config_extra=HISTORY_50)
    store = MemoryPositionStore()
    rec = Recorder()
    channel = "crm:tenant-1:credit-configs"
    async with Consumer(redis_server.url, [channel], rec.handle, store=store) as c:
        await psql(servers, insert_sql(1, 50))
        await until(lambda: caught_up(c, redis_server.url, channel), 60, "caught up")
    last = store.positions[channel]
    await psql(servers, insert_sql(51, 2000))
    await until(lambda: caught_up_meta(redis_server.url, channel, last.seq + 400), 60, "published")

    snapshots = []
    consumer: Consumer

    async def on_resync(notice: ResyncNeeded) -> None:
        rec.on_resync(notice)
        snapshots.append(await consumer.bootstrap(notice.channel))

    consumer = Consumer(redis_server.url, [channel], rec.handle, store=store, on_resync=on_resync)
    async with consumer:
        await until(lambda: caught_up(consumer, redis_server.url, channel), 60, "caught up")
    assert [n.reason for n in rec.resyncs] == ["history_trimmed"]
    notice = rec.resyncs[0]
    assert notice.last == last and notice.first_available is not None
    assert notice.first_available > last.seq + 1
    snap = snapshots[0]
    assert set(snap.records) == {f"k{g}" for g in range(1, 2051) if g % TENANTS == 1}
    assert snap.position is not None and snap.position.seq >= notice.head.seq
    assert store.positions[channel] == consumer.position(channel)


async def total_published(redis_url: str, count: int) -> bool:
    from support import metas
    return sum(seq for _, seq in (await metas(redis_url)).values()) >= count


async def caught_up_meta(redis_url: str, channel: str, seq: int) -> bool:
    from support import metas
    heads = await metas(redis_url, channel)
    return bool(heads) and heads[channel][1] >= seq


async def test_replays_are_deduplicated_by_event_id(redis_server, make_servers, schema_validator):
    servers = make_servers(redis_server)
    rec = Recorder()
    channel = "crm:tenant-1:credit-configs"
    async with Consumer(redis_server.url, [channel], rec.handle) as c:
        await psql(servers, insert_sql(1, 10))
        await until(lambda: caught_up(c, redis_server.url, channel), 60, "caught up")
        # An operator replay: the same change again, with "replay" and without seq/epoch.
        first = rec.events[channel][0]
        import json
        doc = json.loads(first.raw)
        del doc["seq"], doc["epoch"]
        doc["replay"] = "change_log"
        fresh = dict(doc, eventId="cl:999999", recordId="k999999")
        for d in (doc, fresh):
            await asyncio.to_thread(redis_server.cli, "PUBLISH", channel, json.dumps(d))
        await until(lambda: c.stats.deduplicated >= 1 and rec.count >= 3, 10, "replays")
        position = c.position(channel)
    assert [e.event_id for e in rec.events[channel]].count(first.event_id) == 1
    assert rec.events[channel][-1].event_id == "cl:999999" and rec.events[channel][-1].is_replay
    assert position is not None and position.seq == 2


async def test_handler_error_stops_the_consumer_without_moving_past_the_event(redis_server):
    """A raising handler: run() raises HandlerError, the position stays before the event."""
    store = MemoryPositionStore()

    def handle(event: Event) -> None:
        raise ValueError("boom")

    consumer = Consumer(redis_server.url, ["crm:t:roles"], handle, store=store)
    runner = asyncio.create_task(consumer.run())
    await until(lambda: redis_server.cli("PUBSUB", "NUMSUB", "crm:t:roles").endswith("1"), 10, "subscribed")
    event = {"seq": 1, "epoch": "e", "eventId": "cl:1", "operation": "INSERT", "app": "crm",
             "tenantId": "t", "dataType": "roles", "table": "public.roles", "recordId": "r1",
             "data": {"role_id": "r1"}, "timestamp": "2026-01-01T00:00:00Z", "source": {"mode": "trigger"}}
    import json
    redis_server.cli("PUBLISH", "crm:t:roles", json.dumps(event))
    with pytest.raises(HandlerError) as failure:
        await asyncio.wait_for(runner, 10)
    assert failure.value.event.event_id == "cl:1"
    assert isinstance(failure.value.__cause__, ValueError)
    assert store.positions == {}
