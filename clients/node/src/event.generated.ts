/* Generated from schema/event.schema.json by `npm run gen:types`; do not edit. */

/**
 * One message Sluice publishes on the Redis channel <app>:<tenant>:<type> (and keeps in sluice:history:{<channel>}). Keys are camelCase; consumers must ignore keys they do not know.
 */
export interface SluiceEvent {
  /**
   * The message's number on its channel within its epoch: 1, 2, 3 ... with no gap and no repeat. Absent on replays.
   */
  seq?: number;
  /**
   * Changes only when Redis lost the channel's state; numbering then starts again at 1. Absent on replays.
   */
  epoch?: string;
  /**
   * Stable id of the change: the same on a retry, after a crash, on a replay. <commit LSN>:<index> in logical mode, cl:<change_log id> in trigger mode.
   */
  eventId: string;
  operation: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "SNAPSHOT" | "MOVED_OUT";
  app: string;
  tenantId: string;
  dataType: string;
  /**
   * schema.table
   */
  table: string;
  /**
   * The primary key (composite keys joined by ','); null when the table has none.
   */
  recordId: string | null;
  /**
   * The row after the change (for DELETE and MOVED_OUT, the row before), equal to PostgreSQL's to_jsonb(row).
   */
  data: {
    [k: string]: unknown;
  } | null;
  /**
   * Previous values of the changed columns, when the source knows them.
   */
  old?: {
    [k: string]: unknown;
  };
  changedFields?: string[];
  /**
   * TOASTed columns an UPDATE did not touch: left out of data, never null.
   */
  unchangedColumns?: string[];
  /**
   * RFC 3339, UTC, microseconds: the commit time (logical mode) or the write time (trigger mode).
   */
  timestamp: string;
  source: {
    mode: "logical" | "trigger";
    lsn?: string;
    xid?: number;
    id?: number;
    [k: string]: unknown;
  };
  /**
   * Set when an operator re-published the change; such messages carry no seq.
   */
  replay?: "change_log" | "dead_letter";
  [k: string]: unknown;
}
