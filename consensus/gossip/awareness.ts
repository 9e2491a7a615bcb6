/**
 * Lifeguard's local health awareness: a score that rises when this member
 * misses acks or nacks it should have had (its own slowness is the likely
 * cause) and falls with each successful probe; timeouts scale by score + 1.
 *
 * @module
 */

/**
 * A bounded health score; 0 is healthy.
 *
 * @example Usage
 * ```ts
 * import { Awareness } from "./awareness.ts";
 * const a = new Awareness(8);
 * a.apply(3);
 * a.scale(1000); // 4000
 * a.apply(-10);
 * a.score; // 0
 * ```
 */
export class Awareness {
  #score = 0;
  /** @param max The largest multiplier; the score stays in [0, max − 1]. */
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`Awareness max must be an integer >= 1, got ${max}`);
    }
  }

  /** Current score. */
  get score(): number {
    return this.#score;
  }

  /** Adds `delta`, clamped to [0, max − 1]. */
  apply(delta: number): void {
    this.#score = Math.min(this.max - 1, Math.max(0, this.#score + delta));
  }

  /** `ms` scaled by score + 1. */
  scale(ms: number): number {
    return ms * (this.#score + 1);
  }
}
