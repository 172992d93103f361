import { keySlot } from "../slot";
import { NodeLink, type LinkAuth, type LinkEvents } from "./link";
import { fetchTopology, nodeKey, parseNodeKey, type NatMap, type Topology } from "./topology";

/** Why channels stopped being subscribed on a node. */
export type UnsubscribeReason =
  /**
   * Redis sent `sunsubscribe` (the slot moved, or the node stopped being its master), or the
   * slot map read again names another master (`detail` says so: a node that hangs says nothing).
   */
  | "slot-moved"
  /** The connection to the node was lost (a crash, a failover, a network cut). */
  | "node-lost"
  /** The node answered MOVED (the map was stale) or refused for now (CLUSTERDOWN). */
  | "redirected";

export interface UnsubscribedInfo {
  channels: string[];
  node: string;
  reason: UnsubscribeReason;
  /** What Redis said, for `redirected` and `node-lost`. */
  detail?: string;
}

export interface ClusterSubscriberEvents {
  message(channel: string, raw: string): void;
  /** Channels subscribed (again) on the node that serves their slot: catch them up. */
  subscribed(channels: string[]): void;
  unsubscribed(info: UnsubscribedInfo): void;
  /** The topology could not be read, a node refused a subscription or dropped: retried with backoff. */
  failed(error: Error): void;
}

export interface ClusterSubscriberOptions {
  seeds: string[];
  auth: LinkAuth;
  natMap?: NatMap;
  /**
   * How often the slot map is read again even without a push or a lost connection: a master
   * that hangs, or is cut off from the cluster but not from the consumer, says nothing.
   */
  refreshIntervalMs: number;
}

const BACKOFF_MS = [0, 50, 100, 250, 500, 1000];

/**
 * Keeps every wanted channel SSUBSCRIBEd on the master that serves its slot, one connection per
 * node with channels. When Redis unsubscribes a channel (slot moved), a node is lost, or a
 * node redirects, the topology is read again and the channel subscribed where it now lives;
 * `subscribed` then tells the consumer to catch the channel up from history.
 */
export class ClusterSubscriber implements LinkEvents {
  private readonly wanted = new Set<string>();
  private readonly placed = new Map<string, NodeLink>();
  private readonly links = new Map<string, NodeLink>();
  private topology: Topology | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly periodic: NodeJS.Timeout;
  private refreshNeeded = true;
  private attempt = 0;
  private busy = false;
  private paused = false;
  private stopped = false;

  constructor(
    private readonly options: ClusterSubscriberOptions,
    private readonly events: ClusterSubscriberEvents,
  ) {
    this.periodic = setInterval(() => this.schedule(true, 0), options.refreshIntervalMs);
  }

  /** Subscribe to these channels too (on their slots' nodes). */
  add(channels: string[]): void {
    let added = false;
    for (const channel of channels) {
      if (this.wanted.has(channel)) continue;
      this.wanted.add(channel);
      added = true;
    }
    if (added) this.schedule(false, 0);
  }

  has(channel: string): boolean {
    return this.wanted.has(channel);
  }

  start(): void {
    this.schedule(true, 0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.periodic);
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this.placed.clear();
  }

  pause(): void {
    this.paused = true;
    for (const link of this.links.values()) link.pause();
  }

  resume(): void {
    this.paused = false;
    for (const link of this.links.values()) link.resume();
  }

  /** The nodes this subscriber has a connection to, with their channel counts (for tools and tests). */
  connections(): Map<string, number> {
    return new Map([...this.links].map(([key, link]) => [key, link.channels.size]));
  }

  // LinkEvents

  message(channel: string, raw: string): void {
    this.events.message(channel, raw);
  }

  subscribed(link: NodeLink, channels: string[]): void {
    const mine = channels.filter((c) => this.placed.get(c) === link);
    this.attempt = 0;
    if (mine.length) this.events.subscribed(mine);
  }

  rejected(link: NodeLink, channels: string[], error: string): void {
    this.unplace(link, channels);
    this.events.unsubscribed({ channels, node: link.key, reason: "redirected", detail: error });
    const moved = /^(?:MOVED|ASK) (\d+) (\S+)$/.exec(error);
    if (moved && this.topology) {
      this.topology.owners[Number(moved[1])] = this.mapped(moved[2]);
      this.schedule(false, this.backoff());
    } else {
      this.events.failed(new Error(`${link.key} refused SSUBSCRIBE: ${error}`));
      this.schedule(true, this.backoff());
    }
    this.dropIfIdle(link);
  }

