import { BoundedSet, Queue } from "./collections";
import { EventParseError, HandlerError, RecoveryError, type SluiceError } from "./errors";
import { readHistory, readMeta, readSnapshot, type HistoryEntry } from "./redis-reads";
import type { PositionStore } from "./store";
import type { Commands } from "./transport";
import type {
  Delivery,
  Handler,
  Position,
  ResyncHandler,
  ResyncReason,
  SluiceEvent,
  Snapshot,
} from "./types";

/** What a channel's worker needs from the consumer that owns it. */
export interface ChannelEnv {
  redis: Commands;
  handler: Handler;
  onResync: ResyncHandler | undefined;
  reportError(error: SluiceError): void;
  store: PositionStore;
  dedupWindow: number;
  historyBatch: number;
  /** A live message left the buffer. */
  taken(): void;
  /** The worker has nothing left to do. */
  idle(): void;
  stopped(): boolean;
}

type Item =
  | { kind: "message"; raw: string }
  | { kind: "catch-up" }
  | { kind: "task"; run: () => Promise<void> };

const RETRY_MS = [50, 100, 250, 500, 1000];

const isThenable = (value: unknown): value is PromiseLike<void> =>
  typeof (value as PromiseLike<void> | undefined)?.then === "function";

/**
 * One channel: its position, its buffer of live messages, and the single loop that applies them
 * in order. A gap or an epoch change is filled from history inline, while later live messages
 * wait in the buffer; those the history already gave are dropped by seq.
 */
export class ChannelWorker {
  private readonly inbox = new Queue<Item>();
  private readonly seen: BoundedSet<string>;
  private readonly retiredEpochs = new Set<string>();
  /** The eventId applied at `position.seq` by this process (undefined: not known). */
  private lastId: string | undefined;
  private running = false;

  constructor(
    readonly channel: string,
    private readonly env: ChannelEnv,
    public position: Position | undefined,
    /** Where the channel starts when it has no position. */
    private startFrom: "now" | "beginning",
  ) {
    this.seen = new BoundedSet(env.dedupWindow);
  }

  get busy(): boolean {
    return this.running || this.inbox.length > 0;
  }

  /** An item is being applied right now. */
  get active(): boolean {
    return this.running;
  }

  deliver(raw: string): void {
    this.push({ kind: "message", raw });
  }

  /** Read history past the position (after subscribing, after a reconnect, on start). */
  catchUp(): void {
    this.push({ kind: "catch-up" });
  }

  /**
   * Before subscribing, for `startFrom: "now"` without a position: start where the channel's
   * meta stands now, so the catch-up after subscribing delivers whatever is published from here
   * on, however late that read runs. A channel Redis does not know yet is read from its first
   * message. Retried until Redis answers; resolves when settled.
   */
  settleStart(): Promise<void> {
    return new Promise((resolve) => {
      this.push({
        kind: "task",
        run: async () => {
          if (!this.position && this.startFrom === "now") {
            const meta = await readMeta(this.env.redis, this.channel);
            if (meta) await this.moveTo(meta);
            else this.startFrom = "beginning";
          }
          resolve();
        },
      });
    });
  }

