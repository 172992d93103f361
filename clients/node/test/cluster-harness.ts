// A real Redis Cluster for the tests: redis-server --cluster-enabled on free ports in temp dirs,
// joined with `redis-cli --cluster create`, and the publisher the daemon is in cluster mode: the
// repository's clients/testing/channel.lua with PUBLISH replaced by SPUBLISH, called per channel
// with the KEYS/ARGV its header describes (logical mode: origin '', growing order keys).
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import Redis, { Cluster } from "ioredis";
import { historyKey, metaKey, stateKey } from "../src";
import { freeClusterPort, repoRoot, tempDir, waitFor } from "./harness";

const run = promisify(execFile);
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** One redis-server of the cluster. */
export class ClusterNode {
  proc: ChildProcess | undefined;
  id = "";

  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extra: string[],
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", {
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
      commandTimeout: 5_000, // a stopped (SIGSTOP) node answers nothing
    });
    client.on("error", () => {});
    return client;
  }

  /** Runs one command on this node alone. */
  async call(...args: (string | number)[]): Promise<unknown> {
    const client = this.client();
    try {
      return await client.call(String(args[0]), ...args.slice(1).map(String));
    } finally {
      client.disconnect();
    }
  }

  async start(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir];
    args.push("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--save", "");
    args.push("--logfile", join(this.dir, "redis.log"), ...this.extra);
    const proc = spawn("redis-server", args, { stdio: "ignore" });
    children.add(proc);
    proc.once("exit", () => children.delete(proc));
    this.proc = proc;
    await waitFor(`redis-server on ${this.port}`, async () => (await this.call("PING")) === "PONG", 20_000, 50);
  }

  /** SIGSTOP (a hung node) or SIGCONT, without waiting. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    this.proc?.kill(signal);
  }

  /** SIGKILL (a crashed master) or SIGTERM. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, "exit");
    proc.kill(signal);
    await exited;
  }

  /** `INFO <section>`, or `CLUSTER INFO` for "cluster". */
  async info(section: string): Promise<Record<string, string>> {
    const text = String(await this.call(...(section === "cluster" ? ["CLUSTER", "INFO"] : ["INFO", section])));
    return Object.fromEntries(text.split("\r\n").filter((l) => l.includes(":")).map((l) => l.split(":", 2)));
  }
}

export interface ClusterSpec {
  masters?: number;
  replicasPerMaster?: number;
  /** cluster-node-timeout in ms (failure detection). */
  nodeTimeout?: number;
  /** AOF on, so a restarted node keeps its data. */
  appendonly?: boolean;
}

/** N masters (and replicas) on free port pairs (see `freeClusterPort`), joined into one cluster with all 16384 slots. */
export class RedisCluster {
  private constructor(readonly nodes: ClusterNode[]) {}

  static async start(spec: ClusterSpec = {}): Promise<RedisCluster> {
    const masters = spec.masters ?? 3;
    const replicas = spec.replicasPerMaster ?? 0;
    const extra = ["--cluster-node-timeout", String(spec.nodeTimeout ?? 2000)];
    extra.push("--appendonly", spec.appendonly ? "yes" : "no");
    const nodes: ClusterNode[] = [];
    for (let i = 0; i < masters * (1 + replicas); i++) {
      nodes.push(new ClusterNode(await freeClusterPort(), tempDir("cluster-node"), extra));
    }
    await Promise.all(nodes.map((n) => n.start()));
    const create = ["--cluster", "create", ...nodes.map((n) => n.address)];
    await run("redis-cli", [...create, "--cluster-replicas", String(replicas), "--cluster-yes"]);
    const cluster = new RedisCluster(nodes);
    await cluster.waitOk();
    for (const node of nodes) node.id = String(await node.call("CLUSTER", "MYID"));
    if (replicas > 0) await cluster.waitReplicasInSync();
    return cluster;
  }

  get seeds(): string {
    return this.nodes.map((n) => n.address).join(",");
  }

  /** `redis+cluster://` URL with every node as a seed. */
  get url(): string {
    return `redis+cluster://${this.seeds}`;
  }

  running(): ClusterNode[] {
    return this.nodes.filter((n) => n.proc && n.proc.exitCode === null && n.proc.signalCode === null);
  }

