import { historyKey, metaKey, stateKey } from "./keys";
import type { Commands } from "./transport";
import type { Position, SluiceEvent, Snapshot } from "./types";

export interface HistoryEntry {
  seq: number;
  /** The exact bytes that were published. */
  raw: string;
}

export interface HistoryPage {
  /** The channel's meta; epoch null when Redis knows nothing of the channel. */
  epoch: string | null;
  seq: number;
  entries: HistoryEntry[];
}

type ExecResult = [error: Error | null, result: unknown][] | null;

function results(channel: string, replies: ExecResult): unknown[] {
  if (!replies) throw new Error(`MULTI on ${channel} was aborted`);
  return replies.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}

/** Meta and the history after `afterSeq`, read in one MULTI so they agree. */
export async function readHistory(
  redis: Commands,
  channel: string,
  afterSeq: number,
  count: number,
): Promise<HistoryPage> {
  const meta = metaKey(channel);
  const [epoch, seq, range] = results(
    channel,
    await redis
      .multi()
      .hget(meta, "epoch")
      .hget(meta, "seq")
      .xrange(historyKey(channel), `${afterSeq + 1}-0`, "+", "COUNT", count)
      .exec(),
  ) as [string | null, string | null, [string, string[]][]];
  const entries: HistoryEntry[] = [];
  for (const [id, fields] of range) {
    const at = fields.indexOf("event");
    if (at < 0 || at % 2 !== 0) continue;
    entries.push({ seq: Number.parseInt(id, 10), raw: fields[at + 1] });
  }
  return { epoch, seq: seq === null ? 0 : Number(seq), entries };
}

/** The channel's (epoch, seq) from its meta; undefined when Redis knows nothing of it. */
export async function readMeta(redis: Commands, channel: string): Promise<Position | undefined> {
  const [epoch, seq] = await redis.hmget(metaKey(channel), "epoch", "seq");
  return epoch === null ? undefined : { epoch, seq: seq === null ? 0 : Number(seq) };
}

/**
 * `MULTI; HGETALL sluice:state:{ch}; HGET sluice:meta:{ch} seq; HGET sluice:meta:{ch} epoch; EXEC`:
 * the channel's records and the seq they stand at, one consistent snapshot.
 */
export async function readSnapshot(redis: Commands, channel: string): Promise<Snapshot> {
  const meta = metaKey(channel);
  const [state, seq, epoch] = results(
    channel,
    await redis.multi().hgetall(stateKey(channel)).hget(meta, "seq").hget(meta, "epoch").exec(),
  ) as [Record<string, string>, string | null, string | null];
  const records = new Map<string, SluiceEvent>();
  for (const [recordId, json] of Object.entries(state)) {
    records.set(recordId, JSON.parse(json) as SluiceEvent);
  }
  const position: Position | null = epoch === null ? null : { epoch, seq: seq === null ? 0 : Number(seq) };
  return { channel, position, records };
}
