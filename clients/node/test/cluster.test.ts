// The SDK on a real Redis Cluster, fed by the daemon's own channel script with SPUBLISH: 50
// channels over three shards, a slot resharded mid-stream, a master killed and its replica
// promoted, a graceful failover, the whole cluster restarted, and patterns found by discovery.
// Every case asserts the same property: each channel's handler saw seq 1..n once, in order.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { SluiceConsumer, metaKey, type ConsumerOptions, type UnsubscribedInfo } from "../src";
import { keySlot } from "../src/slot";
import { Recorder } from "./check";
import { ClusterPublisher, RedisCluster, type ClusterNode } from "./cluster-harness";
import { waitFor } from "./harness";

const names = (prefix: string, count: number): string[] =>
  Array.from({ length: count }, (_, i) => `crm:${prefix}-${i}:credit-configs`);

/** `count` channel names that hash to one slot (`skip` slots already used are avoided). */
function sameSlot(prefix: string, count: number, skip: Set<number> = new Set()): { slot: number; channels: string[] } {
  const bySlot = new Map<number, string[]>();
  for (let i = 0; ; i++) {
    const channel = `crm:${prefix}-${i}:roles`;
    const slot = keySlot(channel);
    if (skip.has(slot)) continue;
    const list = [...(bySlot.get(slot) ?? []), channel];
    bySlot.set(slot, list);
    if (list.length === count) return { slot, channels: list };
  }
}

interface Watched {
  consumer: SluiceConsumer;
  recorder: Recorder;
  unsubscribed: UnsubscribedInfo[];
  errors: Error[];
}

async function consume(url: string, options: Partial<ConsumerOptions>): Promise<Watched> {
  const recorder = new Recorder();
  const consumer = new SluiceConsumer({
    redis: url,
    handler: recorder.handler,
    onResync: recorder.onResync,
    startFrom: "beginning",
    ...options,
  });
  const watched: Watched = { consumer, recorder, unsubscribed: [], errors: [] };
  consumer.on("unsubscribed", (info) => watched.unsubscribed.push(info));
  consumer.on("error", (error) => watched.errors.push(error));
  await consumer.start();
  return watched;
}

/** Every channel: seq 1..published once, in order, no resync. */
async function assertComplete(w: Watched, publisher: ClusterPublisher, channels: string[], timeoutMs = 60_000): Promise<void> {
  const behind = () =>
    channels
      .map((ch) => [ch, w.recorder.events(ch).length, publisher.published.get(ch) ?? 0] as const)
      .filter(([, got, sent]) => got < sent);
  try {
    await waitFor("every published event", () => behind().length === 0, timeoutMs);
  } catch (error) {
    const detail = behind().map(([ch, got, sent]) => `${ch}: ${got}/${sent} at ${JSON.stringify(w.consumer.position(ch))}`);
    throw new Error(`${(error as Error).message}; behind: ${detail.join("; ")}; unsubscribed: ${JSON.stringify(w.unsubscribed)}; errors: ${w.errors.map((e) => `${e.message}: ${(e.cause as Error)?.message}`).slice(-5).join(" | ")}; subscriptions: ${JSON.stringify([...w.consumer.subscriptions()])}`);
  }
  await w.consumer.idle();
  w.recorder.assertInOrderOnce();
  assert.deepEqual(w.recorder.resyncs(), [], "no resync");
  for (const ch of channels) {
    const n = publisher.published.get(ch) ?? 0;
    const seqs = w.recorder.events(ch).map((e) => e.seq);
    assert.deepEqual(seqs, Array.from({ length: n }, (_, i) => i + 1), `${ch}: seq 1..${n} once, in order`);
  }
}

