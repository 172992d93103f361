// `sluice run` and the consumer together on a real Redis Cluster (a redis+cluster:// URL on both
// sides), in both source modes: PostgreSQL changes to the handler, with a slot moved while they
// flow. Every row once per channel, in seq order, no resync.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { SluiceConsumer, metaKey, type UnsubscribedInfo } from "../src";
import { keySlot } from "../src/slot";
import { Recorder, assertChannel, expectedIds, insertSql } from "./check";
import { RedisCluster, type ClusterNode } from "./cluster-harness";
import { SluiceRun, Stack, waitFor } from "./harness";

const TENANTS = 6;
const channel = (t: number) => `crm:tenant-${t}:credit-configs`;
const CHANNELS = Array.from({ length: TENANTS }, (_, t) => channel(t));

for (const mode of ["trigger", "logical"] as const) {
  describe(`sluice run (${mode} mode) and the consumer on a Redis Cluster`, { timeout: 300_000 }, () => {
    let cluster: RedisCluster;
    let stack: Stack;
    let sluice: SluiceRun;

    before(async () => {
      cluster = await RedisCluster.start({ masters: 3 });
      stack = await Stack.start(cluster.url, { mode });
      sluice = new SluiceRun(stack);
      sluice.start();
    });
    after(async () => {
      await sluice?.stop();
      await stack?.stop();
      await cluster?.stop();
    });

    it("every change once per channel, in seq order, across a slot moved mid-flow", async () => {
      const recorder = new Recorder();
      const unsubscribed: UnsubscribedInfo[] = [];
      const consumer = new SluiceConsumer({
        redis: cluster.url,
        patterns: ["crm:*:credit-configs"],
        discoveryInterval: 500,
        handler: recorder.handler,
        onResync: recorder.onResync,
      });
      consumer.on("unsubscribed", (info) => unsubscribed.push(info));
      await consumer.start();
      try {
        await stack.psql(insertSql("a", 1, 1200, TENANTS));
        await waitFor("the first events", () => recorder.total() > 0, 60_000);
        const slot = keySlot(channel(1));
        const source = await cluster.ownerOf(slot);
        const target = (await cluster.masters()).find((n) => n !== source) as ClusterNode;
        await Promise.all([stack.psql(insertSql("a", 1201, 2400, TENANTS)), cluster.moveSlot(slot, target)]);
        await stack.psql(insertSql("a", 2401, 3000, TENANTS));
        const all = () =>
          CHANNELS.every((ch, t) => recorder.recordIds(ch).length >= expectedIds("a", 3000, TENANTS, t).length);
        await waitFor("every row", all, 120_000);
        await consumer.idle();
        for (const [t, ch] of CHANNELS.entries()) {
          assertChannel(ch, recorder.list(ch));
          assert.deepEqual(recorder.recordIds(ch).sort(), expectedIds("a", 3000, TENANTS, t).sort(), ch);
          const head = await (await cluster.ownerOf(keySlot(ch))).call("HGET", metaKey(ch), "seq");
          assert.equal(consumer.position(ch)?.seq, Number(head), `${ch} at its head`);
        }
        assert.deepEqual(recorder.resyncs(), []);
        assert.ok(unsubscribed.some((u) => u.reason === "slot-moved" && u.channels.includes(channel(1))));
      } finally {
        await consumer.stop();
      }
    });
  });
}
