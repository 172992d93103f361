import type { Cluster, Redis } from "ioredis";
import { metaKey } from "../keys";
import { SLOTS } from "../slot";

const META_PREFIX = metaKey("").slice(0, -1); // "sluice:meta:{"

/** The channel a `sluice:meta:{<channel>}` key belongs to. */
export function channelOfMetaKey(key: string): string | undefined {
  return key.startsWith(META_PREFIX) && key.endsWith("}") ? key.slice(META_PREFIX.length, -1) : undefined;
}

/** The text before a glob's first wildcard, unescaped (`crm:t\*x:*` gives `crm:t*x:`). */
export function literalPrefix(pattern: string): string {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*" || c === "?" || c === "[") break;
    if (c === "\\" && i + 1 < pattern.length) out += pattern[++i];
    else out += c;
  }
  return out;
}

const globEscape = (text: string): string => text.replace(/[*?[\]\\]/g, "\\$&");

/**
 * The SCAN MATCH that finds the meta keys of the channels `patterns` cover. One pattern goes
 * inside the key's text as it is (`sluice:meta:{crm:tenant-1:*}`: braces are not special in
 * Redis globs); several share one scan of their common literal prefix, and the consumer
 * filters the keys found with the patterns themselves.
 */
export function metaScanPattern(patterns: string[]): string {
  if (patterns.length === 1) return `${META_PREFIX}${patterns[0]}}`;
  let common = literalPrefix(patterns[0] ?? "");
  for (const pattern of patterns.slice(1)) {
    const prefix = literalPrefix(pattern);
    let i = 0;
    while (i < common.length && i < prefix.length && common[i] === prefix[i]) i++;
    common = common.slice(0, i);
  }
  return `${META_PREFIX}${globEscape(common)}*`;
}

/** The master of every slot, once ioredis knows them all; undefined before (or while a slot has none). */
function masters(cluster: Cluster): Redis[] | undefined {
  if (cluster.status !== "ready") return undefined;
  const owners = new Set<string>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const owner = cluster.slots[slot]?.[0];
    if (!owner) return undefined;
    owners.add(owner);
  }
  const nodes = cluster.nodes("all");
  const out: Redis[] = [];
  for (const owner of owners) {
    const node = nodes.find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) return undefined;
    out.push(node);
  }
  return out;
}

/**
 * SCAN every master for meta keys matching `match`. A node that fails is reported and the rest
 * still count; undefined when the masters are not all known yet.
 */
export async function scanChannels(
  cluster: Cluster,
  match: string,
  onNodeError: (node: string, error: unknown) => void,
): Promise<Set<string> | undefined> {
  const nodes = masters(cluster);
  if (!nodes) return undefined;
  const found = new Set<string>();
  await Promise.all(
    nodes.map(async (node) => {
      try {
        let cursor = "0";
        do {
          const [next, keys] = await node.scan(cursor, "MATCH", match, "COUNT", 1000);
          for (const key of keys) {
            const channel = channelOfMetaKey(key);
            if (channel !== undefined) found.add(channel);
          }
          cursor = next;
        } while (cursor !== "0");
      } catch (error) {
        onNodeError(`${node.options.host}:${node.options.port}`, error);
      }
    }),
  );
  return found;
}

export interface DiscoveryOptions {
  cluster: Cluster;
  patterns: string[];
  covers(channel: string): boolean;
  intervalMs: number;
  /** Channels seen for the first time; `initial` for the scan at start. */
  found(channels: string[], initial: boolean): void;
  failed(error: unknown): void;
}

/**
 * Patterns in cluster mode: sharded pub/sub has no PSUBSCRIBE, so the channels a pattern covers
 * are found by scanning the masters for their `sluice:meta:{<channel>}` keys every `intervalMs`.
 */
export class Discovery {
  private readonly known = new Set<string>();
  private readonly match: string;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private first: (() => void) | undefined;

  constructor(private readonly options: DiscoveryOptions) {
    this.match = metaScanPattern(options.patterns);
  }

  /** Resolves after the first complete scan (retried until the cluster answers). */
  start(): Promise<void> {
    const done = new Promise<void>((resolve) => (this.first = resolve));
    void this.round();
    return done;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.first?.();
  }

  private async round(): Promise<void> {
    let failed = false;
    try {
      const found = await scanChannels(this.options.cluster, this.match, (node, error) => {
        failed = true;
        this.options.failed(new Error(`scanning ${node} for channels failed`, { cause: error }));
      });
      if (!found) failed = true;
      const fresh = [...(found ?? [])].filter((c) => !this.known.has(c) && this.options.covers(c));
      for (const channel of fresh) this.known.add(channel);
      if (fresh.length) this.options.found(fresh, this.first !== undefined);
    } catch (error) {
      failed = true;
      this.options.failed(error);
    }
    if (this.stopped) return;
    if (!failed && this.first) {
      this.first();
      this.first = undefined;
    }
    const wait = failed && this.first ? Math.min(500, this.options.intervalMs) : this.options.intervalMs;
    this.timer = setTimeout(() => void this.round(), wait);
  }
}
