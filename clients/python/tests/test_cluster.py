"""The consumer on a real Redis Cluster (3 masters, with replicas for the failover), fed by the
daemon's own channel script in its cluster form (SPUBLISH)."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from cluster_harness import RedisCluster, redis_major
from cluster_publisher import ClusterPublisher, metas
from sluice_consumer import Consumer, history_key, meta_key
from sluice_consumer.cluster import ClusterLink
from support import Recorder, assert_exactly_once_in_order, until

pytestmark = pytest.mark.skipif(redis_major() < 7, reason="sharded pub/sub needs redis-server 7 or later")


def channels_on_every_shard(cluster: RedisCluster, count: int) -> list[str]:
    names = [f"crm:tenant-{i}:roles" for i in range(count)]
    owners = cluster.slot_owners()
    assert {owners[key_slot(n.encode())] for n in names} == set(cluster.masters()), "one channel per shard at least"
    return names


def same_slot_as(channel: str, count: int) -> list[str]:
    """Other channel names that hash to `channel`'s slot (several channels in one slot)."""
    slot, out, i = key_slot(channel.encode()), [], 0
    while len(out) < count:
        name = f"crm:tenant-s{i}:roles"
        if key_slot(name.encode()) == slot:
            out.append(name)
        i += 1
    return out


def consumer(cluster: RedisCluster, subs: list[str], rec: Recorder, **kw: object) -> Consumer:
    return Consumer(cluster.url, subs, rec.handle, on_resync=rec.on_resync, max_backoff=0.5, **kw)  # type: ignore[arg-type]


async def stream(pub: ClusterPublisher, channels: list[str], rounds: int, stop: asyncio.Event | None = None,
                 pause: float = 0.005) -> None:
    """Each channel's own publisher (as the daemon's per-shard pipelines), batches of 1-3:
    `rounds` calls per channel, and on until `stop` is set."""
    async def one(ch: str) -> None:
        r = 0
        while r < rounds or (stop is not None and not stop.is_set()):
            await pub.publish(ch, 1 + r % 3)
            await asyncio.sleep(pause)
            r += 1
    await asyncio.gather(*(one(ch) for ch in channels))


def published_count(pub: ClusterPublisher, channel: str) -> int:
    return len(pub.published[channel])


async def all_applied(c: Consumer, pub: ClusterPublisher, epoch: str = "e1") -> bool:
    return all((p := c.position(ch)) is not None and (p.epoch, p.seq) == (epoch, published_count(pub, ch))
               for ch in pub.published)


def assert_every_event_once_in_order(rec: Recorder, pub: ClusterPublisher, validator: object) -> None:
    """What the handler got per channel is exactly what was published, in order, seq 1..n."""
    assert_exactly_once_in_order(rec, validator)
    for ch, ids in pub.published.items():
        got = rec.events[ch]
        assert [e.event_id for e in got] == ids, f"{ch}: {len(got)} handled of {len(ids)} published"
        assert [e.seq for e in got] == list(range(1, len(ids) + 1))


async def test_fifty_channels_on_three_shards_each_event_once_in_order(cluster, schema_validator):
    names = channels_on_every_shard(cluster, 50)
    pub = ClusterPublisher(cluster)
    rec = Recorder()
    for ch in names[:25]:  # before the consumer: read from history
        await pub.publish(ch, 3)
    async with consumer(cluster, names, rec) as c:
        await stream(pub, names, rounds=20)
        await until(lambda: all_applied(c, pub), 30, "every event applied")
        assert c.stats.from_history >= 75 and c.stats.reconnects == 0
    assert rec.resyncs == []
    assert_every_event_once_in_order(rec, pub, schema_validator)
    assert sum(map(len, pub.published.values())) == sum(len(v) for v in rec.events.values())
    await pub.aclose()