  /** `cluster_state:ok` on every running node, and every node agreeing on who serves every slot. */
  async waitOk(timeoutMs = 30_000): Promise<void> {
    await waitFor("cluster_state:ok on every node", async () => {
      for (const node of this.running()) {
        if ((await node.info("cluster"))["cluster_state"] !== "ok") return false;
      }
      const views = await Promise.all(this.running().map((n) => this.slotOwners(n)));
      return views.every((v) => v === views[0]);
    }, timeoutMs, 100);
  }

  private async waitReplicasInSync(): Promise<void> {
    await waitFor("every replica linked to its master", async () => {
      for (const node of this.running()) {
        const info = await node.info("replication");
        if (info["role"] === "slave" && info["master_link_status"] !== "up") return false;
      }
      return true;
    }, 30_000, 100);
  }

  /** The node id that serves each slot range, as `node` sees it (for comparing views). */
  private async slotOwners(node: ClusterNode): Promise<string> {
    const slots = (await node.call("CLUSTER", "SLOTS")) as [number, number, [string, number, string]][];
    return slots.map(([a, b, m]) => `${a}-${b}:${m[2]}`).sort().join(",");
  }

  /** The master that serves `slot` now. */
  async ownerOf(slot: number): Promise<ClusterNode> {
    for (const node of this.running()) {
      const slots = (await node.call("CLUSTER", "SLOTS")) as [number, number, [string, number, string]][];
      const range = slots.find(([a, b]) => a <= slot && slot <= b);
      const owner = this.nodes.find((n) => n.id === range?.[2][2]);
      if (owner) return owner;
    }
    throw new Error(`no node serves slot ${slot}`);
  }

  async masters(): Promise<ClusterNode[]> {
    const out: ClusterNode[] = [];
    for (const node of this.running()) if ((await node.info("replication"))["role"] === "master") out.push(node);
    return out;
  }

  /**
   * Moves `slot` from its owner to `target` as `redis-cli --cluster reshard` does: IMPORTING on
   * the target, MIGRATING on the source, MIGRATE of its keys, then SETSLOT NODE on every master.
   * `between` runs after the slot is marked migrating and again after its keys moved.
   */
  async moveSlot(slot: number, target: ClusterNode, between: () => Promise<void> = async () => {}): Promise<void> {
    const source = await this.ownerOf(slot);
    if (source === target) throw new Error(`slot ${slot} is already on ${target.address}`);
    await target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id);
    await source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id);
    await between();
    for (;;) {
      const keys = (await source.call("CLUSTER", "GETKEYSINSLOT", slot, 1000)) as string[];
      if (keys.length === 0) break;
      await source.call("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", ...keys);
    }
    await between();
    await target.call("CLUSTER", "SETSLOT", slot, "NODE", target.id);
    await source.call("CLUSTER", "SETSLOT", slot, "NODE", target.id);
    for (const node of await this.masters()) {
      if (node !== source && node !== target) await node.call("CLUSTER", "SETSLOT", slot, "NODE", target.id);
    }
    await this.waitOk();
  }

  /** Until `replica` has everything `master` took so far. */
  async waitReplicated(master: ClusterNode, replica: ClusterNode): Promise<void> {
    const offset = Number((await master.info("replication"))["master_repl_offset"]);
    await waitFor(`${replica.address} at offset ${offset}`, async () =>
      Number((await replica.info("replication"))["slave_repl_offset"]) >= offset, 30_000, 20);
  }

  /** The replica of `master` (the first one). */
  async replicaOf(master: ClusterNode): Promise<ClusterNode> {
    for (const node of this.running()) {
      const info = await node.info("replication");
      if (info["role"] === "slave" && Number(info["master_port"]) === master.port) return node;
    }
    throw new Error(`${master.address} has no replica`);
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}

/** The channel protocol as one script (clients/testing/channel.lua), publishing with SPUBLISH as the daemon does in cluster mode. */
const SCRIPT = readFileSync(join(repoRoot, "clients", "testing", "channel.lua"), "utf8").replace(
  "redis.call('PUBLISH', ch, msg)",
  "redis.call('SPUBLISH', ch, msg)",
);
if (!SCRIPT.includes("'SPUBLISH'")) throw new Error("clients/testing/channel.lua no longer calls PUBLISH as expected");

type WithScript = Cluster & {
  sluiceChannel(...args: (string | number)[]): Promise<number[]>;
};

let n = 0;
let order = 0;

