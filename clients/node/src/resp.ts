// RESP2, as much as a shard subscriber needs: commands out, replies and pushes in. ioredis
// treats a `sunsubscribe` that the server sends on its own as the reply to a command it did
// not send, so the cluster subscriber speaks to Redis with this instead.

/** An error reply (`-MOVED 3999 127.0.0.1:7002`). */
export class ReplyError {
  constructor(readonly message: string) {}
}

export type Reply = string | number | null | ReplyError | Reply[];

/** One command in RESP: an array of bulk strings. */
export function encodeCommand(args: string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, "utf8");
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/** Not enough bytes yet; `need` is how many (from the reply's first byte) it takes at least. */
class Incomplete {
  constructor(readonly need: number) {}
}

/** Reads replies from the chunks of a socket, calling `onReply` for each complete one. */
export class ReplyParser {
  private chunks: Buffer[] = [];
  private size = 0;
  private need = 0;

  constructor(private readonly onReply: (reply: Reply) => void) {}

  feed(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return; // a large bulk string still arriving: do not re-parse
    const buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.size);
    let at = 0;
    this.need = 0;
    while (at < buf.length) {
      const parsed = parse(buf, at);
      if (parsed instanceof Incomplete) {
        this.need = parsed.need;
        break;
      }
      at = parsed[1];
      this.onReply(parsed[0]);
    }
    const rest = at === 0 ? buf : buf.subarray(at);
    this.chunks = rest.length ? [rest] : [];
    this.size = rest.length;
  }
}

/** The integer of a `$`, `*` or `:` header, read from its bytes (no string in between). */
function integer(buf: Buffer, from: number, to: number): number {
  let negative = false;
  let value = 0;
  for (let i = from; i < to; i++) {
    const c = buf[i];
    if (c === 0x2d) negative = true;
    else value = value * 10 + (c - 0x30);
  }
  return negative ? -value : value;
}

function parse(buf: Buffer, start: number): [Reply, number] | Incomplete {
  const eol = buf.indexOf(0x0d, start + 1);
  if (eol < 0) return new Incomplete(buf.length - start + 2); // \r\n still to come
  if (eol + 1 >= buf.length) return new Incomplete(buf.length - start + 1);
  switch (buf[start]) {
    case 0x2b: // +
      return [buf.toString("utf8", start + 1, eol), eol + 2];
    case 0x2d: // -
      return [new ReplyError(buf.toString("utf8", start + 1, eol)), eol + 2];
    case 0x3a: // :
      return [integer(buf, start + 1, eol), eol + 2];
    case 0x24: {
      // $
      const length = integer(buf, start + 1, eol);
      if (length < 0) return [null, eol + 2];
      const end = eol + 2 + length;
      if (end + 2 > buf.length) return new Incomplete(end + 2 - start);
      return [buf.toString("utf8", eol + 2, end), end + 2];
    }
    case 0x2a: {
      // *
      const count = integer(buf, start + 1, eol);
      if (count < 0) return [null, eol + 2];
      const items: Reply[] = new Array(count);
      let at = eol + 2;
      for (let i = 0; i < count; i++) {
        if (at >= buf.length) return new Incomplete(at - start + 1);
        const item = parse(buf, at);
        if (item instanceof Incomplete) return new Incomplete(at - start + item.need);
        items[i] = item[0];
        at = item[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`not RESP: byte ${buf[start]} at ${start}`);
  }
}