async def test_reshard_mid_stream_resubscribes_where_the_slot_went(cluster, schema_validator):
    """Slots holding channels move while events flow; Redis unsubscribes the consumer from
    them (sunsubscribe), it subscribes on the new owner and reads what it missed from history."""
    names = channels_on_every_shard(cluster, 30)
    names += same_slot_as(names[0], 2)  # one slot with three channels
    moving = [names[0], names[3], names[7], names[12]]
    pub = ClusterPublisher(cluster)
    rec = Recorder()
    async with consumer(cluster, names, rec) as c:
        stop = asyncio.Event()
        publishing = asyncio.create_task(stream(pub, names, rounds=10, stop=stop))
        await until(lambda: published_count(pub, names[0]) > 20, 30, "events flowing")
        owners = cluster.slot_owners()
        for ch in moving:
            slot = key_slot(ch.encode())
            target = next(m for m in cluster.masters() if m != owners[slot])
            assert await asyncio.to_thread(cluster.move_slot, slot, target) >= 2
        after = published_count(pub, names[0])
        await until(lambda: published_count(pub, names[0]) > after + 20, 30, "events flowing after the moves")
        stop.set()
        await publishing
        await until(lambda: all_applied(c, pub), 30, "every event applied")
        moved_channels = {ch for ch in names if key_slot(ch.encode()) in {key_slot(m.encode()) for m in moving}}
        assert c.stats.moved == len(moved_channels) == 6, "one sunsubscribe per channel of a moved slot"
        assert c.stats.reconnects == 0
    assert rec.resyncs == []
    assert_every_event_once_in_order(rec, pub, schema_validator)
    await pub.aclose()


async def test_master_killed_and_replica_promoted_nothing_missing(cluster_with_replicas, schema_validator):
    cluster = cluster_with_replicas
    names = channels_on_every_shard(cluster, 30)
    pub = ClusterPublisher(cluster, wait_replicas=True)
    rec = Recorder()
    async with consumer(cluster, names, rec) as c:
        stop = asyncio.Event()
        publishing = asyncio.create_task(stream(pub, names, rounds=10, stop=stop))
        await until(lambda: published_count(pub, names[0]) > 20, 30, "events flowing")
        victim = cluster.slot_owners()[key_slot(names[0].encode())]
        replica = cluster.replica_of(victim)
        cluster.kill(victim)
        await asyncio.to_thread(cluster.failover_killed, replica)
        after = published_count(pub, names[0])
        await until(lambda: published_count(pub, names[0]) > after + 20, 30, "events flowing on the promoted replica")
        stop.set()
        await publishing
        await until(lambda: all_applied(c, pub), 30, "every event applied")
        assert c.stats.reconnects >= 1 and pub.retries >= 1
    assert rec.resyncs == []
    assert_every_event_once_in_order(rec, pub, schema_validator)
    await pub.aclose()


async def test_master_hung_and_replica_promoted_is_noticed_from_the_slot_map(cluster_with_replicas, schema_validator):
    """A master that stops answering (SIGSTOP) breaks no connection and sends no push; its
    replica takes its slots over. The consumer sees the new owner in the slot map it reads
    every discovery_interval and moves the channels there."""
    cluster = cluster_with_replicas
    names = channels_on_every_shard(cluster, 12)
    pub = ClusterPublisher(cluster, wait_replicas=True)
    rec = Recorder()
    async with consumer(cluster, names, rec, discovery_interval=0.5) as c:
        stop = asyncio.Event()
        publishing = asyncio.create_task(stream(pub, names, rounds=5, stop=stop))
        await until(lambda: published_count(pub, names[0]) > 10, 30, "events flowing")
        hung = cluster.node(cluster.slot_owners()[key_slot(names[0].encode())])
        replica = cluster.replica_of(hung.addr)
        hung.stop()
        try:
            await asyncio.to_thread(cluster.failover_killed, replica)
            after = published_count(pub, names[0])
            await until(lambda: published_count(pub, names[0]) > after + 10, 30, "events on the promoted replica")
            stop.set()
            await publishing
            await until(lambda: all_applied(c, pub), 30, "every event applied")
        finally:
            hung.cont()
    assert rec.resyncs == []
    assert_every_event_once_in_order(rec, pub, schema_validator)
    await pub.aclose()


