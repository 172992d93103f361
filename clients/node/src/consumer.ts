import { EventEmitter } from "node:events";
import { ChannelWorker, type ChannelEnv } from "./channel";
import type { UnsubscribedInfo } from "./cluster/subscriber";
import { ClusterTransport } from "./cluster/transport";
import { resolveTarget, type RedisTarget } from "./connection";
import { SluiceError } from "./errors";
import { patternToRegExp } from "./pattern";
import { MemoryStore, type PositionStore } from "./store";
import { StandaloneTransport, type Commands, type Transport, type TransportEvents } from "./transport";
import type { Handler, Position, ResyncHandler, Snapshot } from "./types";

export interface ConsumerOptions {
  /**
   * A `redis://` URL or ioredis options (two connections: pub/sub and commands); or a Redis
   * Cluster: `redis+cluster://host:port,host:port` (`rediss+cluster://` for TLS) or
   * `{ startupNodes, clusterOptions }` (commands through ioredis's Cluster, and one sharded
   * pub/sub connection per master that serves subscribed channels).
   */
  redis: RedisTarget;
  /** `cluster`: the `redis` URL or options name a seed node of a Redis Cluster. Default: from `redis`. */
  mode?: "standalone" | "cluster";
  /** Channels to subscribe to, e.g. `crm:tenant-123:credit-configs`. */
  channels?: string[];
  /**
   * Patterns to subscribe to, e.g. `crm:tenant-123:*`. On a cluster (no pattern subscriptions in
   * sharded pub/sub), the channels are found by scanning for their meta keys every
   * `discoveryInterval` and read from the start of their history.
   */
  patterns?: string[];
  /**
   * Cluster mode: how often (ms) the masters are scanned for new channels the patterns cover,
   * and the slot map is read again (a master that hangs sends no push). Default 5000.
   */
  discoveryInterval?: number;
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
  /**
   * Subscribed (again); `reconnect` is false the first time. Cluster mode: per group of
   * channels subscribed on a node (`channels`); `reconnect` when one was subscribed before.
   */
  subscribed: [info: { reconnect: boolean; channels?: string[] }];
  /** The pub/sub connection (cluster: a node's) was lost; it reconnects by itself. */
  disconnected: [];
  /**
   * Cluster mode: channels stopped being subscribed on a node: `slot-moved` (Redis sent
   * `sunsubscribe`: resharding, or the node is no longer the slot's master; or the slot map
   * names another master), `node-lost`, or `redirected`. They are subscribed again on the slot's master and caught up from history.
   */
  unsubscribed: [info: UnsubscribedInfo];
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
    Omit<ConsumerOptions, "onResync" | "redis" | "channels" | "patterns" | "mode">
  > &
    ConsumerOptions;
  private readonly channels: string[];
  private readonly patterns: string[];
  private readonly matchers: RegExp[];
  private readonly workers = new Map<string, ChannelWorker>();
  private readonly env: ChannelEnv;
  private transport: Transport | undefined;
  private buffered = 0;
  private paused = false;
  private subscribeCount = 0;
  private readonly everSubscribed = new Set<string>();
  private stopping = false;
  private idleWaiters: (() => void)[] = [];

  constructor(options: ConsumerOptions) {
    super();
    this.options = {
      store: new MemoryStore(),
      startFrom: "now",
      dedupWindow: 10_000,
      historyBatch: 1_000,
      maxBuffered: 10_000,
      discoveryInterval: 5_000,
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
    if (this.transport) throw new SluiceError("already started");
    const target = resolveTarget(this.options.redis, this.options.mode);
    const stored = await this.options.store.load();
    for (const [channel, position] of stored) {
      if (this.covers(channel)) this.worker(channel, position);
    }
    for (const channel of this.channels) this.worker(channel, undefined);
    const events = this.transportEvents();
    this.transport =
      target.mode === "standalone"
        ? new StandaloneTransport(target.url, target.options, this.channels, this.patterns, events)
        : new ClusterTransport(
            {
              ...target,
              channels: [...this.workers.keys()],
              patterns: this.patterns,
              covers: (channel) => this.covers(channel),
              discoveryIntervalMs: this.options.discoveryInterval,
            },
            events,
          );
    await this.transport.start(() => this.settleStarts([...this.workers.values()]));
  }

  /** `startFrom: "now"` is where each new channel stands before it is subscribed. */
  private async settleStarts(workers: ChannelWorker[]): Promise<void> {
    await Promise.all(workers.map((w) => w.settleStart()));
  }

  /** Stops reading, lets the event in progress finish, flushes the store, disconnects. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.transport?.stopReceiving();
    await this.waitFor(() => ![...this.workers.values()].some((w) => w.active), 10_000);
    await this.options.store.flush?.();
    this.transport?.close();
  }

  /** The last applied (epoch, seq) of a channel. */
  position(channel: string): Position | undefined {
    return this.workers.get(channel)?.position;
  }

  /** Cluster mode: the nodes the consumer has a subscriber connection to, and their channel counts. */
  subscriptions(): Map<string, number> {
    return this.transport instanceof ClusterTransport ? this.transport.connections() : new Map();
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

  private commands(): Commands {
    if (!this.transport) throw new SluiceError("not started");
    return this.transport.commands;
  }

  private covers(channel: string): boolean {
    return this.channels.includes(channel) || this.matchers.some((m) => m.test(channel));
  }

  private worker(
    channel: string,
    position: Position | undefined,
    startFrom = this.options.startFrom,
  ): ChannelWorker {
    let worker = this.workers.get(channel);
    if (!worker) {
      worker = new ChannelWorker(channel, this.env, position, startFrom);
      this.workers.set(channel, worker);
    }
    return worker;
  }

  private transportEvents(): TransportEvents {
    return {
      message: (channel, raw) => this.dispatch(channel, raw),
      subscribed: (channels) => this.subscribed(channels),
      disconnected: (flowing) => {
        if (flowing) this.paused = false;
        if (!this.stopping) this.emit("disconnected");
      },
      unsubscribed: (info) => this.emit("unsubscribed", info),
      discovered: (channels, initial) => {
        // Found at start: like any channel, from `startFrom`. Found later: the channel is new,
        // so its history from the beginning is what was published before it was found.
        const fresh = channels.filter((c) => !this.workers.has(c));
        const from = initial ? this.options.startFrom : "beginning";
        const workers = fresh.map((channel) => this.worker(channel, undefined, from));
        void this.settleStarts(workers).then(() => this.transport?.add(channels));
      },
      error: (error) => this.report(error),
    };
  }

  /** After a (re)subscription: read each channel's history past its position (all: standalone). */
  private subscribed(channels: string[] | undefined): void {
    const workers = channels === undefined ? [...this.workers.values()] : channels.map((c) => this.worker(c, undefined));
    for (const worker of workers) worker.catchUp();
    const reconnect =
      channels === undefined ? this.subscribeCount > 0 : channels.some((c) => this.everSubscribed.has(c));
    this.subscribeCount++;
    for (const channel of channels ?? []) this.everSubscribed.add(channel);
    this.emit("subscribed", channels === undefined ? { reconnect } : { reconnect, channels });
  }

  private dispatch(channel: string, raw: string): void {
    if (this.stopping) return;
    this.worker(channel, undefined).deliver(raw);
    if (++this.buffered >= this.options.maxBuffered && !this.paused) {
      this.paused = true;
      this.transport?.pause();
    }
  }

  private taken(): void {
    this.buffered--;
    if (this.paused && this.buffered <= this.options.maxBuffered / 2) {
      this.paused = false;
      this.transport?.resume();
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
