import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { ReplyError, ReplyParser, encodeCommand, type Reply } from "../resp";

/** Where a node is and how to log in. */
export interface NodeAddress {
  host: string;
  port: number;
}

export interface LinkAuth {
  username?: string;
  password?: string;
  /** TLS options (`rediss+cluster://` or `tls` in the options); plain TCP when absent. */
  tls?: ConnectionOptions;
  connectTimeoutMs?: number;
}

/** What a shard subscriber connection tells its owner. */
export interface LinkEvents {
  message(channel: string, raw: string): void;
  /** One SSUBSCRIBE was confirmed for all its channels. */
  subscribed(link: NodeLink, channels: string[]): void;
  /** Redis refused an SSUBSCRIBE (`MOVED <slot> <host:port>`, `CLUSTERDOWN ...`). */
  rejected(link: NodeLink, channels: string[], error: string): void;
  /** Redis unsubscribed a channel by itself: its slot is no longer served here. */
  lost(link: NodeLink, channel: string): void;
  /** The connection is gone (or failed to open); every channel on it is lost. */
  closed(link: NodeLink, error: Error | undefined): void;
}

type Pending =
  | { kind: "reply" }
  | { kind: "login" }
  | { kind: "ssubscribe"; channels: string[]; remaining: number };

/** No byte from the node for this long while a PING is out: the connection is dead. */
const HEALTH_MS = 5_000;

/**
 * One connection to one cluster node in sharded pub/sub mode. Every reply is matched against
 * the commands this connection sent; a `sunsubscribe` is always the server's own (the consumer
 * never unsubscribes), so it is reported as lost instead of being taken for a reply.
 */
export class NodeLink {
  /** Channels this link is subscribed to, or subscribing to. */
  readonly channels = new Set<string>();
  private readonly socket: Socket;
  private readonly pending: Pending[] = [];
  private readonly parser: ReplyParser;
  private readonly health: NodeJS.Timeout;
  private lastData = Date.now();
  private pinged = false;
  private paused = false;
  private closed = false;

  constructor(
    readonly key: string,
    address: NodeAddress,
    auth: LinkAuth,
    private readonly events: LinkEvents,
    name = "sluice-consumer:ssub",
  ) {
    this.parser = new ReplyParser((reply) => this.onReply(reply));
    const options = { host: address.host, port: address.port };
    this.socket = auth.tls
      ? tlsConnect({ servername: address.host, ...auth.tls, ...options })
      : netConnect(options);
    this.socket.setNoDelay(true);
    this.socket.setKeepAlive(true, 10_000);
    this.socket.setTimeout(auth.connectTimeoutMs ?? 5_000, () => this.close(new Error("connect timeout")));
    this.socket.once(auth.tls ? "secureConnect" : "connect", () => this.socket.setTimeout(0));
    this.socket.on("data", (chunk: Buffer) => {
      this.lastData = Date.now();
      this.parser.feed(chunk);
    });
    this.socket.on("error", (error) => this.close(error));
    this.socket.on("close", () => this.close(new Error("connection closed")));
    if (auth.password !== undefined) {
      const args = auth.username ? [auth.username, auth.password] : [auth.password];
      this.send(["AUTH", ...args], { kind: "login" });
    }
    this.send(["CLIENT", "SETNAME", name], { kind: "reply" });
    this.health = setInterval(() => this.checkHealth(), HEALTH_MS);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** SSUBSCRIBE to channels of one slot (Redis refuses several slots in one call). */
  subscribe(channels: string[]): void {
    for (const channel of channels) this.channels.add(channel);
    this.send(["SSUBSCRIBE", ...channels], { kind: "ssubscribe", channels, remaining: channels.length });
  }

  /** Stop reading (the consumer's buffer is full); Redis holds what comes meanwhile. */
  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    this.lastData = Date.now();
    this.socket.resume();
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.health);
    this.socket.destroy();
    this.events.closed(this, error);
  }

  private send(args: string[], pending: Pending): void {
    if (this.closed) return;
    this.pending.push(pending);
    this.socket.write(encodeCommand(args));
  }

  private checkHealth(): void {
    if (this.paused) return;
    if (this.pinged && Date.now() - this.lastData > 2 * HEALTH_MS) {
      this.close(new Error(`no answer from ${this.key} for ${2 * HEALTH_MS} ms`));
      return;
    }
    this.pinged = true;
    this.send(["PING"], { kind: "reply" });
  }

  private onReply(reply: Reply): void {
    if (Array.isArray(reply) && typeof reply[0] === "string") {
      const kind = reply[0];
      if (kind === "smessage") {
        this.events.message(String(reply[1]), String(reply[2]));
        return;
      }
      if (kind === "sunsubscribe") {
        const channel = String(reply[1]);
        if (this.channels.delete(channel)) this.events.lost(this, channel);
        return;
      }
    }
    const head = this.pending[0];
    if (!head) return; // nothing was asked: a push of a kind this link does not use
    if (head.kind === "ssubscribe" && !(reply instanceof ReplyError)) {
      if (--head.remaining > 0) return;
      this.pending.shift();
      this.events.subscribed(this, head.channels.filter((c) => this.channels.has(c)));
      return;
    }
    this.pending.shift();
    if (head.kind === "reply") this.pinged = false;
    if (!(reply instanceof ReplyError)) return;
    if (head.kind === "ssubscribe") {
      for (const channel of head.channels) this.channels.delete(channel);
      this.events.rejected(this, head.channels, reply.message);
    } else if (head.kind === "login") {
      this.close(new Error(`AUTH refused by ${this.key}: ${reply.message}`));
    }
  }
}
