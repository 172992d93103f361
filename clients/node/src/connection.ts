import type { ClusterOptions, RedisOptions } from "ioredis";
import type { LinkAuth, NodeAddress } from "./cluster/link";
import type { NatMap } from "./cluster/topology";
import { SluiceError } from "./errors";

/** A Redis Cluster given by its seed nodes, as ioredis's `new Cluster(startupNodes, options)` takes them. */
export interface ClusterConfig {
  /** Any nodes of the cluster: `"host:port"` or `{ host, port }`; the rest is discovered. */
  startupNodes: (string | NodeAddress)[];
  /**
   * ioredis cluster options for the command connections. `redisOptions` `username`,
   * `password` and `tls` (and `natMap`) apply to the shard subscribers too.
   */
  clusterOptions?: ClusterOptions;
}

/** The `redis` option: a URL, ioredis options, or a cluster. */
export type RedisTarget = string | RedisOptions | ClusterConfig;

export type ResolvedTarget =
  | { mode: "standalone"; url: string | undefined; options: RedisOptions }
  | {
      mode: "cluster";
      seeds: NodeAddress[];
      auth: LinkAuth;
      natMap: NatMap | undefined;
      clusterOptions: ClusterOptions;
    };

const URL_FORM = /^(rediss?)(\+cluster)?:\/\/([^/?#]*)/i;

/**
 * Where to connect: `redis+cluster://[user:pass@]host:port,host:port` (`rediss+cluster://` for
 * TLS), a `ClusterConfig`, or (with `mode: "cluster"`) a plain URL or ioredis options naming one
 * seed node; anything else is a single Redis, exactly as before.
 */
export function resolveTarget(target: RedisTarget, mode?: "standalone" | "cluster"): ResolvedTarget {
  if (typeof target === "object" && "startupNodes" in target) {
    if (mode === "standalone") throw new SluiceError("mode \"standalone\" with a cluster's startupNodes");
    return fromClusterConfig(target);
  }
  if (typeof target === "string") {
    const url = URL_FORM.exec(target);
    if (!url) throw new SluiceError(`not a redis:// URL: ${target}`);
    const cluster = url[2] !== undefined || mode === "cluster";
    if (url[2] !== undefined && mode === "standalone") {
      throw new SluiceError("mode \"standalone\" with a redis+cluster:// URL");
    }
    if (!cluster) return { mode: "standalone", url: target, options: {} };
    return fromUrl(url[1].toLowerCase() === "rediss", url[3]);
  }
  if (mode !== "cluster") return { mode: "standalone", url: undefined, options: { ...target } };
  return fromClusterConfig({
    startupNodes: [{ host: target.host ?? "127.0.0.1", port: target.port ?? 6379 }],
    clusterOptions: { redisOptions: { username: target.username, password: target.password, tls: target.tls } },
  });
}

function fromUrl(tls: boolean, authority: string): ResolvedTarget {
  const at = authority.lastIndexOf("@");
  const hosts = authority.slice(at + 1);
  const auth: LinkAuth = {};
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(":");
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (colon >= 0) auth.password = decodeURIComponent(userinfo.slice(colon + 1));
    if (user && colon >= 0) auth.username = user;
    else if (user) auth.password = user; // redis://secret@host: a password, as redis-cli reads it
  }
  if (tls) auth.tls = {};
  const seeds = hosts.split(",").filter(Boolean).map(parseHostPort);
  if (seeds.length === 0) throw new SluiceError("a redis+cluster:// URL names no node");
  return {
    mode: "cluster",
    seeds,
    auth,
    natMap: undefined,
    clusterOptions: { redisOptions: { username: auth.username, password: auth.password, tls: auth.tls } },
  };
}

function parseHostPort(text: string): NodeAddress {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(text.trim());
  if (!match) throw new SluiceError(`not host:port: ${text}`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: match[2] ? Number(match[2]) : 6379 };
}

function fromClusterConfig(config: ClusterConfig): ResolvedTarget {
  const options = config.clusterOptions ?? {};
  const redis = options.redisOptions ?? {};
  const seeds = config.startupNodes.map((n) => (typeof n === "string" ? parseHostPort(n) : n));
  if (seeds.length === 0) throw new SluiceError("startupNodes is empty");
  const natMap = typeof options.natMap === "object" ? (options.natMap as NatMap) : undefined;
  return {
    mode: "cluster",
    seeds,
    auth: { username: redis.username, password: redis.password, tls: redis.tls },
    natMap,
    clusterOptions: options,
  };
}
