/**
 * Lifeguard's suspicion timer: a suspicion starts at the maximum timeout and
 * shrinks, on a log scale, with each independent confirmation from another
 * member, down to the minimum once `k` confirmations arrived.
 *
 * @module
 */

/**
 * The suspicion timeout after `confirmations` of `k` expected ones
 * (memberlist's formula: max − log(c + 1)/log(k + 1) · (max − min), floored
 * to whole ms, never below min).
 *
 * @example Usage
 * ```ts
 * import { suspicionTimeout } from "./suspicion.ts";
 * suspicionTimeout(0, 2, 1000, 6000); // 6000
 * suspicionTimeout(2, 2, 1000, 6000); // 1000
 * ```
 */
export function suspicionTimeout(
  confirmations: number,
  k: number,
  minMs: number,
  maxMs: number,
): number {
  if (k < 1) return minMs;
  const frac = Math.log(confirmations + 1) / Math.log(k + 1);
  const raw = Math.floor(maxMs - frac * (maxMs - minMs));
  return Math.max(minMs, raw);
}

/**
 * One suspicion of one member: who confirmed it and when it expires.
 *
 * @example Usage
 * ```ts
 * import { Suspicion } from "./suspicion.ts";
 * const s = new Suspicion("a", 2, 1000, 6000, 0);
 * s.deadline; // 6000
 * s.confirm("b"); // true
 * s.confirm("b"); // false
 * s.deadline < 6000; // true
 * ```
 */
export class Suspicion {
  #from = new Set<string>();
  #deadline: number;

  /**
   * @param from The member that raised it (does not count as a confirmation).
   * @param k Confirmations expected; below 1 the minimum applies at once.
   * @param startedAt Virtual time the suspicion began.
   */
  constructor(
    from: string,
    readonly k: number,
    readonly minMs: number,
    readonly maxMs: number,
    readonly startedAt: number,
  ) {
    this.#from.add(from);
    this.#deadline = startedAt + suspicionTimeout(0, k, minMs, maxMs);
  }

  /** Independent confirmations so far. */
  get confirmations(): number {
    return this.#from.size - 1;
  }

  /** Virtual time at which the member is declared dead. */
  get deadline(): number {
    return this.#deadline;
  }

  /** Counts a suspicion from `from`; true if it is new (and re-gossiped). */
  confirm(from: string): boolean {
    if (this.confirmations >= this.k || this.#from.has(from)) return false;
    this.#from.add(from);
    this.#deadline = this.startedAt +
      suspicionTimeout(this.confirmations, this.k, this.minMs, this.maxMs);
    return true;
  }
}
