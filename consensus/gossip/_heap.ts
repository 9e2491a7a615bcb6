/**
 * A binary min-heap of timed entries ordered by (at, insertion order), so
 * equal times run first-in first-out and a seeded run replays exactly.
 *
 * @module
 */

interface Entry<T> {
  at: number;
  seq: number;
  value: T;
}

/**
 * Timed entries, earliest first.
 *
 * @example Usage
 * ```ts
 * import { TimerHeap } from "./_heap.ts";
 * const h = new TimerHeap<string>();
 * h.push(5, "late");
 * h.push(1, "early");
 * h.pop()?.value; // "early"
 * ```
 */
export class TimerHeap<T> {
  #items: Entry<T>[] = [];
  #seq = 0;

  /** Entries held. */
  get size(): number {
    return this.#items.length;
  }

  /** Time of the earliest entry, or Infinity when empty. */
  peekAt(): number {
    return this.#items.length ? this.#items[0].at : Infinity;
  }

  /** Adds `value` due at `at`. */
  push(at: number, value: T): void {
    const items = this.#items;
    const e: Entry<T> = { at, seq: this.#seq++, value };
    let i = items.length;
    items.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(e, items[p])) break;
      items[i] = items[p];
      i = p;
    }
    items[i] = e;
  }

  /** Removes and returns the earliest entry. */
  pop(): { at: number; value: T } | undefined {
    const items = this.#items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      let i = 0;
      const n = items.length;
      while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && less(items[r], items[l]) ? r : l;
        if (!less(items[c], last)) break;
        items[i] = items[c];
        i = c;
      }
      items[i] = last;
    }
    return top;
  }
}

function less<T>(a: Entry<T>, b: Entry<T>): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
