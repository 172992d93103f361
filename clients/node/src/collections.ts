/** A set that forgets its oldest members past `capacity` (for eventId dedup). */
export class BoundedSet<T> {
  private readonly items = new Set<T>();
  private readonly ring: T[] = [];
  private next = 0;

  constructor(readonly capacity: number) {}

  has(item: T): boolean {
    return this.items.has(item);
  }

  add(item: T): void {
    if (this.items.has(item)) return;
    if (this.ring.length < this.capacity) {
      this.ring.push(item);
    } else {
      this.items.delete(this.ring[this.next]);
      this.ring[this.next] = item;
      this.next = (this.next + 1) % this.capacity;
    }
    this.items.add(item);
  }
}

/** A FIFO queue with O(1) push and shift. */
export class Queue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
