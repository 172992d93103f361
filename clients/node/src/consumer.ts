import { EventEmitter } from "node:events";
import Redis, { type RedisOptions } from "ioredis";
import { ChannelWorker, type ChannelEnv } from "./channel";
import { SluiceError } from "./errors";
import { patternToRegExp } from "./pattern";
import { MemoryStore, type PositionStore } from "./store";
import type { Handler, Position, ResyncHandler, Snapshot } from "./types";

export interface ConsumerOptions {
  /** A redis:// URL or ioredis options. The consumer opens two connections: pub/sub and commands. */
  redis: string | RedisOptions;
  /** Channels to subscribe to, e.g. `crm:tenant-123:credit-configs`. */
  channels?: string[];
  /** Patterns to subscribe to, e.g. `crm:tenant-123:*`. */
  patterns?: string[];
  /** Called once per event, in seq order per channel, awaited before the next one. */
  handler: Handler;
  /** Called when the history cannot fill a gap (trimmed, expired, or Redis lost the channel). */
  onResync?: ResyncHandler;
  /** Where positions are kept across restarts. Default: in memory. */
  store?: PositionStore;
  /**
   * Where a channel with no stored position starts: `now` (the next message; default) or
   * `beginning` (whatever the history still has).
   */
  startFrom?: "now" | "beginning";
  /** eventIds remembered per channel to drop repeats and replays already applied. Default 10000. */
  dedupWindow?: number;
  /** History entries read per XRANGE. Default 1000. */
  historyBatch?: number;
  /**
   * Live messages held while handlers catch up; past it the consumer stops reading the socket
   * (Redis may then cut it off, and it catches up from history after reconnecting). Default 10000.
   */
  maxBuffered?: number;
}

export interface ConsumerEvents {
  /** Subscribed (again); `reconnect` is false the first time. */
  subscribed: [info: { reconnect: boolean }];
  /** The pub/sub connection was lost; it reconnects by itself. */
  disconnected: [];
  /** A failure the consumer retries or skips (bad message); never fatal. */
  error: [error: SluiceError];
}

/**
 * Follows Sluice's recoverable channels: subscribes, applies every event once and in order per
 * channel, fills gaps from `sluice:history:{<ch>}`, resubscribes and catches up after any
 * disconnect, and keeps each channel's (epoch, seq) in a `PositionStore`.
 */
export class SluiceConsumer extends EventEmitter<ConsumerEvents> {
  private readonly options: Required<
    Omit<ConsumerOptions, "onResync" | "redis" | "channels" | "patterns">
  > &
    ConsumerOptions;
  private readonly channels: string[];
  private readonly patterns: string[];
  private readonly matchers: RegExp[];
  private readonly workers = new Map<string, ChannelWorker>();
  private readonly env: ChannelEnv;
  private sub: Redis | undefined;
  private cmd: Redis | undefined;
  private buffered = 0;
  private paused = false;
  private subscriptions = 0;
  private stopping = false;
  private idleWaiters: (() => void)[] = [];
  private firstSubscribe: { resolve: () => void; reject: (e: unknown) => void } | undefined;

  constructor(options: ConsumerOptions) {
    super();
    this.options = {
      store: new MemoryStore(),
      startFrom: "now",
      dedupWindow: 10_000,
      historyBatch: 1_000,
      maxBuffered: 10_000,
      ...options,
    };
    this.channels = [...new Set(options.channels ?? [])];
    this.patterns = [...new Set(options.patterns ?? [])];
    if (this.channels.length + this.patterns.length === 0) {
      throw new SluiceError("give at least one channel or pattern");
    }
    this.matchers = this.patterns.map(patternToRegExp);
    const self = this;
    this.env = {
      get redis() {
        return self.commands();
      },
      handler: this.options.handler,
      onResync: this.options.onResync,
      reportError: (error) => this.report(error),
      store: this.options.store,
      startFrom: this.options.startFrom,
      dedupWindow: this.options.dedupWindow,
      historyBatch: this.options.historyBatch,
      taken: () => this.taken(),
      idle: () => this.checkIdle(),
      stopped: () => this.stopping,
    };
  }