  lost(link: NodeLink, channel: string): void {
    this.unplace(link, [channel]);
    this.events.unsubscribed({ channels: [channel], node: link.key, reason: "slot-moved" });
    this.schedule(true, 0);
    this.dropIfIdle(link);
  }

  closed(link: NodeLink, error: Error | undefined): void {
    if (this.links.get(link.key) === link) this.links.delete(link.key);
    const channels = [...this.placed].filter(([, l]) => l === link).map(([c]) => c);
    if (this.stopped || channels.length === 0) return;
    this.unplace(link, channels);
    this.events.unsubscribed({ channels, node: link.key, reason: "node-lost", detail: error?.message });
    if (error) this.events.failed(new Error(`${link.key}: ${error.message}`, { cause: error }));
    this.schedule(true, this.backoff());
  }

  // Reconciling

  private backoff(): number {
    return BACKOFF_MS[Math.min(++this.attempt, BACKOFF_MS.length - 1)];
  }

  private mapped(key: string): string {
    const target = this.options.natMap?.[key];
    return target ? nodeKey(target) : key;
  }

  private unplace(link: NodeLink, channels: string[]): void {
    for (const channel of channels) {
      if (this.placed.get(channel) === link) this.placed.delete(channel);
    }
  }

  /** A node left with no channel does not keep a connection. */
  private dropIfIdle(link: NodeLink): void {
    if (link.channels.size > 0) return;
    if (this.links.get(link.key) === link) this.links.delete(link.key);
    link.close();
  }

  /** One pending run at a time; `refresh` asks for the topology first. */
  private schedule(refresh: boolean, delayMs: number): void {
    if (this.stopped) return;
    this.refreshNeeded ||= refresh;
    if (this.timer || this.busy) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.reconcile();
    }, delayMs);
  }

  private async reconcile(): Promise<void> {
    this.busy = true;
    try {
      if (this.refreshNeeded || !this.topology) {
        this.refreshNeeded = false;
        this.topology = await fetchTopology(this.candidates(), this.options.auth, this.options.natMap);
      }
      if (!this.stopped && this.place(this.topology)) this.refreshNeeded = true;
    } catch (error) {
      this.refreshNeeded = true;
      this.events.failed(error as Error);
      this.busy = false;
      this.schedule(true, this.backoff());
      return;
    }
    this.busy = false;
    // Anything that arrived meanwhile (more channels, another move) gets its own run.
    if (this.refreshNeeded) this.schedule(true, this.backoff());
    else if ([...this.wanted].some((c) => !this.placed.has(c))) this.schedule(false, 0);
  }

  private candidates(): string[] {
    return [...new Set([...(this.topology?.nodes ?? []), ...this.options.seeds])];
  }

  /**
   * Channels subscribed on a node the slot map no longer names for their slot leave it (the
   * old subscription is left to close with its node). They are placed again right after.
   */
  private relocate(topology: Topology): void {
    const moved = new Map<NodeLink, string[]>();
    for (const [channel, link] of this.placed) {
      const owner = topology.owners[keySlot(channel)];
      if (owner && owner !== link.key) moved.set(link, [...(moved.get(link) ?? []), channel]);
    }
    for (const [link, channels] of moved) {
      this.unplace(link, channels);
      for (const channel of channels) link.channels.delete(channel);
      const detail = "the slot map names another master now";
      this.events.unsubscribed({ channels, node: link.key, reason: "slot-moved", detail });
      this.dropIfIdle(link);
    }
  }

  /** SSUBSCRIBE every wanted channel not placed yet, grouped by node and slot. True if a slot has no master. */
  private place(topology: Topology): boolean {
    this.relocate(topology);
    const groups = new Map<string, Map<number, string[]>>();
    let orphaned = false;
    for (const channel of this.wanted) {
      if (this.placed.has(channel)) continue;
      const slot = keySlot(channel);
      const owner = topology.owners[slot];
      if (!owner) {
        orphaned = true;
        continue;
      }
      const bySlot = groups.get(owner) ?? new Map<number, string[]>();
      groups.set(owner, bySlot);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), channel]);
    }
    for (const [owner, bySlot] of groups) {
      const link = this.link(owner);
      for (const channels of bySlot.values()) {
        for (const channel of channels) this.placed.set(channel, link);
        link.subscribe(channels);
      }
    }
    return orphaned;
  }

  private link(key: string): NodeLink {
    let link = this.links.get(key);
    if (!link || link.isClosed) {
      link = new NodeLink(key, parseNodeKey(key), this.options.auth, this);
      if (this.paused) link.pause();
      this.links.set(key, link);
    }
    return link;
  }
}
