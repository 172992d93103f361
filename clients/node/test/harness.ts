// Real servers for the tests: a redis-server of our own on a free port, the repository's
// `stack` example (throwaway PostgreSQL with the seed tables and a sluice.toml), `sluice run`.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import Redis from "ioredis";

export const repoRoot = resolve(__dirname, "..", "..", "..");
export const stackBin =
  process.env.SLUICE_STACK ?? join(repoRoot, "target", "debug", "examples", "stack");

const children = new Set<ChildProcess>();
const dirs: string[] = [];
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
  // SLUICE_KEEP_TMP=1 keeps the logs (sluice's, redis-server's) to look at after a failure.
  if (!process.env.SLUICE_KEEP_TMP) for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `sluice-node-${name}-`));
  dirs.push(dir);
  return dir;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

async function bindable(port: number): Promise<boolean> {
  const server = createServer();
  server.listen(port, "127.0.0.1");
  try {
    await Promise.race([once(server, "listening"), once(server, "error").then(([e]) => Promise.reject(e))]);
  } catch {
    return false;
  }
  server.close();
  await once(server, "close");
  return true;
}

const clusterPortsTaken = new Set<number>();

/**
 * A port P for a cluster node whose bus port P + 10000 is free too. Both lie below Linux's
 * ephemeral range (32768 and up), where free ports picked by binding port 0, and outgoing
 * connections, would take them now and then: a node whose bus port is taken never starts.
 */
export async function freeClusterPort(): Promise<number> {
  for (let i = 0; i < 1000; i++) {
    const port = 20000 + Math.floor(Math.random() * 2768);
    if (clusterPortsTaken.has(port)) continue;
    if ((await bindable(port)) && (await bindable(port + 10000))) {
      clusterPortsTaken.add(port);
      return port;
    }
  }
  throw new Error("no free port pair for a cluster node");
}

/** Polls `check` until it returns a truthy value or the deadline passes (then throws `what`). */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 60_000,
  everyMs = 25,
): Promise<NonNullable<Awaited<T>>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<Awaited<T>>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill(signal);
  await exited;
}

/** A redis-server of the test's own; with `persistent`, AOF in its own directory. */
export class RedisServer {
  private proc: ChildProcess | undefined;
  readonly dir: string;
  /** The server's log (kept across restarts). */
  readonly logfile = join(tempDir("redis-log"), "redis.log");

  private constructor(
    readonly port: number,
    readonly persistent: boolean,
  ) {
    this.dir = tempDir("redis");
  }

  static async start(options: { persistent?: boolean; port?: number } = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? (await freePort()), options.persistent ?? false);
    await server.boot();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  client(): Redis {
    return new Redis(this.url, { maxRetriesPerRequest: null, lazyConnect: false });
  }

  private async boot(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--dir", this.dir];
    args.push("--appendonly", this.persistent ? "yes" : "no", "--logfile", this.logfile);
    this.proc = track(spawn("redis-server", args, { stdio: ["ignore", "inherit", "inherit"] }));
    const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on("error", () => {});
    try {
      await waitFor("redis-server to answer PING", async () => {
        if (probe.status !== "ready") await probe.connect().catch(() => {});
        return (await probe.ping()) === "PONG";
      }, 20_000);
    } finally {
      probe.disconnect();
    }
  }

  /** Stops it (SIGTERM: with AOF, everything written is kept) and starts it again on the same port. */
  async restart(options: { keepData: boolean }): Promise<void> {
    await stopChild(this.proc, "SIGTERM");
    if (!options.keepData) rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    await this.boot();
  }

  log(): string {
    return existsSync(this.logfile) ? readFileSync(this.logfile, "utf8") : "";
  }

  async stop(): Promise<void> {
    await stopChild(this.proc, "SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface StackInfo {
  database_url: string;
  redis_url: string;
  config: string;
  sluice: string;
}

/** `examples/stack`: PostgreSQL with the seed tables, set up, and a sluice.toml for `redis`. */
export class Stack {
  private constructor(
    private readonly proc: ChildProcess,
    readonly info: StackInfo,
  ) {}

  static async start(
    redisUrl: string,
    options: { mode?: "trigger" | "logical"; configExtra?: string } = {},
  ): Promise<Stack> {
    if (!existsSync(stackBin)) {
      throw new Error(
        `${stackBin} is missing: run \`cargo build --bins --examples\` at the repository root first`,
      );
    }
    const args = ["--mode", options.mode ?? "trigger", "--redis", redisUrl];
    if (options.configExtra) {
      const path = join(tempDir("extra"), "extra.toml");
      writeFileSync(path, options.configExtra);
      args.push("--config-extra", path);
    }
    const proc = track(spawn(stackBin, args, { stdio: ["pipe", "pipe", "inherit"] }));
    const lines = createInterface({ input: proc.stdout! });
    const [line] = (await Promise.race([
      once(lines, "line"),
      once(proc, "exit").then(([code]) => {
        throw new Error(`stack exited with ${code} before printing its servers`);
      }),
    ])) as [string];
    return new Stack(proc, JSON.parse(line) as StackInfo);
  }

  async psql(sql: string): Promise<void> {
    await promisify(execFile)("psql", [this.info.database_url, "-v", "ON_ERROR_STOP=1", "-qc", sql]);
  }

  /** A copy of the config with `text` appended (e.g. another `[history]`). */
  configWith(text: string): string {
    const path = join(tempDir("config"), "sluice.toml");
    writeFileSync(path, `${readFileSync(this.info.config, "utf8")}\n${text}\n`);
    return path;
  }

  async stop(): Promise<void> {
    const exited = once(this.proc, "exit");
    this.proc.stdin?.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    await stopChild(this.proc, "SIGKILL");
  }
}

/** `sluice run --config <config>` as a child process, output in a log file. */
export class SluiceRun {
  private proc: ChildProcess | undefined;
  readonly log: string;

  constructor(
    private readonly stack: Stack,
    private config = stack.info.config,
  ) {
    this.log = join(tempDir("sluice-log"), "sluice.log");
  }

  start(config?: string): void {
    if (config) this.config = config;
    appendFileSync(this.log, `--- start ${new Date().toISOString()} ${this.config}\n`);
    const out = openSync(this.log, "a");
    this.proc = track(
      spawn(this.stack.info.sluice, ["run", "--config", this.config], {
        stdio: ["ignore", out, out],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
      }),
    );
  }

  /** `kill -9`. */
  async kill(): Promise<void> {
    await stopChild(this.proc, "SIGKILL");
  }

  async stop(): Promise<void> {
    await stopChild(this.proc, "SIGTERM");
  }
}
