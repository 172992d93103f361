// The SDK against the real thing: redis-server, PostgreSQL and `sluice run`, each killed and
// restarted the ways production does it. Every case asserts the same property: the handler saw
// every change once per channel, in seq order, or was told "resync needed" exactly where the
// history could not cover the gap.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import type Redis from "ioredis";
import { CrmConsumer } from "../examples/crm-consumer";
import { JsonFileStore, SluiceConsumer, historyKey, stateKey, type ConsumerOptions } from "../src";
import { Recorder, assertChannel, expectedIds, insertSql, type Seen } from "./check";
import { RedisServer, SluiceRun, Stack, tempDir, waitFor } from "./harness";

const TENANTS = 3;
const channel = (t: number) => `crm:tenant-${t}:credit-configs`;
const CHANNELS = [0, 1, 2].map(channel);

/** Sluice's capture mode for this run: `SLUICE_MODE=logical npm test` runs the suite on logical decoding. */
const MODE = process.env.SLUICE_MODE === "logical" ? "logical" : "trigger";
const LONG_HISTORY = "[history]\nmax_len = 200000";
let redis: RedisServer;
let admin: Redis;
let stack: Stack;
let sluice: SluiceRun;

/** Inserts rows prefix||from..to in `batches` statements, calling `between(b)` after each. */
async function writeRows(
  prefix: string,
  count: number,
  batches: number,
  between: (batch: number) => Promise<void> | void = () => {},
  pad = 0,
): Promise<void> {
  const size = Math.ceil(count / batches);
  for (let b = 0; b < batches; b++) {
    const from = b * size + 1;
    const to = Math.min(count, (b + 1) * size);
    if (from <= to) await stack.psql(insertSql(prefix, from, to, TENANTS, pad));
    await between(b);
  }
}

function idsWithPrefix(seen: Seen[], prefix: string): string[] {
  return seen.flatMap((s) =>
    s.kind === "event" && s.recordId?.startsWith(prefix) && /^\d+$/.test(s.recordId.slice(prefix.length))
      ? [s.recordId]
      : [],
  );
}

function assertAllOnce(seenByChannel: (ch: string) => Seen[], prefix: string, count: number): void {
  for (let t = 0; t < TENANTS; t++) {
    const seen = seenByChannel(channel(t));
    assertChannel(channel(t), seen);
    assert.deepEqual(
      idsWithPrefix(seen, prefix).sort(),
      expectedIds(prefix, count, TENANTS, t).sort(),
      `${channel(t)}: every ${prefix}* row once`,
    );
  }
}

const allSeen = (r: Recorder, prefix: string, count: number) => () =>
  CHANNELS.every((ch, t) => idsWithPrefix(r.list(ch), prefix).length >= expectedIds(prefix, count, TENANTS, t).length);

