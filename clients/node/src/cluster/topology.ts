import Redis from "ioredis";
import { SLOTS } from "../slot";
import type { LinkAuth, NodeAddress } from "./link";

/** `{ "host:port": { host, port } }`: addresses the cluster announces, as this process reaches them. */
export type NatMap = Record<string, NodeAddress>;

/** Who serves each slot, as one node sees it. */
export interface Topology {
  /** Per slot, the master's `host:port`. */
  owners: (string | undefined)[];
  /** Every node named (masters and replicas), to ask next time: the one that answered first. */
  nodes: string[];
}

export const nodeKey = (a: NodeAddress): string => `${a.host}:${a.port}`;

export function parseNodeKey(key: string): NodeAddress {
  const at = key.lastIndexOf(":");
  return { host: key.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(key.slice(at + 1)) };
}

type SlotsReply = [number, number, ...[string | null, number, string?][]][];

/** `CLUSTER SLOTS` as a Topology; an empty or `?` host means the host that was asked. */
export function toTopology(reply: SlotsReply, asked: NodeAddress, natMap: NatMap = {}): Topology {
  const owners: (string | undefined)[] = new Array(SLOTS).fill(undefined);
  const nodes = new Set<string>();
  const key = ([host, port]: [string | null, number, string?]): string => {
    const raw = nodeKey({ host: host && host !== "?" ? host : asked.host, port: Number(port) });
    return natMap[raw] ? nodeKey(natMap[raw]) : raw;
  };
  for (const [start, end, master, ...replicas] of reply) {
    const owner = key(master);
    for (let slot = start; slot <= end; slot++) owners[slot] = owner;
    nodes.add(owner);
    for (const replica of replicas) nodes.add(key(replica));
  }
  return { owners, nodes: [nodeKey(asked), ...nodes] };
}

/**
 * Asks the nodes in turn (those named last time, then the seeds) for `CLUSTER SLOTS`; the
 * first that answers wins. Rejects when none does (the whole cluster is down).
 */
export async function fetchTopology(
  candidates: string[],
  auth: LinkAuth,
  natMap: NatMap | undefined,
): Promise<Topology> {
  let last: unknown;
  for (const candidate of candidates) {
    const address = parseNodeKey(candidate);
    const client = new Redis({
      ...address,
      username: auth.username,
      password: auth.password,
      tls: auth.tls,
      connectionName: "sluice-consumer:topology",
      connectTimeout: auth.connectTimeoutMs ?? 2_000,
      commandTimeout: 5_000,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on("error", () => {});
    try {
      await client.connect();
      const reply = (await client.call("CLUSTER", "SLOTS")) as SlotsReply;
      const topology = toTopology(reply, address, natMap);
      if (topology.owners.some((o) => o !== undefined)) return topology;
      last = new Error(`${candidate} serves no slots yet`);
    } catch (error) {
      last = error;
    } finally {
      client.disconnect();
    }
  }
  throw new Error(`no cluster node answered CLUSTER SLOTS (${candidates.join(", ")})`, { cause: last });
}
