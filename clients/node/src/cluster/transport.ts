import { Cluster, type ClusterOptions } from "ioredis";
import { SluiceError } from "../errors";
import type { Transport, TransportEvents } from "../transport";
import { Discovery } from "./discovery";
import type { LinkAuth, NodeAddress } from "./link";
import { ClusterSubscriber } from "./subscriber";
import type { NatMap } from "./topology";
import { nodeKey } from "./topology";

export interface ClusterTransportOptions {
  seeds: NodeAddress[];
  auth: LinkAuth;
  natMap: NatMap | undefined;
  clusterOptions: ClusterOptions;
  /** Channels to subscribe to from the start (given, and stored ones the patterns cover). */
  channels: string[];
  patterns: string[];
  covers(channel: string): boolean;
  discoveryIntervalMs: number;
}

/**
 * A Redis Cluster: reads through ioredis's `Cluster` (MOVED/ASK followed, each channel's keys
 * in its slot), messages through a `ClusterSubscriber` (SSUBSCRIBE on each slot's master), and
 * patterns through `Discovery`.
 */
export class ClusterTransport implements Transport {
  readonly commands: Cluster;
  private readonly subscriber: ClusterSubscriber;
  private readonly discovery: Discovery | undefined;
  /** Channels start() waits for. */
  private readonly waiting = new Set<string>();
  private discovering: boolean;
  private stopped = false;
  private ready: (() => void) | undefined;

  constructor(
    private readonly options: ClusterTransportOptions,
    private readonly events: TransportEvents,
  ) {
    const given = options.clusterOptions;
    this.commands = new Cluster(options.seeds, {
      // Keep retrying through a whole-cluster outage; reads are retried per channel.
      clusterRetryStrategy: (times) => Math.min(100 * times, 2000),
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 50,
      // ioredis reads the slot map only on MOVED and reconnects: a master that hangs says neither.
      slotsRefreshInterval: options.discoveryIntervalMs,
      ...given,
      scaleReads: "master",
      lazyConnect: true,
      // A read on a master that hangs fails after 5 s and is retried where the slot map says.
      redisOptions: { connectionName: "sluice-consumer:cmd", commandTimeout: 5_000, ...given.redisOptions },
    });
    this.commands.on("error", () => {});
    this.subscriber = new ClusterSubscriber(
      {
        seeds: options.seeds.map(nodeKey),
        auth: options.auth,
        natMap: options.natMap,
        refreshIntervalMs: options.discoveryIntervalMs,
      },
      {
        message: (channel, raw) => events.message(channel, raw),
        subscribed: (channels) => this.subscribed(channels),
        unsubscribed: (info) => {
          events.unsubscribed(info);
          if (info.reason === "node-lost") events.disconnected(false); // new links start paused if need be
        },
        failed: (error) => events.error(new SluiceError(`Redis Cluster: ${error.message}`, { cause: error })),
      },
    );
    this.discovering = options.patterns.length > 0;
    if (this.discovering) {
      this.discovery = new Discovery({
        cluster: this.commands,
        patterns: options.patterns,
        covers: options.covers,
        intervalMs: options.discoveryIntervalMs,
        found: (channels, initial) => {
          if (initial) for (const channel of channels) this.waiting.add(channel);
          events.discovered(channels, initial);
        },
        failed: (error) => events.error(new SluiceError("discovering the patterns' channels failed", { cause: error })),
      });
    }
  }

  async start(prepare: () => Promise<void>): Promise<void> {
    for (const channel of this.options.channels) this.waiting.add(channel);
    // Waits for the cluster if it is not up yet.
    const connected = new Promise<void>((resolve) => {
      this.commands.once("ready", resolve);
      this.ready = resolve; // stop() before the cluster answered
    });
    this.commands.connect().catch(() => {});
    await connected;
    this.ready = undefined;
    await prepare();
    if (this.stopped) return;
    const ready = new Promise<void>((resolve) => (this.ready = resolve));
    this.subscriber.add(this.options.channels);
    this.subscriber.start();
    if (this.discovery) {
      await this.discovery.start();
      this.discovering = false;
    }
    this.checkReady();
    await ready;
  }

  add(channels: string[]): void {
    this.subscriber.add(channels);
  }

  pause(): void {
    this.subscriber.pause();
  }

  resume(): void {
    this.subscriber.resume();
  }

  stopReceiving(): void {
    this.stopped = true;
    this.discovery?.stop();
    this.subscriber.stop();
    this.ready?.();
  }

  close(): void {
    this.commands.disconnect();
  }

  /** The nodes with a subscriber connection and their channel counts. */
  connections(): Map<string, number> {
    return this.subscriber.connections();
  }

  private subscribed(channels: string[]): void {
    for (const channel of channels) this.waiting.delete(channel);
    this.events.subscribed(channels);
    this.checkReady();
  }

  private checkReady(): void {
    if (this.ready && !this.discovering && this.waiting.size === 0) {
      this.ready();
      this.ready = undefined;
    }
  }
}
