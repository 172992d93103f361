// The cluster mode's building blocks without a server: where to connect, what discovery scans
// for, RESP replies split anywhere across socket reads, CLUSTER SLOTS read into owners.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { channelOfMetaKey, literalPrefix, metaScanPattern } from "../src/cluster/discovery";
import { toTopology } from "../src/cluster/topology";
import { resolveTarget } from "../src/connection";
import { patternToRegExp } from "../src/pattern";
import { ReplyError, ReplyParser, encodeCommand, type Reply } from "../src/resp";

describe("cluster building blocks", () => {
  it("reads redis+cluster:// URLs, cluster configs and mode", () => {
    assert.deepEqual(resolveTarget("redis://127.0.0.1:6379"), { mode: "standalone", url: "redis://127.0.0.1:6379", options: {} });
    const url = resolveTarget("rediss+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002");
    assert.equal(url.mode, "cluster");
    if (url.mode !== "cluster") return;
    assert.deepEqual(url.seeds, [
      { host: "10.0.0.1", port: 7000 },
      { host: "10.0.0.2", port: 6379 },
      { host: "::1", port: 7002 },
    ]);
    assert.deepEqual(url.auth, { username: "app", password: "p@ss", tls: {} });
    const plain = resolveTarget("redis://:secret@127.0.0.1:7001", "cluster");
    assert.ok(plain.mode === "cluster" && plain.auth.password === "secret" && plain.auth.username === undefined);
    const config = resolveTarget({ startupNodes: ["127.0.0.1:7001", { host: "h", port: 2 }], clusterOptions: { redisOptions: { password: "pw" } } });
    assert.ok(config.mode === "cluster" && config.seeds.length === 2 && config.auth.password === "pw");
    const options = resolveTarget({ host: "h", port: 7005 }, "cluster");
    assert.ok(options.mode === "cluster" && options.seeds[0].port === 7005);
    assert.equal(resolveTarget({ host: "h", port: 7005 }).mode, "standalone");
    assert.throws(() => resolveTarget("redis+cluster://h:1", "standalone"));
    assert.throws(() => resolveTarget("http://h:1"));
  });

  it("scans for the meta keys of the channels the patterns cover", () => {
    assert.equal(literalPrefix("crm:t\\*x:*"), "crm:t*x:");
    assert.equal(literalPrefix("crm:tenant-[12]:roles"), "crm:tenant-");
    assert.equal(channelOfMetaKey("sluice:meta:{crm:t:roles}"), "crm:t:roles");
    assert.equal(channelOfMetaKey("sluice:history:{crm:t:roles}"), undefined);
    const one = metaScanPattern(["crm:tenant-1:*"]);
    assert.equal(one, "sluice:meta:{crm:tenant-1:*}");
    const several = metaScanPattern(["crm:tenant-1:*", "crm:tenant-2:*"]);
    assert.equal(several, "sluice:meta:{crm:tenant-*");
    assert.equal(metaScanPattern(["crm:a*b:*", "crm:a*c:*"].map((p) => p.replace("*", "\\*"))), "sluice:meta:{crm:a\\**");
    assert.equal(metaScanPattern(["crm:*", "hrms:*"]), "sluice:meta:{*");
    for (const [match, key, expected] of [
      [one, "sluice:meta:{crm:tenant-1:roles}", true],
      [one, "sluice:meta:{crm:tenant-12:roles}", false],
      [one, "sluice:history:{crm:tenant-1:roles}", false],
      [several, "sluice:meta:{crm:tenant-2:users}", true],
      [several, "sluice:meta:{hrms:tenant-2:users}", false],
    ] as const) {
      assert.equal(patternToRegExp(match).test(key), expected, `${match} ${key}`);
    }
  });

  it("parses replies split at any byte across socket reads", () => {
    const wire = Buffer.concat([
      Buffer.from("*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$12\r\n{\"seq\":1,é}\r\n"),
      Buffer.from("-MOVED 3999 127.0.0.1:7002\r\n+OK\r\n:42\r\n$-1\r\n*0\r\n"),
      Buffer.from("*3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
    ]);
    const expected: Reply[] = [
      ["smessage", "ch", "{\"seq\":1,é}"],
      new ReplyError("MOVED 3999 127.0.0.1:7002"),
      "OK",
      42,
      null,
      [],
      ["sunsubscribe", "ch", 0],
    ];
    for (let split = 1; split < wire.length; split++) {
      const got: Reply[] = [];
      const parser = new ReplyParser((r) => got.push(r));
      for (let at = 0; at < wire.length; at += split) parser.feed(wire.subarray(at, at + split));
      assert.deepEqual(got, expected, `chunks of ${split}`);
    }
    assert.equal(encodeCommand(["SSUBSCRIBE", "é"]).toString(), "*2\r\n$10\r\nSSUBSCRIBE\r\n$2\r\né\r\n");
  });

  it("reads CLUSTER SLOTS into slot owners", () => {
    const t = toTopology(
      [
        [0, 9, ["10.0.0.1", 7000, "a"], ["10.0.0.4", 7000, "d"]],
        [10, 16383, ["", 7001, "b"]],
      ],
      { host: "seed", port: 7000 },
      { "10.0.0.1:7000": { host: "public-a", port: 17000 } },
    );
    assert.equal(t.owners[0], "public-a:17000");
    assert.equal(t.owners[9], "public-a:17000");
    assert.equal(t.owners[10], "seed:7001");
    assert.deepEqual(t.nodes, ["seed:7000", "public-a:17000", "10.0.0.4:7000", "seed:7001"]);
  });
});
