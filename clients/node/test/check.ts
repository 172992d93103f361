// What every test asserts about what a handler saw: each event valid against
// schema/event.schema.json, every change once per channel, in seq order, and a gap only where
// a "resync needed" was reported.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020";
import type { EventContext, Position, ResyncInfo, SluiceEvent } from "../src";
import { repoRoot } from "./harness";

const schema = JSON.parse(readFileSync(join(repoRoot, "schema", "event.schema.json"), "utf8"));
const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

export function assertValid(event: unknown): asserts event is SluiceEvent {
  if (!validate(event)) {
    assert.fail(`event does not match schema/event.schema.json: ${JSON.stringify(validate.errors)}\n${JSON.stringify(event)}`);
  }
}

export type Seen =
  | { kind: "event"; epoch?: string; seq?: number; eventId: string; recordId: string | null; delivery: string }
  | { kind: "resync"; reason: string; from: Position; resumeAfter: Position };

/** Records what the consumer gives the application, per channel. */
export class Recorder {
  readonly channels = new Map<string, Seen[]>();

  readonly handler = (event: SluiceEvent, ctx: EventContext): void => {
    assertValid(event);
    this.list(ctx.channel).push({
      kind: "event",
      epoch: event.epoch,
      seq: event.seq,
      eventId: event.eventId,
      recordId: event.recordId,
      delivery: ctx.delivery,
    });
  };

  readonly onResync = (info: ResyncInfo): void => {
    this.list(info.channel).push({
      kind: "resync",
      reason: info.reason,
      from: info.from,
      resumeAfter: info.resumeAfter,
    });
  };

  list(channel: string): Seen[] {
    let list = this.channels.get(channel);
    if (!list) this.channels.set(channel, (list = []));
    return list;
  }

  events(channel: string): Extract<Seen, { kind: "event" }>[] {
    return this.list(channel).filter((s): s is Extract<Seen, { kind: "event" }> => s.kind === "event");
  }

  resyncs(channel?: string): Extract<Seen, { kind: "resync" }>[] {
    const lists = channel ? [this.list(channel)] : [...this.channels.values()];
    return lists.flat().filter((s): s is Extract<Seen, { kind: "resync" }> => s.kind === "resync");
  }

  recordIds(channel: string): string[] {
    return this.events(channel).map((e) => e.recordId as string);
  }

  total(): number {
    let n = 0;
    for (const channel of this.channels.keys()) n += this.events(channel).length;
    return n;
  }

  /** Every channel: seq contiguous within an epoch, a jump only right after a resync, no eventId twice. */
  assertInOrderOnce(): void {
    for (const [channel, seen] of this.channels) assertChannel(channel, seen);
  }
}

export function assertChannel(channel: string, seen: Seen[]): void {
  let expected: Position | undefined;
  const ids = new Set<string>();
  for (const [i, s] of seen.entries()) {
    if (s.kind === "resync") {
      expected = s.resumeAfter;
      continue;
    }
    assert.ok(!ids.has(s.eventId), `${channel}: eventId ${s.eventId} applied twice (#${i})`);
    ids.add(s.eventId);
    if (s.seq === undefined) continue; // a replay
    if (expected) {
      assert.equal(s.epoch, expected.epoch, `${channel}: epoch changed at #${i} without a resync`);
      assert.equal(s.seq, expected.seq + 1, `${channel}: #${i} has seq ${s.seq} after ${expected.seq} (no resync)`);
    }
    expected = { epoch: s.epoch as string, seq: s.seq };
  }
}

/** The channel's rows, as tests insert them: config_id prefix||g, tenant 'tenant-'||(g % tenants). */
export function expectedIds(prefix: string, count: number, tenants: number, tenant: number): string[] {
  const out: string[] = [];
  for (let g = 1; g <= count; g++) if (g % tenants === tenant) out.push(`${prefix}${g}`);
  return out;
}

/** Rows from..to of such a set; `pad` bytes make the events bigger. */
export function insertSql(prefix: string, from: number, to: number, tenants: number, pad = 0): string {
  const meta = pad > 0 ? `jsonb_build_object('pad', repeat('x', ${pad}))` : "NULL";
  return (
    "INSERT INTO credit_configurations (config_id, tenant_id, operation_code, meta) " +
    `SELECT '${prefix}'||g, 'tenant-'||(g % ${tenants}), 'crm.leads.create', ${meta} ` +
    `FROM generate_series(${from}, ${to}) g`
  );
}