/** An event as Sluice sends it to the script (the script writes seq and epoch at its head). */
function payload(channel: string): { key: string; recordId: string; json: string } {
  const id = ++n;
  const [app, tenant, type] = channel.split(":");
  const json = JSON.stringify({
    eventId: `0/${id.toString(16).toUpperCase()}:0`,
    operation: "INSERT",
    app,
    tenantId: tenant,
    dataType: type,
    table: "public.credit_configurations",
    recordId: `k${id}`,
    data: { config_id: `k${id}` },
    timestamp: "2026-01-01T00:00:00.000000Z",
    source: { mode: "logical", lsn: `0/${id.toString(16).toUpperCase()}`, xid: id },
  });
  // Logical mode's order key: 'L' + fixed-width hex, growing with commit order on every channel.
  const key = `L${(++order).toString(16).padStart(24, "0")}`;
  return { key, recordId: `k${id}`, json };
}

/**
 * Publishes through the channel script on a cluster, the way the daemon does: one script call
 * per channel per batch, retried until Redis answers (the script drops what it already took).
 */
export class ClusterPublisher {
  readonly client: WithScript;
  /** Events acknowledged per channel. */
  readonly published = new Map<string, number>();
  retries = 0;
  private readonly chains = new Map<string, Promise<void>>();

  /**
   * `WAIT 1` after each call: what a master acknowledged is on its replica before the test
   * kills it. Turn it off once a master has no replica left (WAIT would time out each time).
   */
  waitReplicas: boolean;

  constructor(
    cluster: RedisCluster,
    private readonly options: { maxLen?: number; waitReplicas?: boolean } = {},
  ) {
    this.waitReplicas = options.waitReplicas ?? false;
    this.client = new Cluster(cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })), {
      clusterRetryStrategy: () => 100,
      retryDelayOnTryAgain: 20,
      retryDelayOnClusterDown: 100,
      retryDelayOnFailover: 100,
      redisOptions: { maxRetriesPerRequest: 2 },
    }) as WithScript;
    this.client.on("error", () => {});
    this.client.defineCommand("sluiceChannel", { numberOfKeys: 3, lua: SCRIPT });
  }

  /**
   * One batch of `count` events on `channel`; resolves once Redis acknowledged it. Calls on one
   * channel go out one after the other, as the daemon's do: logical mode's order keys must reach
   * the script in order, or it takes a later key's call as having published the earlier one.
   */
  publish(channel: string, count = 1): Promise<void> {
    const next = (this.chains.get(channel) ?? Promise.resolve()).then(() => this.publishNow(channel, count));
    this.chains.set(channel, next.catch(() => {}));
    return next;
  }

  private async publishNow(channel: string, count: number): Promise<void> {
    const args: (string | number)[] = [metaKey(channel), historyKey(channel), stateKey(channel)];
    args.push(channel, "e1", this.options.maxLen ?? 10_000, 86_400_000, "", "0");
    for (let i = 0; i < count; i++) {
      const p = payload(channel);
      args.push(p.key, p.recordId, "0", p.json);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.sluiceChannel(...args);
        if (this.waitReplicas) await this.replicated(channel);
        // A retried call answers -1 for what Redis already took: count what was handed in.
        this.published.set(channel, (this.published.get(channel) ?? 0) + count);
        return;
      } catch (error) {
        if (attempt > 600) throw error;
        this.retries++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Reads the slot map again until no slot names `node` (a master that hangs is not asked again). */
  async forget(node: ClusterNode): Promise<void> {
    await waitFor(`the publisher's slot map without ${node.address}`, async () => {
      await new Promise<void>((resolve) => this.client.refreshSlotsCache(() => resolve()));
      return !this.client.slots.some((owners) => owners?.[0] === node.address);
    }, 30_000, 100);
  }

  /** WAIT on the channel's master (the pipeline goes to the node of its key's slot). */
  private async replicated(channel: string): Promise<void> {
    const replies = await this.client.pipeline().exists(metaKey(channel)).call("WAIT", "1", "2000").exec();
    for (const [error] of replies ?? []) if (error) throw error;
  }

  /** `rounds` rounds of one event on each channel. */
  async rounds(channels: string[], rounds: number, between: (round: number) => Promise<void> = async () => {}): Promise<void> {
    for (let r = 0; r < rounds; r++) {
      await Promise.all(channels.map((ch) => this.publish(ch)));
      await between(r);
    }
  }

  stop(): void {
    this.client.disconnect();
  }
}