  /**
   * Loads the stored positions, connects, subscribes, and catches up every known channel (in the
   * background: `idle()` tells when it is done). Waits for Redis if it is not up yet.
   */
  async start(): Promise<void> {
    if (this.sub) throw new SluiceError("already started");
    const stored = await this.options.store.load();
    for (const [channel, position] of stored) {
      if (this.covers(channel)) this.worker(channel, position);
    }
    const base: RedisOptions =
      typeof this.options.redis === "string" ? {} : { ...this.options.redis };
    const connection: RedisOptions = {
      ...base,
      lazyConnect: true,
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    };
    const make = (extra: RedisOptions): Redis =>
      typeof this.options.redis === "string"
        ? new Redis(this.options.redis, { ...connection, ...extra })
        : new Redis({ ...connection, ...extra });
    this.cmd = make({ connectionName: "sluice-consumer:cmd" });
    this.sub = make({ connectionName: "sluice-consumer:sub", autoResubscribe: false });
    this.cmd.on("error", () => {}); // ioredis reconnects; failed reads are retried per channel
    this.sub.on("error", () => {});
    this.sub.on("ready", () => void this.subscribe());
    this.sub.on("close", () => {
      this.paused = false;
      if (!this.stopping) this.emit("disconnected");
    });
    this.sub.on("message", (channel: string, raw: string) => this.dispatch(channel, raw));
    this.sub.on("pmessage", (_p: string, channel: string, raw: string) => this.dispatch(channel, raw));
    const subscribed = new Promise<void>((resolve, reject) => {
      this.firstSubscribe = { resolve, reject };
    });
    // A Redis that is not up yet is retried (retryStrategy): start() resolves once subscribed.
    this.cmd.connect().catch(() => {});
    this.sub.connect().catch(() => {});
    await subscribed;
  }

  /** Stops reading, lets the event in progress finish, flushes the store, disconnects. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.sub?.disconnect();
    await this.waitFor(() => ![...this.workers.values()].some((w) => w.active), 10_000);
    await this.options.store.flush?.();
    this.cmd?.disconnect();
  }

  /** The last applied (epoch, seq) of a channel. */
  position(channel: string): Position | undefined {
    return this.workers.get(channel)?.position;
  }

  /** Every known channel's position. */
  positions(): Map<string, Position> {
    const out = new Map<string, Position>();
    for (const [channel, worker] of this.workers) {
      if (worker.position) out.set(channel, worker.position);
    }
    return out;
  }

  /**
   * For routes with `state = true`: reads `sluice:state:{<ch>}` and its seq in one MULTI and
   * moves the channel there, between two events. `load` (awaited in the channel's order, before
   * any later event reaches the handler) replaces the application's copy with the snapshot.
   */
  bootstrap(channel: string, load?: (snapshot: Snapshot) => void | Promise<void>): Promise<Snapshot> {
    const worker = this.worker(channel, undefined);
    return worker.enqueue(async () => {
      const snapshot = await worker.bootstrapNow();
      await load?.(snapshot);
      return snapshot;
    });
  }

  /** Resolves when every channel has applied all it has received (for tests and tools). */
  idle(): Promise<void> {
    if (!this.busy()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private busy(): boolean {
    for (const worker of this.workers.values()) if (worker.busy) return true;
    return false;
  }

  private commands(): Redis {
    if (!this.cmd) throw new SluiceError("not started");
    return this.cmd;
  }

  private covers(channel: string): boolean {
    return this.channels.includes(channel) || this.matchers.some((m) => m.test(channel));
  }

  private worker(channel: string, position: Position | undefined): ChannelWorker {
    let worker = this.workers.get(channel);
    if (!worker) {
      worker = new ChannelWorker(channel, this.env, position);
      this.workers.set(channel, worker);
    }
    return worker;
  }

  /** On every (re)connect: subscribe, then read each known channel's history past its position. */
  private async subscribe(): Promise<void> {
    const sub = this.sub as Redis;
    try {
      if (this.channels.length) await sub.subscribe(...this.channels);
      if (this.patterns.length) await sub.psubscribe(...this.patterns);
    } catch (error) {
      // The connection dropped again; the next "ready" subscribes.
      this.report(new SluiceError("subscribing failed", { cause: error }));
      return;
    }
    for (const channel of this.channels) this.worker(channel, undefined);
    for (const worker of this.workers.values()) worker.catchUp();
    this.emit("subscribed", { reconnect: this.subscriptions++ > 0 });
    this.firstSubscribe?.resolve();
    this.firstSubscribe = undefined;
  }

  private dispatch(channel: string, raw: string): void {
    if (this.stopping) return;
    this.worker(channel, undefined).deliver(raw);
    if (++this.buffered >= this.options.maxBuffered && !this.paused) {
      this.paused = true;
      this.sub?.stream?.pause();
    }
  }

  private taken(): void {
    this.buffered--;
    if (this.paused && this.buffered <= this.options.maxBuffered / 2) {
      this.paused = false;
      this.sub?.stream?.resume();
    }
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0 || this.busy()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private report(error: SluiceError): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
  }

  private async waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }
}
