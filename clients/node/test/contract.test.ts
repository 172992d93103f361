// The catch-up rules against a real redis-server, with the keys written the way Sluice writes
// them (meta, history and publish in one MULTI), so each case is exact: a live seq jump, a
// trimmed history, an epoch change, replays, bootstrap, a stored position, a dropped connection.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type Redis from "ioredis";
import { MemoryStore, SluiceConsumer, historyKey, metaKey, stateKey, type ConsumerOptions } from "../src";
import { Recorder } from "./check";
import { RedisServer, freePort, waitFor } from "./harness";

let server: RedisServer;
let redis: Redis;
let n = 0;

/** Writes one channel's messages as Sluice does. */
class Publisher {
  seq = 0;
  constructor(
    readonly channel: string,
    public epoch = "e1",
    private readonly client: Redis = redis,
  ) {}

  message(extra: Record<string, unknown> = {}): string {
    const id = ++n;
    return JSON.stringify({
      seq: this.seq,
      epoch: this.epoch,
      eventId: `cl:${id}`,
      operation: "INSERT",
      app: "crm",
      tenantId: "tenant-1",
      dataType: "credit-configs",
      table: "public.credit_configurations",
      recordId: `k${id}`,
      data: { config_id: `k${id}` },
      timestamp: "2026-01-01T00:00:00.000000Z",
      source: { mode: "trigger", id },
      ...extra,
    });
  }

  /** One message: meta, history, state and (unless `live` is false) the publish, in one MULTI. */
  async publish(options: { live?: boolean } = {}): Promise<string> {
    this.seq++;
    const json = this.message();
    const event = JSON.parse(json);
    const tx = this.client
      .multi()
      .hset(metaKey(this.channel), "epoch", this.epoch, "seq", this.seq)
      .xadd(historyKey(this.channel), `${this.seq}-0`, "event", json)
      .hset(stateKey(this.channel), event.recordId, json);
    if (options.live !== false) tx.publish(this.channel, json);
    await tx.exec();
    return json;
  }

  async publishMany(count: number, options: { live?: boolean } = {}): Promise<void> {
    for (let i = 0; i < count; i++) await this.publish(options);
  }
}

async function consumer(recorder: Recorder, options: Partial<ConsumerOptions> = {}): Promise<SluiceConsumer> {
  const c = new SluiceConsumer({
    redis: server.url,
    patterns: ["crm:*"],
    handler: recorder.handler,
    onResync: recorder.onResync,
    startFrom: "beginning",
    ...options,
  });
  await c.start();
  return c;
}

const seqs = (r: Recorder, ch: string) => r.events(ch).map((e) => e.seq);

