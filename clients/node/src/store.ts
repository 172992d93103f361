import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { writeFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import type { Position } from "./types";

/**
 * Where the consumer keeps each channel's position. Keep it next to the application's own data:
 * a process restarted with the same store goes on exactly where it stopped.
 */
export interface PositionStore {
  /** Every persisted position, read once when the consumer starts. */
  load(): Promise<Map<string, Position>> | Map<string, Position>;
  /** After the handler returned for an event (or after a bootstrap/resync moved the channel). */
  save(channel: string, position: Position): Promise<void> | void;
  /** Write what is pending; called on `stop()`. */
  flush?(): Promise<void> | void;
}

/** Positions in memory only: a restart starts afresh. */
export class MemoryStore implements PositionStore {
  readonly positions = new Map<string, Position>();

  load(): Map<string, Position> {
    return new Map(this.positions);
  }

  save(channel: string, position: Position): void {
    this.positions.set(channel, position);
  }
}

export interface JsonFileStoreOptions {
  /**
   * Write at most this often (ms); 0 writes on every save. A crash loses at most this window,
   * and the events in it are delivered again: make the handler idempotent (see the README).
   */
  flushIntervalMs?: number;
}

/** Positions in one JSON file `{ "<channel>": { "epoch": "...", "seq": n } }`, replaced atomically. */
export class JsonFileStore implements PositionStore {
  private readonly positions = new Map<string, Position>();
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;

  constructor(
    readonly path: string,
    options: JsonFileStoreOptions = {},
  ) {
    this.intervalMs = options.flushIntervalMs ?? 100;
  }

  load(): Map<string, Position> {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map();
      throw error;
    }
    const parsed = JSON.parse(text) as Record<string, Position>;
    for (const [channel, position] of Object.entries(parsed)) this.positions.set(channel, position);
    return new Map(this.positions);
  }

  save(channel: string, position: Position): void {
    this.positions.set(channel, position);
    if (this.intervalMs === 0) {
      this.writeNow();
      return;
    }
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.intervalMs);
  }

  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty) {
      this.dirty = false;
      const text = this.serialize();
      this.writing = this.writing.then(async () => {
        mkdirSync(dirname(this.path), { recursive: true });
        await writeFile(`${this.path}.tmp`, text);
        await rename(`${this.path}.tmp`, this.path);
      });
    }
    await this.writing;
  }

  private writeNow(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    writeFileSync(`${this.path}.tmp`, this.serialize());
    renameSync(`${this.path}.tmp`, this.path);
  }

  private serialize(): string {
    return JSON.stringify(Object.fromEntries(this.positions));
  }
}