describe("against redis-server, PostgreSQL and sluice run", { timeout: 600_000 }, () => {
  before(async () => {
    redis = await RedisServer.start({ persistent: true });
    admin = redis.client();
    await admin.config("SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60");
    stack = await Stack.start(redis.url, { mode: MODE });
    sluice = new SluiceRun(stack, stack.configWith(LONG_HISTORY));
    sluice.start();
  });

  after(async () => {
    await sluice?.kill();
    await stack?.stop();
    admin?.disconnect();
    await redis?.stop();
  });

  it("a consumer process killed with kill -9 mid-stream goes on from its persisted position", async () => {
    const log = join(tempDir("log-consumer"), "applied.jsonl");
    const lines = () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").filter((l) => l.endsWith("}")) : []);
    let child: ChildProcess | undefined;
    const startChild = async () => {
      child = spawn(process.execPath, ["--import", "tsx", join(__dirname, "fixtures", "log-consumer.ts"), redis.url, log, "crm:*:credit-configs"], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const [line] = (await once(createInterface({ input: child.stdout! }), "line")) as [string];
      assert.equal(line, "ready");
    };
    const killChild = async () => {
      const exited = once(child!, "exit");
      child!.kill("SIGKILL");
      await exited;
    };
    try {
      await startChild();
      const total = 6000;
      await writeRows("a", total, 30, async (b) => {
        if (b === 8 || b === 20) {
          await waitFor("the consumer to apply some", () => lines().length > b * 150);
          await killChild();
        }
        if (b === 12 || b === 24) await startChild();
      });
      const seen = () => lines().map((l) => JSON.parse(l));
      await waitFor("every row in the log", () => {
        const entries = seen();
        return CHANNELS.every((ch, t) =>
          idsWithPrefix(entries.filter((e) => e.channel === ch), "a").length >= expectedIds("a", total, TENANTS, t).length);
      }, 120_000);
      const entries = seen();
      assertAllOnce((ch) => entries.filter((e) => e.channel === ch), "a", total);
      assert.equal(entries.filter((e) => e.kind === "resync").length, 0);
      assert.equal(new Set(entries.map((e) => e.pid)).size, 3, "three processes shared the work");
      // Each restarted process began where the last one stopped, from history.
      const firstOfRestart = entries.filter((e, i) => i > 0 && e.pid !== entries[i - 1].pid);
      assert.ok(firstOfRestart.every((e) => e.delivery === "history"));
    } finally {
      if (child && child.exitCode === null) await killChild();
    }
  });

  describe("one consumer through outages", () => {
    const recorder = new Recorder();
    let consumer: SluiceConsumer;
    let reconnects = 0;

    before(async () => {
      consumer = new SluiceConsumer({
        redis: redis.url,
        patterns: ["crm:*:credit-configs"],
        handler: recorder.handler,
        onResync: recorder.onResync,
        startFrom: "now",
      });
      consumer.on("subscribed", ({ reconnect }) => reconnect && reconnects++);
      await consumer.start();
    });
    after(() => consumer.stop());

    it("sluice run killed with kill -9 mid-stream and restarted", async () => {
      const total = 5000;
      await writeRows("b", total, 20, async (b) => {
        if (b === 5) await sluice.kill();
        if (b === 10) sluice.start();
      });
      await waitFor("every b row", allSeen(recorder, "b", total), 120_000);
      await consumer.idle();
      assertAllOnce((ch) => recorder.list(ch), "b", total);
      assert.equal(recorder.resyncs().length, 0);
    });

    it("Redis restarted with its data: the consumer resubscribes and catches up, no resync", async () => {
      const total = 5000;
      const before = reconnects;
      await writeRows("c", total, 20, async (b) => {
        if (b === 8) await redis.restart({ keepData: true });
      });
      await waitFor("every c row", allSeen(recorder, "c", total), 120_000);
      await consumer.idle();
      assert.ok(reconnects > before, "resubscribed after the restart");
      assertAllOnce((ch) => recorder.list(ch), "c", total);
      assert.equal(recorder.resyncs().length, 0);
    });

    it("Redis restarted without its data: one 'resync needed' per channel, then the new epoch in full", async () => {
      const total = 3000;
      await writeRows("d", total, 3);
      await waitFor("every d row", allSeen(recorder, "d", total), 120_000);
      await consumer.idle();
      const epochs = CHANNELS.map((ch) => consumer.position(ch)?.epoch);
      await redis.restart({ keepData: false });
      await admin.config("SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60");
      await writeRows("e", total, 10);
      await waitFor("every e row", allSeen(recorder, "e", total), 120_000);
      await consumer.idle();
      for (const [t, ch] of CHANNELS.entries()) {
        const resyncs = recorder.resyncs(ch);
        assert.equal(resyncs.length, 1, `${ch}: one resync`);
        assert.equal(resyncs[0].reason, "epoch-changed");
        assert.equal(resyncs[0].from.epoch, epochs[t]);
        assert.notEqual(consumer.position(ch)?.epoch, epochs[t]);
      }
      assertAllOnce((ch) => recorder.list(ch), "d", total);
      assertAllOnce((ch) => recorder.list(ch), "e", total);
    });
  });

  it("a consumer restarted from a JSON file store: resync exactly where history was trimmed meanwhile", async () => {
    const positions = join(tempDir("positions"), "positions.json");
    const recorder = new Recorder();
    const options: ConsumerOptions = {
      redis: redis.url,
      patterns: ["crm:*:credit-configs"],
      handler: recorder.handler,
      onResync: recorder.onResync,
    };
    const run = async (between: () => Promise<unknown>) => {
      const consumer = new SluiceConsumer({ ...options, store: new JsonFileStore(positions) });
      await consumer.start();
      await between();
      await consumer.idle();
      await consumer.stop();
    };
    await run(async () => {
      await writeRows("g", 300, 3);
      await waitFor("every g row", allSeen(recorder, "g", 300));
    });
    // Away for a few events: the history covers them.
    await writeRows("h", 30, 1);
    await run(() => waitFor("every h row", allSeen(recorder, "h", 30)));
    assert.equal(recorder.resyncs().length, 0);
    // Away while sluice keeps only ~100 entries per channel: the history cannot cover it.
    await sluice.kill();
    sluice.start(stack.configWith("[history]\nmax_len = 100"));
    await writeRows("i", 1500, 3);
    const stored = JSON.parse(readFileSync(positions, "utf8"));
    const published = async (ch: string) => Number(await admin.hget(`sluice:meta:{${ch}}`, "seq"));
    await waitFor("sluice to publish every i row", async () => {
      const seqs = await Promise.all(CHANNELS.map(published));
      return seqs.every((seq, t) => seq >= stored[channel(t)].seq + 500);
    });
    const firstKept = await Promise.all(
      CHANNELS.map(async (ch) => Number.parseInt((await admin.xrange(historyKey(ch), "-", "+", "COUNT", 1))[0][0], 10)),
    );
    await run(() =>
      waitFor("the rest of the i rows", async () => {
        const seqs = await Promise.all(CHANNELS.map(published));
        return CHANNELS.every((ch, t) => recorder.events(ch).at(-1)?.seq === seqs[t]);
      }),
    );
    // Resync exactly where the history lost the gap (on every channel, the way this test is sized).
    for (const [t, ch] of CHANNELS.entries()) {
      const trimmed = firstKept[t] > stored[ch].seq + 1;
      assert.deepEqual(
        recorder.resyncs(ch).map((r) => [r.reason, r.from.seq, r.resumeAfter.seq]),
        trimmed ? [["history-trimmed", stored[ch].seq, firstKept[t] - 1]] : [],
      );
    }
    assert.ok(CHANNELS.every((ch, t) => firstKept[t] > stored[ch].seq + 1), "the test outran the history");
    recorder.assertInOrderOnce();
    await sluice.kill();
    sluice.start(stack.configWith(LONG_HISTORY));
  });

  it("a slow consumer cut off by client-output-buffer-limit during a 100k backlog catches up from history", async () => {
    const total = 100_000;
    const recorder = new Recorder();
    let cutOff = false;
    let disconnects = 0;
    const consumer = new SluiceConsumer({
      redis: redis.url,
      patterns: ["crm:*:credit-configs"],
      startFrom: "now",
      maxBuffered: 2000,
      handler: async (event, ctx) => {
        if (!cutOff && (event.seq ?? 0) % 10 === 0) await new Promise((r) => setTimeout(r, 5));
        recorder.handler(event, ctx);
      },
      onResync: recorder.onResync,
    });
    consumer.on("disconnected", () => disconnects++);
    consumer.on("subscribed", ({ reconnect }) => {
      if (reconnect) cutOff = true;
    });
    await consumer.start();
    try {
      await writeRows("f", total, 10, () => {}, 300);
      await waitFor("the cut-off", () => cutOff, 180_000);
      await waitFor("every f row", allSeen(recorder, "f", total), 180_000);
      await consumer.idle();
      assert.ok(disconnects >= 1);
      assert.match(redis.log(), /output buffer limits/, "Redis cut the subscriber off for its output buffer");
      assertAllOnce((ch) => recorder.list(ch), "f", total);
      assert.equal(recorder.resyncs().length, 0);
      const fromHistory = recorder.events(channel(0)).filter((e) => e.delivery === "history").length;
      assert.ok(fromHistory > 0, "the missed part came from history");
      console.log(`100k backlog: ${disconnects} cut-off(s), ${fromHistory} of ${channel(0)}'s events read back from history`);
    } finally {
      await consumer.stop();
    }
  });

  it("the CRM example: credit configs into its map, roles filtered by CRM permissions", async () => {
    await stack.psql(`
      INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) VALUES
        ('cc1', 'acme', 'crm.leads.create', 2.50), ('cc2', 'acme', 'crm.contacts.create', 1),
        ('cc3', 'acme', 'hrms.payroll.process', 9);
      INSERT INTO roles (role_id, tenant_id, role_name, permissions) VALUES
        ('r1', 'acme', 'Sales', '{crm.leads.view}'), ('r2', 'acme', 'HR', '{hrms.employee.view}'),
        ('r3', 'acme', 'Admin', '{user-management}');`);
    await waitFor("the state routes to hold acme's rows", async () =>
      (await admin.hlen(stateKey("crm:acme:credit-configs"))) === 2 && (await admin.hlen(stateKey("crm:acme:roles"))) === 2);
    const crm = new CrmConsumer("acme", redis.url);
    await crm.start();
    try {
      assert.equal(crm.creditCost("crm.leads.create"), 2.5);
      assert.deepEqual([...crm.roles.keys()].sort(), ["r1", "r3"]);
      await stack.psql(`
        UPDATE credit_configurations SET credit_cost = 3 WHERE config_id = 'cc1';
        DELETE FROM credit_configurations WHERE config_id = 'cc2';
        UPDATE roles SET permissions = '{hrms.employee.view}' WHERE role_id = 'r1';
        INSERT INTO roles (role_id, tenant_id, role_name, permissions) VALUES ('r4', 'acme', 'Support', '{crm.contacts.view}');`);
      await waitFor("the changes in the CRM's maps", () =>
        crm.creditCosts.get("crm.leads.create") === 3 &&
        !crm.creditCosts.has("crm.contacts.create") &&
        [...crm.roles.keys()].sort().join() === "r3,r4");
      assert.throws(() => crm.creditCost("hrms.payroll.process"), /not found/);
    } finally {
      await crm.stop();
    }
  });
});