describe("catch-up rules on a real Redis", () => {
  before(async () => {
    server = await RedisServer.start();
    redis = server.client();
  });
  after(async () => {
    redis.disconnect();
    await server.stop();
  });

  it("fills a live seq jump from history, each event once, in order", async () => {
    const ch = "crm:t-gap:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    await pub.publishMany(2);
    await waitFor("2 events", () => r.events(ch).length === 2);
    await pub.publishMany(2, { live: false }); // missed by the subscriber
    await pub.publishMany(2);
    await waitFor("6 events", () => r.events(ch).length === 6);
    await c.idle();
    assert.deepEqual(seqs(r, ch), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(r.events(ch).slice(0, 4).map((e) => e.delivery), ["live", "live", "history", "history"]);
    assert.deepEqual(c.position(ch), { epoch: "e1", seq: 6 });
    assert.equal(r.resyncs().length, 0);
    r.assertInOrderOnce();
    await c.stop();
  });

  it("reports 'resync needed' exactly once when the history was trimmed past the gap", async () => {
    const ch = "crm:t-trim:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    await pub.publish();
    await waitFor("first event", () => r.events(ch).length === 1);
    await pub.publishMany(9, { live: false });
    await redis.xtrim(historyKey(ch), "MINID", "6-0");
    await pub.publish();
    await waitFor("events 6..11", () => r.events(ch).length === 7);
    await c.idle();
    assert.deepEqual(seqs(r, ch), [1, 6, 7, 8, 9, 10, 11]);
    const resyncs = r.resyncs(ch);
    assert.equal(resyncs.length, 1);
    assert.equal(resyncs[0].reason, "history-trimmed");
    assert.deepEqual(resyncs[0].from, { epoch: "e1", seq: 1 });
    assert.deepEqual(resyncs[0].resumeAfter, { epoch: "e1", seq: 5 });
    r.assertInOrderOnce();
    await c.stop();
  });

  it("reports an epoch change once and goes on with the new numbering", async () => {
    const ch = "crm:t-epoch:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    await pub.publishMany(3);
    await waitFor("3 events", () => r.events(ch).length === 3);
    await redis.del(metaKey(ch), historyKey(ch), stateKey(ch)); // Redis lost the channel
    pub.epoch = "e2";
    pub.seq = 0;
    await pub.publishMany(2, { live: false });
    await pub.publish();
    await waitFor("e2 events", () => r.events(ch).length === 6);
    await c.idle();
    assert.deepEqual(r.events(ch).map((e) => `${e.epoch}/${e.seq}`), ["e1/1", "e1/2", "e1/3", "e2/1", "e2/2", "e2/3"]);
    assert.deepEqual(r.resyncs(ch).map((x) => x.reason), ["epoch-changed"]);
    r.assertInOrderOnce();
    await c.stop();
  });

  it("applies a replay once by eventId and never moves the position for it", async () => {
    const ch = "crm:t-replay:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    const first = JSON.parse(await pub.publish());
    await waitFor("first event", () => r.events(ch).length === 1);
    const { seq: _s, epoch: _e, ...rest } = first;
    await redis.publish(ch, JSON.stringify({ ...rest, replay: "change_log" })); // already applied
    const fresh = JSON.parse(pub.message());
    delete fresh.seq;
    delete fresh.epoch;
    await redis.publish(ch, JSON.stringify({ ...fresh, replay: "dead_letter" }));
    await redis.publish(ch, JSON.stringify({ ...fresh, replay: "dead_letter" }));
    await pub.publish();
    await waitFor("the next live event", () => r.events(ch).some((e) => e.seq === 2));
    await c.idle();
    assert.deepEqual(r.events(ch).map((e) => e.eventId), [first.eventId, fresh.eventId, r.events(ch)[2].eventId]);
    assert.deepEqual(c.position(ch), { epoch: "e1", seq: 2 });
    r.assertInOrderOnce();
    await c.stop();
  });

  it("bootstraps from the state hash and its seq read in one MULTI", async () => {
    const ch = "crm:t-boot:credit-configs";
    const pub = new Publisher(ch);
    await pub.publishMany(5, { live: false });
    const r = new Recorder();
    const c = await consumer(r, { startFrom: "now", patterns: [], channels: [ch] });
    const snapshot = await c.bootstrap(ch);
    assert.deepEqual(snapshot.position, { epoch: "e1", seq: 5 });
    assert.equal(snapshot.records.size, 5);
    await pub.publish();
    await waitFor("event 6", () => r.events(ch).length === 1);
    assert.deepEqual(seqs(r, ch), [6]);
    await c.stop();
  });

  it("resumes from a stored position: history first, then live", async () => {
    const ch = "crm:t-stored:credit-configs";
    const pub = new Publisher(ch);
    await pub.publishMany(6, { live: false });
    const store = new MemoryStore();
    store.save(ch, { epoch: "e1", seq: 3 });
    const r = new Recorder();
    const c = await consumer(r, { store, startFrom: "now" });
    await waitFor("events 4..6", () => r.events(ch).length === 3);
    await pub.publish();
    await waitFor("event 7", () => r.events(ch).length === 4);
    assert.deepEqual(seqs(r, ch), [4, 5, 6, 7]);
    assert.deepEqual(store.positions.get(ch), { epoch: "e1", seq: 7 });
    r.assertInOrderOnce();
    await c.stop();
  });

  it("resubscribes after Redis drops the connection, and catches up what was published meanwhile", async () => {
    const ch = "crm:t-drop:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    let reconnects = 0;
    c.on("subscribed", ({ reconnect }) => reconnect && reconnects++);
    await pub.publishMany(2);
    await waitFor("2 events", () => r.events(ch).length === 2);
    await redis.client("KILL", "TYPE", "pubsub");
    await pub.publishMany(3); // some go to nobody
    await waitFor("resubscribed", () => reconnects > 0);
    await pub.publishMany(2);
    await waitFor("7 events", () => r.events(ch).length === 7);
    await c.idle();
    assert.deepEqual(seqs(r, ch), [1, 2, 3, 4, 5, 6, 7]);
    r.assertInOrderOnce();
    await c.stop();
  });

  it("reports 'position-ahead' when Redis lost applied messages: other events under their seqs, or fewer", async () => {
    const ch = "crm:t-ahead:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    const c = await consumer(r);
    let reconnects = 0;
    c.on("subscribed", ({ reconnect }) => reconnect && reconnects++);
    /** Redis back at `seq`, as after a failover to a replica that had not received the rest. */
    const rewind = async (seq: number) => {
      const kept = await redis.xrange(historyKey(ch), "-", `${seq}-0`);
      const tx = redis.multi().del(historyKey(ch)).hset(metaKey(ch), "seq", seq);
      for (const [id, fields] of kept) tx.xadd(historyKey(ch), id, ...fields);
      await tx.exec();
      pub.seq = seq;
    };
    const reconnect = async () => {
      const before = reconnects;
      await redis.client("KILL", "TYPE", "pubsub");
      await waitFor("resubscribed", () => reconnects > before);
    };
    await pub.publishMany(5);
    await waitFor("5 events", () => r.events(ch).length === 5);
    await rewind(3);
    await pub.publishMany(2, { live: false }); // other events numbered 4 and 5
    await reconnect();
    await pub.publish();
    await waitFor("seq 6", () => r.events(ch).length === 6);
    await rewind(4); // fewer than applied
    await reconnect();
    await pub.publish();
    await waitFor("seq 5 of the rewound numbering", () => r.events(ch).length === 7);
    await c.idle();
    assert.deepEqual(seqs(r, ch), [1, 2, 3, 4, 5, 6, 5]);
    const resyncs = r.resyncs(ch).map((x) => [x.reason, x.from.seq, x.resumeAfter.seq]);
    assert.deepEqual(resyncs, [["position-ahead", 5, 5], ["position-ahead", 6, 4]]);
    r.assertInOrderOnce();
    await c.stop();
  });

  it("awaits async handlers one at a time per channel, in order, and retries a failing one", async () => {
    const ch = "crm:t-async:credit-configs";
    const pub = new Publisher(ch);
    const r = new Recorder();
    let running = 0;
    let overlap = false;
    let failures = 0;
    const errors: string[] = [];
    const c = await consumer(r, {
      handler: async (event, ctx) => {
        overlap ||= running++ > 0;
        await new Promise((done) => setTimeout(done, Math.random() * 3));
        running--;
        if (event.seq === 5 && failures++ < 2) throw new Error("database unavailable");
        r.handler(event, ctx);
      },
    });
    c.on("error", (error) => errors.push(error.name));
    await pub.publishMany(20);
    await waitFor("20 events", () => r.events(ch).length === 20);
    await c.idle();
    assert.deepEqual(seqs(r, ch), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(overlap, false, "one handler call at a time on a channel");
    assert.deepEqual(errors, ["HandlerError", "HandlerError"]);
    r.assertInOrderOnce();
    await c.stop();
  });

  it("started while Redis is down, subscribes once it is up", async () => {
    const port = await freePort();
    const r = new Recorder();
    const c = new SluiceConsumer({ redis: `redis://127.0.0.1:${port}`, channels: ["crm:t-late:roles"], handler: r.handler });
    let started = false;
    const starting = c.start().then(() => (started = true));
    await new Promise((done) => setTimeout(done, 300));
    assert.equal(started, false);
    const late = await RedisServer.start({ port });
    try {
      await starting;
      const client = late.client();
      await new Publisher("crm:t-late:roles", "e1", client).publish();
      client.disconnect();
      await waitFor("the event", () => r.events("crm:t-late:roles").length === 1);
      await c.stop();
    } finally {
      await late.stop();
    }
  });
});
