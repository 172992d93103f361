"""The consumer and `sluice run` together on a real Redis Cluster (redis+cluster:// URL on
both sides): PostgreSQL changes to the handler, with a slot moved while they flow."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from cluster_harness import redis_major
from cluster_publisher import metas
from sluice_consumer import Consumer
from support import Recorder, assert_exactly_once_in_order, assert_no_seq_gaps, until
from test_end_to_end import expected_ids, insert_sql, psql

pytestmark = pytest.mark.skipif(redis_major() < 7, reason="sharded pub/sub needs redis-server 7 or later")


async def caught_up(c: Consumer, cluster) -> bool:
    heads = await metas(cluster)
    return bool(heads) and all(c.position(ch) is not None and (c.position(ch).epoch, c.position(ch).seq) == head
                               for ch, head in heads.items())


@pytest.mark.parametrize("mode", ["trigger", "logical"])
async def test_daemon_to_consumer_on_a_cluster_across_a_slot_move(cluster, make_servers, schema_validator, mode):
    servers = make_servers(cluster, mode=mode)
    rec = Recorder()
    async with Consumer(cluster.url, ["crm:*:*"], rec.handle, on_resync=rec.on_resync, max_backoff=0.5,
                        discovery_interval=0.5) as c:
        await psql(servers, insert_sql(1, 1000))
        await until(lambda: len(rec.record_ids()) > 0, 30, "the first events")
        moving = "crm:tenant-1:credit-configs"
        slot = key_slot(moving.encode())
        target = next(m for m in cluster.masters() if m != cluster.slot_owners()[slot])
        await asyncio.gather(psql(servers, insert_sql(1001, 1000)), asyncio.to_thread(cluster.move_slot, slot, target))
        await until(lambda: rec.record_ids() == expected_ids(1, 2000), 60, "every row")
        await until(lambda: caught_up(c, cluster), 30, "the consumer at every channel's head")
        assert c.stats.moved >= 1
    assert rec.resyncs == []
    assert_exactly_once_in_order(rec, schema_validator)
    assert_no_seq_gaps(rec, c)
    for ch, evs in rec.events.items():
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1)), ch