async def test_pattern_discovery_starts_a_new_channel_at_its_first_event(cluster, schema_validator):
    """start_from=latest: channels there at start begin at their head; a channel that appears
    later is found by discovery and read from seq 1, before and after it is subscribed."""
    pub = ClusterPublisher(cluster)
    old = channels_on_every_shard(cluster, 6)
    for ch in old:
        await pub.publish(ch, 2)
    rec = Recorder()
    async with consumer(cluster, ["crm:*:roles"], rec, start_from="latest", discovery_interval=0.3) as c:
        assert sorted(c.known_channels()) == sorted(old)
        late = "crm:tenant-late:roles"
        await pub.publish(late, 3)  # before any consumer knows it exists
        await pub.publish("hrms:tenant-late:roles", 1)  # not matched
        await until(lambda: c.position(late) is not None and c.position(late).seq == 3, 10, "the new channel found")
        await stream(pub, [late, *old], rounds=3)
        await until(lambda: all(c.position(ch) is not None and c.position(ch).seq == published_count(pub, ch)
                                for ch in [late, *old]), 10, "live events")
        assert c.stats.discovered == 7 and "hrms:tenant-late:roles" not in c.known_channels()
    assert [e.seq for e in rec.events[late]] == list(range(1, published_count(pub, late) + 1))
    assert rec.events[late][0].from_history
    for ch in old:  # started at the head: the two events before start were not handed over
        assert [e.seq for e in rec.events[ch]] == list(range(3, published_count(pub, ch) + 1))
    assert_exactly_once_in_order(rec, schema_validator)
    await pub.aclose()


async def test_reads_follow_ask_during_a_migration_and_moved_after(cluster):
    """History and meta reads on a slot half-way through a migration (keys moved, slot not yet
    reassigned: ASK), a bootstrap MULTI then (retried until the slot is reassigned), and reads
    with a stale slot map afterwards (MOVED)."""
    ch = "crm:tenant-1:roles"
    pub = ClusterPublisher(cluster)
    await pub.publish(ch, 3)
    link = ClusterLink(cluster.url, [], [], max_backoff=0.2, discovery_interval=5)
    meta, hist = meta_key(ch), history_key(ch)
    assert await link.execute(meta, [("HGET", meta, "seq")]) == [b"3"]
    slot = key_slot(ch.encode())
    target = next(m for m in cluster.masters() if m != cluster.slot_owners()[slot])
    source, dest = cluster.begin_move(slot, target)
    assert cluster.migrate_keys(slot, source, dest) == 3
    assert source.cli("HGET", meta, "seq").startswith("ASK")
    assert await link.execute(meta, [("HGET", meta, "seq")]) == [b"3"]
    [entries] = await link.execute(hist, [("XRANGE", hist, "-", "+")])
    assert [e[0] for e in entries] == [b"1-0", b"2-0", b"3-0"]
    c = Consumer(cluster.url, [ch], lambda e: None)
    snapshot = asyncio.create_task(c.bootstrap(ch))
    await asyncio.sleep(0.3)
    assert not snapshot.done(), "a MULTI is not sent with ASKING: it waits for the slot"
    await asyncio.to_thread(cluster.finish_move, slot, dest)
    snap = await asyncio.wait_for(snapshot, 10)
    assert (snap.position.epoch, snap.position.seq, len(snap.records)) == ("e1", 3, 3)
    assert await link.execute(meta, [("HGET", meta, "seq")]) == [b"3"]  # the map still says source: MOVED
    assert await link.topology.owner(slot) == dest.addr
    await link.aclose()
    await pub.aclose()


