/**
 * The agent SDK's memory of handled message ids: the last `size` distinct
 * ids, least recently seen forgotten first. Private to `sdk/`.
 *
 * @module
 */
import { deleteOldest } from "../core/oldest.ts";

/**
 * A bounded LRU set of ids: a `Set` in insertion order, an id seen again
 * moved to the end, the least recent dropped with `deleteOldest`
 * (core/oldest.ts: a `keys().next()` from the front walks the holes the
 * deletes leave there, ~7 µs an id at 10,000 ids, most of an agent's CPU
 * per message).
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
    const ids = this.#ids;
    ids.delete(id);
    ids.add(id);
    if (ids.size > this.#size) deleteOldest(ids);
  }
}
