/**
 * What the seeded consensus simulations (`consensus/raft/_sim.ts`,
 * `consensus/pbft/_sim.ts`) share: the virtual-time event queue — a binary
 * heap ordered by time, then by insertion, so equal times run in the order
 * they were scheduled and a seed replays exactly — and the FNV-1a hash
 * their traces fold into.
 *
 * @module
 */

/** The FNV-1a 32-bit offset basis: the hash of nothing. */
export const FNV = 0x811c9dc5;

/**
 * Folds `s` into the 32-bit FNV-1a hash `h` (start from {@linkcode FNV}).
 *
 * @example Usage
 * ```ts
 * import { FNV, fnv } from "./sim_events.ts";
 * fnv(FNV, "a") === fnv(FNV, "a"); // true
 * fnv(fnv(FNV, "a"), "b") === fnv(FNV, "ab"); // true
 * ```
 */
export function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  }
  return h;
}

/** One scheduled event. */
export interface SimEvent {
  /** Virtual time it runs at. */
  at: number;
  /** Insertion order, the tie-break for equal times. */
  seq: number;
  fn: () => void;
}

/**
 * A min-heap of events on (time, insertion order).
 *
 * @example Usage
 * ```ts
 * import { EventHeap } from "./sim_events.ts";
 * const q = new EventHeap();
 * const ran: string[] = [];
 * q.push(5, () => ran.push("b"));
 * q.push(1, () => ran.push("a"));
 * q.push(5, () => ran.push("c"));
 * while (q.nextAt() <= 10) q.pop()!.fn();
 * ran; // ["a", "b", "c"]
 * ```
 */
export class EventHeap {
  readonly #heap: SimEvent[] = [];
  #seq = 0;

  /** Events waiting. */
  get size(): number {
    return this.#heap.length;
  }

  /** The time of the next event, Infinity when none waits. */
  nextAt(): number {
    return this.#heap[0]?.at ?? Infinity;
  }

  /** Schedules `fn` at virtual time `at`. */
  push(at: number, fn: () => void): void {
    const heap = this.#heap;
    heap.push({ at, seq: this.#seq++, fn });
    let i = heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  }

  /** Takes the earliest event, or undefined when none waits. */
  pop(): SimEvent | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l], heap[m])) m = l;
        if (r < heap.length && less(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
