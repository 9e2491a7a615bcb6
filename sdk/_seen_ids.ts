/**
 * The agent SDK's memory of handled message ids: the last `size` distinct
 * ids, least recently seen forgotten first. Private to `sdk/`.
 *
 * @module
 */

/**
 * A bounded LRU set of ids. A `Map` kept in insertion order and trimmed
 * with `keys().next()` walks over the holes its deletes leave at the front
 * until the table is rebuilt: ~7 µs an id at 10,000 ids, most of an agent's
 * CPU per message. Here a `Set` answers `has` and a queue beside it keeps
 * the order, trimmed from its head by key (~0.1 µs). An id seen again (a
 * redelivery: rare) is moved to the end of the queue, a linear search.
 *
 * @example Usage
 * ```ts
 * import { SeenIds } from "./_seen_ids.ts";
 * import assert from "node:assert/strict";
 * const seen = new SeenIds(2);
 * seen.add("a");
 * seen.add("b");
 * seen.add("a"); // seen again: now the most recent
 * seen.add("c"); // forgets "b"
 * assert.deepEqual([seen.has("a"), seen.has("b"), seen.has("c")], [true, false, true]);
 * ```
 */
export class SeenIds {
  readonly #size: number;
  readonly #ids = new Set<string>();
  /** The ids, least recent first, from `#head` on. */
  #order: string[] = [];
  #head = 0;

  /** Remembers up to `size` ids (at least 1). */
  constructor(size: number) {
    if (!(size >= 1)) {
      throw new RangeError(`size must be at least 1, got ${size}`);
    }
    this.#size = size;
  }

  /** How many ids are remembered. */
  get size(): number {
    return this.#ids.size;
  }

  /** Whether `id` is remembered. */
  has(id: string): boolean {
    return this.#ids.has(id);
  }

  /** Remembers `id` as the most recent; forgets the least recent past the size. */
  add(id: string): void {
    const order = this.#order, ids = this.#ids;
    const before = ids.size;
    ids.add(id); // one lookup: a size that did not grow means seen before
    if (ids.size === before) {
      order.splice(order.lastIndexOf(id), 1);
      order.push(id);
      return;
    }
    order.push(id);
    if (ids.size > this.#size) ids.delete(order[this.#head++]);
    // The entries before the head are gone: dropped once they are half.
    if (this.#head > 1024 && this.#head * 2 > order.length) {
      this.#order = order.slice(this.#head);
      this.#head = 0;
    }
  }
}
