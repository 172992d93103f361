import type { SluiceEvent } from "./event.generated";

export type { SluiceEvent };

/** Where a channel stands: the last (epoch, seq) applied. */
export interface Position {
  epoch: string;
  seq: number;
}

/** Why a handler sees an event. */
export type Delivery = "live" | "history" | "replay";

/** Passed to the handler with each event. */
export interface EventContext {
  channel: string;
  /** `live` from pub/sub, `history` read back to fill a gap, `replay` an operator's re-publish. */
  delivery: Delivery;
  /**
   * The channel's position once this event is applied (unchanged for replays). Store it with
   * the event's effect, in the same transaction, for exactly-once effects.
   */
  position: Position | undefined;
}

export type Handler = (event: SluiceEvent, ctx: EventContext) => void | Promise<void>;

/** Why the history could not fill a gap. */
export type ResyncReason =
  /** Redis lost the channel (restart without data, flush, eviction): numbering restarted. */
  | "epoch-changed"
  /** The history's first entry is past the gap (trimmed by `max_len`, or expired). */
  | "history-trimmed"
  /**
   * Redis has fewer messages than this consumer applied in the same epoch, or another event
   * at the seq it applied: Redis lost them (an older copy restored; on a cluster, a failover to
   * a replica that had not received them) and may number other events with those seqs.
   */
  | "position-ahead";

/** The records of a `state = true` route at one seq: what `bootstrap()` returns. */
export interface Snapshot {
  channel: string;
  /** The seq the records stand at; null when Redis knows nothing of the channel yet. */
  position: Position | null;
  /** recordId -> the latest event for that record. */
  records: Map<string, SluiceEvent>;
}

export interface ResyncInfo {
  channel: string;
  reason: ResyncReason;
  /** The last position applied before the gap. */
  from: Position;
  /**
   * Where the consumer goes on from: the last position before the history's first entry, or
   * the channel's head (`position-ahead`).
   */
  resumeAfter: Position;
  /**
   * Read the channel's state hash and its seq in one MULTI and go on from that seq (routes with
   * `state = true`). Returns the snapshot; the application replaces its copy with it.
   */
  bootstrap(): Promise<Snapshot>;
}

export type ResyncHandler = (info: ResyncInfo) => void | Promise<void>;