  /** Run `fn` in the channel's order (between two events). */
  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.push({ kind: "task", run: () => fn().then(resolve, reject) });
    });
  }

  private push(item: Item): void {
    this.inbox.push(item);
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      for (let item = this.inbox.shift(); item; item = this.inbox.shift()) {
        if (item.kind === "message") {
          this.env.taken();
          const fast = this.applyNext(item.raw);
          if (fast === true) continue;
          if (fast !== false && (await fast.then(() => true, () => false))) continue;
        }
        await this.retrying(item);
        if (this.env.stopped()) return;
      }
    } finally {
      this.running = false;
      this.env.idle();
    }
  }

  /** Retries an item until it goes through: nothing is skipped because Redis or a handler failed. */
  private async retrying(item: Item): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        if (item.kind === "message") await this.onMessage(item.raw);
        else if (item.kind === "catch-up") await this.fillFromHistory();
        else await item.run();
        return;
      } catch (error) {
        if (this.env.stopped()) return;
        const wrapped =
          error instanceof HandlerError || error instanceof EventParseError
            ? error
            : new RecoveryError(this.channel, error);
        this.env.reportError(wrapped);
        await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]));
      }
    }
  }

  /**
   * The common case without a promise per event: the next seq of the current epoch, not applied
   * before. Returns false for anything else (the full path then handles the message), and a
   * promise when the handler (or the store) is asynchronous.
   */
  private applyNext(raw: string): boolean | Promise<void> {
    const at = this.position;
    if (!at) return false;
    let event: SluiceEvent;
    try {
      event = JSON.parse(raw) as SluiceEvent;
    } catch {
      return false;
    }
    if (
      event === null ||
      typeof event.eventId !== "string" ||
      event.seq !== at.seq + 1 ||
      event.epoch !== at.epoch ||
      this.seen.has(event.eventId)
    ) {
      return false;
    }
    const next: Position = { epoch: at.epoch, seq: event.seq };
    let result: void | Promise<void>;
    try {
      result = this.env.handler(event, { channel: this.channel, delivery: "live", position: next });
    } catch (error) {
      this.env.reportError(new HandlerError(this.channel, event.eventId, error));
      return false;
    }
    if (isThenable(result)) {
      return Promise.resolve(result).then(
        () => this.applied(event.eventId, next),
        (error) => {
          this.env.reportError(new HandlerError(this.channel, event.eventId, error));
          throw error;
        },
      );
    }
    const saved = this.applied(event.eventId, next);
    return saved === undefined ? true : saved;
  }

  private applied(eventId: string, next: Position): void | Promise<void> {
    this.seen.add(eventId);
    this.position = next;
    this.lastId = eventId;
    const saved = this.env.store.save(this.channel, next);
    if (isThenable(saved)) return Promise.resolve(saved);
  }

  private parse(raw: string): SluiceEvent | undefined {
    try {
      const event = JSON.parse(raw) as SluiceEvent;
      if (typeof event?.eventId !== "string") throw new Error("no eventId");
      if (event.seq !== undefined && (typeof event.seq !== "number" || typeof event.epoch !== "string")) {
        throw new Error("seq without epoch");
      }
      return event;
    } catch (error) {
      this.env.reportError(new EventParseError(this.channel, raw, error));
      return undefined;
    }
  }

  private async onMessage(raw: string): Promise<void> {
    const event = this.parse(raw);
    if (!event) return;
    if (event.seq === undefined) {
      if (!this.seen.has(event.eventId)) await this.apply(event, "replay");
      return;
    }
    const epoch = event.epoch as string;
    const seq = event.seq;
    if (this.retiredEpochs.has(epoch)) return;
    if (!this.position) {
      if (this.startFrom === "beginning" && seq > 1) await this.fillFromHistory();
      this.position ??= { epoch, seq: seq - 1 };
    }
    if (!this.follows(epoch, seq)) {
      await this.fillFromHistory();
      if (this.retiredEpochs.has(epoch)) return;
      if (!this.follows(epoch, seq)) {
        const at = this.position as Position;
        if (at.epoch === epoch && seq <= at.seq) return;
        // The history has not got it (disabled, or gone): say so and go on from this message.
        await this.resync(at.epoch === epoch ? "history-trimmed" : "epoch-changed", {
          epoch,
          seq: seq - 1,
        });
      }
    }
    const at = this.position as Position;
    if (at.epoch !== epoch || seq !== at.seq + 1) return; // already applied (from history)
    await this.apply(event, "live");
  }

  /** True when (epoch, seq) is at or before the next number expected. */
  private follows(epoch: string, seq: number): boolean {
    const at = this.position;
    return at !== undefined && at.epoch === epoch && seq <= at.seq + 1;
  }

  private async apply(event: SluiceEvent, delivery: Delivery): Promise<void> {
    const next =
      event.seq === undefined ? this.position : { epoch: event.epoch as string, seq: event.seq };
    if (!this.seen.has(event.eventId)) {
      let result: void | Promise<void>;
      try {
        result = this.env.handler(event, { channel: this.channel, delivery, position: next });
        if (isThenable(result)) await result;
      } catch (error) {
        throw new HandlerError(this.channel, event.eventId, error);
      }
      this.seen.add(event.eventId);
    }
    if (event.seq !== undefined) {
      await this.moveTo(next as Position);
      this.lastId = event.eventId;
    }
  }

  private async moveTo(position: Position): Promise<void> {
    this.position = position;
    this.lastId = undefined;
    const saved = this.env.store.save(this.channel, position);
    if (isThenable(saved)) await saved;
  }

  /**
   * The catch-up rule: read `XRANGE sluice:history:{ch} (seq+1)-0 +` with the meta in one MULTI
   * and apply it in order; when the epoch changed or the first entry is past seq + 1, the history
   * cannot fill the gap: tell the application (`onResync`) and go on from what there is.
   */
  private async fillFromHistory(): Promise<void> {
    let resynced = false;
    for (;;) {
      const from = this.position;
      // With the eventId applied at the position known, read that entry too, to compare.
      const verify = from !== undefined && from.seq > 0 && this.lastId !== undefined;
      const after = (from?.seq ?? 0) - (verify ? 1 : 0);
      const page = await readHistory(this.env.redis, this.channel, after, this.env.historyBatch);
      if (page.epoch === null) return; // Redis knows nothing of this channel yet
      if (!from) {
        const start = this.startFrom === "beginning" ? 0 : page.seq;
        await this.moveTo({ epoch: page.epoch, seq: start });
        if (start === page.seq) return;
        continue;
      }
      if (page.epoch !== from.epoch) {
        // Numbering restarted; this page was read with the old seq, so read it again.
        this.retiredEpochs.add(from.epoch);
        await this.resync("epoch-changed", { epoch: page.epoch, seq: 0 });
        resynced = true;
        continue;
      }
      if (page.seq < from.seq || (verify && this.rewritten(page.entries[0], from.seq))) {
        // Redis lost what was applied here (a failover to a replica that had not received it,
        // an older copy restored) and may have given the same seqs to other events.
        const head = { epoch: page.epoch, seq: page.seq };
        if (!resynced) await this.resync("position-ahead", head);
        else await this.moveTo(head);
        resynced = true;
        continue;
      }
      const first = page.entries[0];
      if (!first) {
        if (page.seq > from.seq) {
          // Meta is ahead and the history has nothing: expired or disabled.
          if (!resynced) await this.resync("history-trimmed", { epoch: page.epoch, seq: page.seq });
          else await this.moveTo({ epoch: page.epoch, seq: page.seq });
        }
        return;
      }
      if (first.seq > from.seq + 1) {
        const resumeAfter = { epoch: page.epoch, seq: first.seq - 1 };
        if (!resynced) await this.resync("history-trimmed", resumeAfter);
        else await this.moveTo(resumeAfter);
        resynced = true;
        if (this.position?.seq !== resumeAfter.seq) continue; // bootstrapped elsewhere: re-read
      }
      for (const entry of page.entries) {
        const at = this.position as Position;
        if (entry.seq <= at.seq) continue;
        if (entry.seq !== at.seq + 1) break; // cannot happen within one stream read; re-read
        const event = this.parse(entry.raw);
        if (!event || event.seq !== entry.seq) {
          await this.moveTo({ epoch: at.epoch, seq: entry.seq });
          continue;
        }
        await this.apply(event, "history");
      }
      if (page.entries.length < this.env.historyBatch) return;
    }
  }

  /** The history holds another event at `seq` than the one this process applied there. */
  private rewritten(entry: HistoryEntry | undefined, seq: number): boolean {
    if (!entry || entry.seq !== seq) return false; // trimmed: nothing to compare
    const event = this.parse(entry.raw);
    return event !== undefined && event.eventId !== this.lastId;
  }

  private async resync(reason: ResyncReason, resumeAfter: Position): Promise<void> {
    const from = this.position as Position;
    const info = {
      channel: this.channel,
      reason,
      from,
      resumeAfter,
      bootstrap: () => this.bootstrapNow(),
    };
    // If the callback throws, the position has not moved: the gap is found and reported again.
    if (this.env.onResync) await this.env.onResync(info);
    if (this.position === from) await this.moveTo(resumeAfter);
  }

  /** Read the state hash and its seq in one MULTI and go on from there (in the channel's order). */
  async bootstrapNow(): Promise<Snapshot> {
    const snapshot = await readSnapshot(this.env.redis, this.channel);
    if (snapshot.position) {
      if (this.position && this.position.epoch !== snapshot.position.epoch) {
        this.retiredEpochs.add(this.position.epoch);
      }
      await this.moveTo(snapshot.position);
    }
    return snapshot;
  }
}