describe("on a Redis Cluster of 3 masters", { timeout: 300_000 }, () => {
  let cluster: RedisCluster;
  let publisher: ClusterPublisher;

  before(async () => {
    cluster = await RedisCluster.start({ masters: 3 });
    publisher = new ClusterPublisher(cluster);
  });
  after(async () => {
    publisher?.stop();
    await cluster?.stop();
  });

  it("the slot of a channel is Redis's CLUSTER KEYSLOT", async () => {
    for (const key of ["crm:tenant-1:roles", "sluice:meta:{crm:tenant-1:roles}", "a{}b", "{a}{b}", "é{x"]) {
      assert.equal(keySlot(key), Number(await cluster.nodes[0].call("CLUSTER", "KEYSLOT", key)), key);
    }
  });

  it("50 channels across all three shards: each event once, in seq order", async () => {
    const channels = names("tenant", 50);
    const owners = new Set(await Promise.all(channels.map(async (ch) => (await cluster.ownerOf(keySlot(ch))).port)));
    assert.equal(owners.size, 3, "the channels live on all three masters");
    const w = await consume(cluster.url, { channels });
    try {
      await publisher.rounds(channels, 20);
      await assertComplete(w, publisher, channels);
      const nodes = w.consumer.subscriptions();
      assert.equal(nodes.size, 3, "one subscriber connection per master");
      assert.equal([...nodes.values()].reduce((a, b) => a + b, 0), 50);
    } finally {
      await w.consumer.stop();
    }
  });

  it("startFrom now: what is published as soon as start() resolves is delivered", async () => {
    const channels = names("now", 6);
    const w = await consume(cluster.url, { channels, startFrom: "now" });
    try {
      await publisher.rounds(channels, 10);
      await assertComplete(w, publisher, channels);
    } finally {
      await w.consumer.stop();
    }
  });

  it("a slot resharded mid-stream: Redis's sunsubscribe is followed, nothing missed or repeated", async () => {
    const moving = sameSlot("reshard", 3);
    const others = names("stay", 6);
    const channels = [...moving.channels, ...others];
    const w = await consume(cluster.url, { channels });
    let late: Watched | undefined;
    try {
      await publisher.rounds(channels, 5);
      const source = await cluster.ownerOf(moving.slot);
      const target = (await cluster.masters()).find((n) => n !== source) as ClusterNode;
      // Publishing goes on throughout; the moving slot's channels wait out the migration as the
      // daemon does (TRYAGAIN: their state key does not exist), the others do not wait.
      const waiting: Promise<void>[] = [];
      await cluster.moveSlot(moving.slot, target, async () => {
        waiting.push(publisher.rounds(moving.channels, 2));
        await publisher.rounds(others, 3);
        if (waiting.length === 2) {
          // The keys are on the target, the slot not yet: a reader that starts now reads through ASK.
          late = await consume(cluster.url, { channels: moving.channels });
          const reader = late;
          await waitFor("history read through ASK while the slot migrates", () =>
            moving.channels.every((ch) => reader.recorder.events(ch).length >= 5));
        }
      });
      await Promise.all(waiting);
      await publisher.rounds(channels, 5);
      await assertComplete(w, publisher, channels);
      await assertComplete(late as Watched, publisher, moving.channels);
      const moved = w.unsubscribed.filter((u) => u.reason === "slot-moved").flatMap((u) => u.channels);
      assert.deepEqual([...new Set(moved)].sort(), [...moving.channels].sort(), "Redis unsubscribed the moved slot's channels");
      assert.ok(w.unsubscribed.every((u) => u.node === source.address), "only the source unsubscribed");
    } finally {
      await w.consumer.stop();
      await late?.consumer.stop();
    }
  });

  it("patterns: a channel created after start is found and read from its first event", async () => {
    const before = "crm:tenant-d1:roles";
    await publisher.publish(before, 4);
    const single = await consume(cluster.url, { patterns: ["crm:tenant-d1:*"], startFrom: "now", discoveryInterval: 200 });
    const several = await consume(cluster.url, {
      patterns: ["crm:tenant-d1:*", "crm:tenant-d2:*"],
      startFrom: "now",
      discoveryInterval: 200,
    });
    try {
      // startFrom "now": the channel found at start begins where its meta stands when it is caught up.
      await waitFor("the existing channel's position", () =>
        [single, several].every((w) => w.consumer.position(before)?.seq === 4));
      const fresh = ["crm:tenant-d1:users", "crm:tenant-d2:credit-configs", "crm:tenant-d3:roles"];
      const started = Date.now();
      await publisher.rounds([before, ...fresh], 3);
      await waitFor("the new channel found", () => single.recorder.events(fresh[0]).length > 0, 10_000);
      const latency = Date.now() - started;
      await publisher.rounds([before, ...fresh], 7);
      await assertComplete(single, publisher, [fresh[0]]);
      await assertComplete(several, publisher, fresh.slice(0, 2));
      for (const w of [single, several]) {
        // Found at start with startFrom "now": only what came after; never a channel no pattern covers.
        assert.deepEqual(w.recorder.events(before).map((e) => e.seq), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert.equal(w.recorder.events(fresh[2]).length, 0);
      }
      assert.equal(single.recorder.events(fresh[1]).length, 0);
      assert.equal(single.recorder.events(fresh[0])[0].delivery, "history", "the first events came from history");
      assert.ok(latency < 5_000, `found in ${latency} ms`);
      console.log(`pattern discovery (every 200 ms): a new channel's first event handled ${latency} ms after its publish`);
    } finally {
      await single.consumer.stop();
      await several.consumer.stop();
    }
  });
});

describe("on a Redis Cluster of 3 masters and 3 replicas", { timeout: 300_000 }, () => {
  let cluster: RedisCluster;
  let publisher: ClusterPublisher;
  const channels = names("fo", 24);

  before(async () => {
    cluster = await RedisCluster.start({ masters: 3, replicasPerMaster: 1, nodeTimeout: 1000 });
    publisher = new ClusterPublisher(cluster, { waitReplicas: true });
  });
  after(async () => {
    publisher?.stop();
    await cluster?.stop();
  });

  /** The master with a replica that serves the most of `channels`, and its replica. */
  async function busiestMaster(): Promise<[ClusterNode, ClusterNode]> {
    const count = new Map<ClusterNode, number>();
    for (const ch of channels) {
      const owner = await cluster.ownerOf(keySlot(ch));
      count.set(owner, (count.get(owner) ?? 0) + 1);
    }
    for (const [master] of [...count].sort((a, b) => b[1] - a[1])) {
      const replica = await cluster.replicaOf(master).catch(() => undefined);
      if (replica) return [master, replica];
    }
    throw new Error("no master has a replica");
  }

  it("a master killed mid-stream and its replica promoted: nothing missed", async () => {
    const w = await consume(cluster.url, { channels });
    try {
      const [victim, replica] = await busiestMaster();
      let killedAt = 0;
      let back = 0;
      w.consumer.on("subscribed", ({ reconnect }) => {
        if (reconnect && killedAt) back = Date.now() - killedAt;
      });
      await publisher.rounds(channels, 20, async (round) => {
        if (round !== 8) return;
        publisher.waitReplicas = false; // everything acknowledged so far is on the replica
        await victim.stop("SIGKILL");
        killedAt = Date.now();
        await replica.call("CLUSTER", "FAILOVER", "FORCE");
      });
      await cluster.waitOk();
      await publisher.rounds(channels, 5);
      await assertComplete(w, publisher, channels);
      assert.ok(w.unsubscribed.some((u) => u.reason === "node-lost" && u.node === victim.address));
      console.log(`master killed: its channels subscribed on the promoted replica ${back} ms later`);
    } finally {
      await w.consumer.stop();
    }
  });

  it("a graceful failover (the master becomes a replica, Redis unsubscribes): nothing missed", async () => {
    const w = await consume(cluster.url, { channels });
    try {
      const [master, replica] = await busiestMaster();
      await publisher.rounds(channels, 16, async (round) => {
        if (round === 5) await replica.call("CLUSTER", "FAILOVER");
      });
      await cluster.waitOk();
      await publisher.rounds(channels, 4);
      await assertComplete(w, publisher, channels);
      assert.ok(w.unsubscribed.some((u) => u.reason === "slot-moved" && u.node === master.address));
    } finally {
      await w.consumer.stop();
    }
  });
  it("a failover to a replica that missed what the consumer applied: 'position-ahead', then the new numbering", async () => {
    const w = await consume(cluster.url, { channels });
    try {
      const [master, replica] = await busiestMaster();
      const onMaster: string[] = [];
      for (const ch of channels) if ((await cluster.ownerOf(keySlot(ch))) === master) onMaster.push(ch);
      await publisher.rounds(channels, 3);
      // From here on the replica gets nothing of what its master takes: stopped, and cut off.
      replica.signal("SIGSTOP");
      assert.equal(await master.call("CLIENT", "KILL", "TYPE", "replica"), 1);
      await publisher.rounds(channels, 3);
      await waitFor("the consumer to apply what the master acknowledged", () =>
        channels.every((ch) => w.recorder.events(ch).length === publisher.published.get(ch)));
      await master.stop("SIGKILL");
      replica.signal("SIGCONT");
      await replica.call("CLUSTER", "FAILOVER", "TAKEOVER");
      await cluster.waitOk();
      await publisher.rounds(channels, 4);
      const head = async (ch: string) => Number(await publisher.client.hget(metaKey(ch), "seq"));
      const heads = new Map(await Promise.all(channels.map(async (ch) => [ch, await head(ch)] as const)));
      await waitFor("every channel at its head", () => channels.every((ch) => w.consumer.position(ch)?.seq === heads.get(ch)));
      for (const [ch, seq] of heads) publisher.published.set(ch, seq); // what Redis kept
      await w.consumer.idle();
      w.recorder.assertInOrderOnce();
      for (const ch of channels) {
        const expected = onMaster.includes(ch) ? ["position-ahead"] : [];
        assert.deepEqual(w.recorder.resyncs(ch).map((r) => r.reason), expected, ch);
      }
      assert.ok(onMaster.length > 0);
    } finally {
      await w.consumer.stop();
    }
  });

  it("a master that hangs while its replica takes over: the slot map read every interval moves the channels", async () => {
    const w = await consume(cluster.url, { channels, discoveryInterval: 500 });
    const [master, replica] = await busiestMaster();
    try {
      await publisher.rounds(channels, 3);
      await cluster.waitReplicated(master, replica); // this failover loses nothing
      master.signal("SIGSTOP"); // no connection breaks, no push comes
      await replica.call("CLUSTER", "FAILOVER", "TAKEOVER");
      await waitFor("the replica to be master", async () => (await replica.info("replication"))["role"] === "master");
      await publisher.forget(master);
      await publisher.rounds(channels, 5);
      await assertComplete(w, publisher, channels);
      const moved = w.unsubscribed.filter((u) => u.node === master.address && u.reason === "slot-moved");
      assert.ok(moved.length > 0 && moved.every((u) => u.detail?.includes("slot map")), JSON.stringify(w.unsubscribed));
    } finally {
      master.signal("SIGCONT");
      await w.consumer.stop();
    }
    await cluster.waitOk();
  });
});

describe("a whole-cluster outage", { timeout: 300_000 }, () => {
  it("every node stopped and started again (AOF on): the consumer resubscribes and catches up", async () => {
    const cluster = await RedisCluster.start({ masters: 3, appendonly: true });
    const publisher = new ClusterPublisher(cluster);
    const channels = names("outage", 12);
    const w = await consume(cluster.url, { channels });
    try {
      await publisher.rounds(channels, 5);
      await waitFor("the first rounds", () => channels.every((ch) => w.recorder.events(ch).length === 5));
      await Promise.all(cluster.nodes.map((n) => n.stop("SIGTERM")));
      await waitFor("the consumer to notice", () => w.unsubscribed.length > 0, 10_000);
      await Promise.all(cluster.nodes.map((n) => n.start()));
      await cluster.waitOk();
      await publisher.rounds(channels, 5);
      await assertComplete(w, publisher, channels);
      assert.ok(w.unsubscribed.every((u) => u.reason === "node-lost"));
    } finally {
      await w.consumer.stop();
      publisher.stop();
      await cluster.stop();
    }
  });
});
