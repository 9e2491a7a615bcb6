/**
 * The piggyback queue (memberlist's TransmitLimitedQueue): each broadcast is
 * sent a limited number of times, fewest-sent first and newest first among
 * equals, and a newer broadcast about the same member replaces the old one.
 *
 * @module
 */

interface Item {
  /** Enqueue order: higher is newer. */
  id: number;
  key: string;
  bytes: Uint8Array;
  transmits: number;
  live: boolean;
}

/**
 * Broadcasts waiting to be piggybacked, keyed by the member they are about.
 *
 * @example Usage
 * ```ts
 * import { BroadcastQueue } from "./broadcast.ts";
 * const q = new BroadcastQueue();
 * q.enqueue("node-a", new Uint8Array(10));
 * q.take(1400, 2).length; // 1
 * q.take(1400, 2).length; // 1
 * q.size; // 0
 * ```
 */
export class BroadcastQueue {
  /** buckets[t] holds the items sent t times, oldest first. */
  #buckets: Item[][] = [];
  #nextId = 0;
  #byKey = new Map<string, Item>();

  /** Pending broadcasts. */
  get size(): number {
    return this.#byKey.size;
  }

  /** Whether a broadcast about `key` is still waiting to be sent out. */
  has(key: string): boolean {
    return this.#byKey.has(key);
  }

  /** Queues `bytes`, replacing any pending broadcast with the same key. */
  enqueue(key: string, bytes: Uint8Array): void {
    const old = this.#byKey.get(key);
    if (old) old.live = false;
    const item: Item = {
      id: this.#nextId++,
      key,
      bytes,
      transmits: 0,
      live: true,
    };
    this.#byKey.set(key, item);
    (this.#buckets[0] ??= []).push(item);
  }

  /**
   * Takes broadcasts that fit in `budgetBytes`, counting one transmission
   * each; an item sent `limit` times leaves the queue.
   */
  take(budgetBytes: number, limit: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.#byKey.size === 0) return out;
    let room = budgetBytes;
    const moved: Item[] = [];
    for (let t = 0; t < this.#buckets.length && room > 0; t++) {
      const bucket = this.#buckets[t];
      if (!bucket || bucket.length === 0) continue;
      const keep: Item[] = [];
      let i = bucket.length - 1;
      for (; i >= 0; i--) {
        const item = bucket[i];
        if (!item.live) continue;
        if (item.transmits >= limit) {
          this.#drop(item);
          continue;
        }
        if (item.bytes.length > room) {
          keep.push(item);
          continue;
        }
        out.push(item.bytes);
        room -= item.bytes.length;
        item.transmits++;
        if (item.transmits >= limit) this.#drop(item);
        else moved.push(item);
        if (room < 8) {
          i--;
          break;
        }
      }
      // Untouched older items stay in front, in their original order.
      const rest = bucket.slice(0, i + 1).filter((x) => x.live);
      keep.reverse();
      this.#buckets[t] = rest.concat(keep);
    }
    // Items reach the next bucket newest first; merge them in by age.
    moved.reverse();
    let start = 0;
    while (start < moved.length) {
      const t = moved[start].transmits;
      let end = start;
      while (end < moved.length && moved[end].transmits === t) end++;
      const run = moved.slice(start, end).sort((a, b) => a.id - b.id);
      this.#buckets[t] = mergeById(this.#buckets[t] ?? [], run);
      start = end;
    }
    return out;
  }

  #drop(item: Item): void {
    item.live = false;
    if (this.#byKey.get(item.key) === item) this.#byKey.delete(item.key);
  }
}

function mergeById(a: Item[], b: Item[]): Item[] {
  if (a.length === 0) return b;
  const out: Item[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    out.push(a[i].id < b[j].id ? a[i++] : b[j++]);
  }
  while (i < a.length) out.push(a[i++]);
  while (j < b.length) out.push(b[j++]);
  return out;
}
