// Events per second a consumer applies with an empty handler, live and in catch-up, and live on
// a 3-master Redis Cluster (sharded pub/sub through the SDK's own RESP reader).
// `npm run bench` (needs redis-server and redis-cli on PATH; starts its own on free ports).
// Messages are generated inside Redis by a Lua script so the publisher is not the bottleneck.
import { SluiceConsumer, historyKey, metaKey } from "../src";
import { keySlot } from "../src/slot";
import { RedisCluster } from "../test/cluster-harness";
import { RedisServer, waitFor } from "../test/harness";

const LIVE = Number(process.env.BENCH_LIVE ?? 200_000);
const HISTORY = Number(process.env.BENCH_HISTORY ?? 200_000);
const CLUSTER = Number(process.env.BENCH_CLUSTER ?? 200_000);

// One event shaped like Sluice's (about 420 bytes), numbered `seq` on the channel.
const GENERATE = `
local ch, epoch, from, to, live = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
for seq = from, to do
  local id = tostring(seq)
  local json = '{"seq":' .. id .. ',"epoch":"' .. epoch .. '","eventId":"cl:' .. id ..
    '","operation":"INSERT","app":"crm","tenantId":"tenant-1","dataType":"credit-configs",' ..
    '"table":"public.credit_configurations","recordId":"k' .. id .. '","data":{"config_id":"k' .. id ..
    '","tenant_id":"tenant-1","operation_code":"crm.leads.create","credit_cost":1.00,"is_active":true,' ..
    '"updated_by":null,"meta":null,"updated_at":"2026-01-01T00:00:00.000000+00:00"},' ..
    '"timestamp":"2026-01-01T00:00:00.000000Z","source":{"mode":"trigger","id":' .. id .. '}}'
  if live then
    redis.call('PUBLISH', ch, json)
  else
    redis.call('XADD', KEYS[2], id .. '-0', 'event', json)
  end
end
redis.call('HSET', KEYS[3], 'epoch', epoch, 'seq', to)
return to
`;

async function main(): Promise<void> {
  const server = await RedisServer.start();
  const redis = server.client();
  await redis.config("SET", "client-output-buffer-limit", "pubsub 0 0 0");
  const results: Record<string, number> = {};
  try {
    // Live: the consumer is subscribed; Redis publishes LIVE messages as fast as it can.
    {
      const ch = "crm:bench-live:credit-configs";
      let applied = 0;
      let first = 0;
      const consumer = new SluiceConsumer({
        redis: server.url,
        channels: [ch],
        maxBuffered: 50_000,
        handler: () => {
          if (applied++ === 0) first = performance.now();
        },
      });
      await consumer.start();
      for (let from = 1; from <= LIVE; from += 50_000) {
        await redis.eval(GENERATE, 3, ch, historyKey(ch), metaKey(ch), "e", from, Math.min(LIVE, from + 49_999), "1");
      }
      await waitFor("live events", () => applied === LIVE, 300_000, 1);
      await consumer.idle();
      results.live = LIVE / ((performance.now() - first) / 1000);
      await consumer.stop();
    }
    // Catch-up: HISTORY entries wait in the stream; a consumer with a stored position at 0 starts.
    {
      const ch = "crm:bench-history:credit-configs";
      for (let from = 1; from <= HISTORY; from += 50_000) {
        await redis.eval(GENERATE, 3, ch, historyKey(ch), metaKey(ch), "e", from, Math.min(HISTORY, from + 49_999), "0");
      }
      let applied = 0;
      const { MemoryStore } = await import("../src");
      const store = new MemoryStore();
      store.save(ch, { epoch: "e", seq: 0 });
      const consumer = new SluiceConsumer({
        redis: server.url,
        channels: [ch],
        store,
        handler: () => {
          applied++;
        },
      });
      const start = performance.now();
      await consumer.start();
      await waitFor("history events", () => applied === HISTORY, 300_000, 1);
      results.catchUp = HISTORY / ((performance.now() - start) / 1000);
      await consumer.stop();
    }
  } finally {
    redis.disconnect();
    await server.stop();
  }
  console.log(`live:     ${Math.round(results.live)} events/s (${LIVE} events, empty handler)`);
  console.log(`catch-up: ${Math.round(results.catchUp)} events/s (${HISTORY} history entries, empty handler)`);
}

/** Live on a cluster: the channel's master generates SPUBLISHes; the consumer SSUBSCRIBEs there. */
async function clusterLive(): Promise<number> {
  const cluster = await RedisCluster.start({ masters: 3 });
  const ch = "crm:bench-cluster:credit-configs";
  const owner = (await cluster.ownerOf(keySlot(ch))).client();
  try {
    await owner.config("SET", "client-output-buffer-limit", "pubsub 0 0 0");
    let applied = 0;
    let first = 0;
    const consumer = new SluiceConsumer({
      redis: cluster.url,
      channels: [ch],
      maxBuffered: 50_000,
      handler: () => {
        if (applied++ === 0) first = performance.now();
      },
    });
    await consumer.start();
    const generate = GENERATE.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'");
    for (let from = 1; from <= CLUSTER; from += 50_000) {
      await owner.eval(generate, 3, ch, historyKey(ch), metaKey(ch), "e", from, Math.min(CLUSTER, from + 49_999), "1");
    }
    await waitFor("cluster live events", () => applied === CLUSTER, 300_000, 1);
    const rate = CLUSTER / ((performance.now() - first) / 1000);
    await consumer.stop();
    return rate;
  } finally {
    owner.disconnect();
    await cluster.stop();
  }
}

main()
  .then(async () => {
    const rate = await clusterLive();
    console.log(`cluster:  ${Math.round(rate)} events/s (${CLUSTER} events live on a 3-master cluster, empty handler)`);
  })
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
