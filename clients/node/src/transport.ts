import Redis, { type Cluster, type RedisOptions } from "ioredis";
import type { UnsubscribedInfo } from "./cluster/subscriber";
import { SluiceError } from "./errors";

/** What reads history, meta and state: one Redis, or the cluster (by the channel's slot). */
export type Commands = Redis | Cluster;

/** What a transport tells the consumer. */
export interface TransportEvents {
  message(channel: string, raw: string): void;
  /** Subscribed (again): catch these channels up, or every channel when undefined. */
  subscribed(channels: string[] | undefined): void;
  /**
   * The connection that receives messages was lost; it reconnects by itself. `flowing`: the
   * new connection is not paused (the consumer pauses it again if its buffer is still full).
   */
  disconnected(flowing: boolean): void;
  /** Cluster: Redis or a lost node unsubscribed channels; they are being subscribed again. */
  unsubscribed(info: UnsubscribedInfo): void;
  /** Cluster: a pattern's scan found channels (`initial`: the scan at start). */
  discovered(channels: string[], initial: boolean): void;
  error(error: SluiceError): void;
}

/** How the consumer subscribes and reads: a single Redis, or a Redis Cluster. */
export interface Transport {
  readonly commands: Commands;
  /**
   * Connects, runs `prepare` (reads that must come before subscribing), subscribes; resolves
   * once the first subscriptions are in place.
   */
  start(prepare: () => Promise<void>): Promise<void>;
  /** Subscribe to these channels too (cluster: channels found by a pattern's scan). */
  add(channels: string[]): void;
  /** Stop reading messages (the buffer is full), and go on. */
  pause(): void;
  resume(): void;
  /** Stop receiving messages. */
  stopReceiving(): void;
  /** Close the command connection. */
  close(): void;
}

export const RETRY: RedisOptions = {
  lazyConnect: true,
  maxRetriesPerRequest: null,
  retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
};

/** One Redis: SUBSCRIBE and PSUBSCRIBE on one connection, commands on another. */
export class StandaloneTransport implements Transport {
  readonly commands: Redis;
  private readonly sub: Redis;
  private firstSubscribe: (() => void) | undefined;
  private stopping = false;

  constructor(
    url: string | undefined,
    options: RedisOptions,
    private readonly channels: string[],
    private readonly patterns: string[],
    private readonly events: TransportEvents,
  ) {
    const make = (extra: RedisOptions): Redis =>
      url === undefined ? new Redis({ ...options, ...RETRY, ...extra }) : new Redis(url, { ...RETRY, ...extra });
    this.commands = make({ connectionName: "sluice-consumer:cmd" });
    this.sub = make({ connectionName: "sluice-consumer:sub", autoResubscribe: false });
    this.commands.on("error", () => {}); // ioredis reconnects; failed reads are retried per channel
    this.sub.on("error", () => {});
    this.sub.on("ready", () => void this.subscribe());
    this.sub.on("close", () => {
      if (!this.stopping) this.events.disconnected(true);
    });
    this.sub.on("message", (channel: string, raw: string) => this.events.message(channel, raw));
    this.sub.on("pmessage", (_p: string, channel: string, raw: string) => this.events.message(channel, raw));
  }

  async start(prepare: () => Promise<void>): Promise<void> {
    const subscribed = new Promise<void>((resolve) => (this.firstSubscribe = resolve));
    // A Redis that is not up yet is retried (retryStrategy): start() resolves once subscribed.
    this.commands.connect().catch(() => {});
    await prepare();
    this.sub.connect().catch(() => {});
    return subscribed;
  }

  add(): void {
    // PSUBSCRIBE covers new channels by itself.
  }

  pause(): void {
    this.sub.stream?.pause();
  }

  resume(): void {
    this.sub.stream?.resume();
  }

  stopReceiving(): void {
    this.stopping = true;
    this.sub.disconnect();
  }

  close(): void {
    this.commands.disconnect();
  }

  /** On every (re)connect: subscribe, then have every known channel caught up. */
  private async subscribe(): Promise<void> {
    try {
      if (this.channels.length) await this.sub.subscribe(...this.channels);
      if (this.patterns.length) await this.sub.psubscribe(...this.patterns);
    } catch (error) {
      // The connection dropped again; the next "ready" subscribes.
      this.events.error(new SluiceError("subscribing failed", { cause: error }));
      return;
    }
    this.events.subscribed(undefined);
    this.firstSubscribe?.();
    this.firstSubscribe = undefined;
  }
}