async def test_whole_cluster_outage_resubscribes_and_reports_the_lost_epoch(cluster, schema_validator):
    """Every node killed and started again without its data: the consumer subscribes again once
    the cluster is back, and the new epoch each channel starts comes with a resync notice,
    then its events."""
    names = channels_on_every_shard(cluster, 9)
    pub = ClusterPublisher(cluster)
    rec = Recorder()
    async with consumer(cluster, names, rec) as c:
        await stream(pub, names, rounds=5)
        await until(lambda: all_applied(c, pub), 10, "every event applied")
        before = {ch: list(ids) for ch, ids in pub.published.items()}
        await asyncio.to_thread(cluster.restart_all)
        await until(lambda: subscribed_everywhere(cluster, names), 30, "subscribed again on every master")
        assert c.stats.reconnects >= 3
        pub2 = ClusterPublisher(cluster, epoch="e2", first_lsn=pub.lsn)  # later changes
        await stream(pub2, names, rounds=5)
        await until(lambda: all_applied(c, pub2, "e2"), 10, "every new event applied")
    assert sorted(n.channel for n in rec.resyncs) == sorted(names)
    for notice in rec.resyncs:
        # Seen on the first new message (head = seq 0), or on the catch-up after resubscribing
        # when some were published already: without a bootstrap it goes on after the head.
        assert (notice.reason, notice.head.epoch, notice.last.epoch) == ("epoch_changed", "e2", "e1")
        ch = notice.channel
        assert [e.event_id for e in rec.events[ch]] == before[ch] + pub2.published[ch][notice.head.seq:]
    assert_exactly_once_in_order(rec, schema_validator)
    await pub.aclose()
    await pub2.aclose()


async def subscribed_everywhere(cluster: RedisCluster, names: list[str]) -> bool:
    """PUBSUB SHARDNUMSUB on each channel's master says one subscriber."""
    try:
        owners = await asyncio.to_thread(cluster.slot_owners)
        for ch in names:
            out = await asyncio.to_thread(cluster.node(owners[key_slot(ch.encode())]).cli, "PUBSUB", "SHARDNUMSUB", ch)
            if out.split() != [ch, "1"]:
                return False
    except (KeyError, IndexError):
        return False
    return True


async def test_failover_to_a_lagging_replica_is_reported_not_skipped(cluster_with_replicas):
    """Redis replicates asynchronously: a master killed before its replica got its last
    messages takes them along, and the promoted replica numbers new events with the same seqs.
    A consumer that applied the lost ones must hear about it (position_ahead) rather than take
    the new master's later seqs as the next ones. Here the replica is stopped (SIGSTOP) and
    cut off while the master takes five more events, and the consumer is kept off the promoted replica (its
    ACL user disabled there) until that has numbered past the consumer's position."""
    cluster = cluster_with_replicas
    for node in cluster.nodes:
        assert node.cli("ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all") == "OK"
    ch = "crm:tenant-1:roles"
    master = cluster.slot_owners()[key_slot(ch.encode())]
    replica = cluster.replica_of(master)
    pub = ClusterPublisher(cluster, wait_replicas=True)
    rec = Recorder()
    url = cluster.url.replace("://", "://reader:pw@")
    async with Consumer(url, [ch], rec.handle, on_resync=rec.on_resync, max_backoff=0.2) as c:
        await pub.publish(ch, 5)
        replica.cli("ACL", "SETUSER", "reader", "off")
        replica.cli("CLIENT", "KILL", "USER", "reader")
        replica.stop()
        assert cluster.node(master).cli("CLIENT", "KILL", "TYPE", "replica") == "1"
        pub.wait_replicas = False
        await pub.publish(ch, 5)  # acknowledged by the master only
        await until(lambda: c.position(ch) is not None and c.position(ch).seq == 10, 10, "ten applied")
        lost = pub.published[ch][5:10]
        cluster.kill(master)
        replica.cont()
        await asyncio.to_thread(cluster.failover_killed, replica)
        await pub.publish(ch, 8)  # seqs 6..13 on the promoted replica: other events
        assert (await metas(cluster))[ch] == ("e1", 13)
        replica.cli("ACL", "SETUSER", "reader", "on")
        await until(lambda: rec.resyncs, 20, "the resync notice")
        await pub.publish(ch, 2)
        await until(lambda: c.position(ch).seq == 15, 10, "new events after the notice")
    [notice] = rec.resyncs
    assert (notice.reason, notice.last.seq, notice.head.seq) == ("position_ahead", 10, 13)
    handled = [e.event_id for e in rec.events[ch]]
    assert handled == pub.published[ch][:10] + pub.published[ch][-2:]
    assert set(lost) <= set(handled)
    await pub.aclose()
