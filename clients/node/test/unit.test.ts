import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { JsonFileStore, tenantPatterns } from "../src";
import { BoundedSet, Queue } from "../src/collections";
import { patternToRegExp } from "../src/pattern";
import { generate, generatedPath } from "../scripts/gen-types";
import { tempDir } from "./harness";

describe("building blocks", () => {
  it("src/event.generated.ts is what schema/event.schema.json generates", async () => {
    assert.equal(readFileSync(generatedPath, "utf8"), await generate(), "run `npm run gen:types`");
  });

  it("matches channels the way Redis patterns do", () => {
    const p = patternToRegExp("crm:tenant-1?:*");
    assert.ok(p.test("crm:tenant-12:roles"));
    assert.ok(!p.test("crm:tenant-1:roles"));
    assert.ok(patternToRegExp("crm:t[ab]:x").test("crm:ta:x"));
    assert.ok(!patternToRegExp("crm:t[^ab]:x").test("crm:ta:x"));
    assert.ok(patternToRegExp("a.b\\*").test("a.b*"));
    assert.ok(!patternToRegExp("a.b").test("axb"));
  });

  it("builds an app's patterns for a list of tenants", () => {
    assert.deepEqual(tenantPatterns("crm", ["tenant-1", "t*"]), ["crm:tenant-1:*", "crm:t\\*:*"]);
    assert.ok(patternToRegExp(tenantPatterns("crm", ["t*"])[0]).test("crm:t*:roles"));
    assert.ok(!patternToRegExp(tenantPatterns("crm", ["t*"])[0]).test("crm:tx:roles"));
  });

  it("forgets the oldest eventIds past its capacity", () => {
    const set = new BoundedSet<string>(2);
    set.add("a");
    set.add("b");
    set.add("c");
    assert.deepEqual([set.has("a"), set.has("b"), set.has("c")], [false, true, true]);
  });

  it("queues in order across compactions", () => {
    const q = new Queue<number>();
    for (let i = 0; i < 5000; i++) q.push(i);
    for (let i = 0; i < 3000; i++) assert.equal(q.shift(), i);
    q.push(5000);
    assert.equal(q.length, 2001);
    for (let i = 3000; i <= 5000; i++) assert.equal(q.shift(), i);
    assert.equal(q.shift(), undefined);
  });

  it("keeps positions in a JSON file across instances", async () => {
    const path = join(tempDir("store"), "positions.json");
    const store = new JsonFileStore(path, { flushIntervalMs: 50 });
    assert.equal(store.load().size, 0);
    store.save("crm:t:a", { epoch: "e", seq: 1 });
    store.save("crm:t:a", { epoch: "e", seq: 2 });
    store.save("crm:t:b", { epoch: "f", seq: 9 });
    await store.flush();
    assert.deepEqual([...new JsonFileStore(path).load()], [
      ["crm:t:a", { epoch: "e", seq: 2 }],
      ["crm:t:b", { epoch: "f", seq: 9 }],
    ]);
    const sync = new JsonFileStore(path, { flushIntervalMs: 0 });
    sync.load();
    sync.save("crm:t:a", { epoch: "e", seq: 3 });
    assert.deepEqual(new JsonFileStore(path).load().get("crm:t:a"), { epoch: "e", seq: 3 });
  });
});
