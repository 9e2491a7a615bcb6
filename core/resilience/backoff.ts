/**
 * Exponential backoff, the one formula every retry loop in Plexus uses:
 * attempt `n` (1-based) waits `min(maxMs, baseMs × factor^(n-1))`, or with
 * full jitter a uniform random time below that (which spreads retrying
 * clients out instead of having them return in waves).
 *
 * @module
 */

/** Options for {@linkcode backoffDelay}. */
export interface BackoffDelayOptions {
  /** Delay (or jitter cap) of the first attempt, ms. @default {1000} */
  baseMs?: number;
  /** Largest delay (or jitter cap), ms. @default {60000} */
  maxMs?: number;
  /** Growth per attempt. @default {2} */
  factor?: number;
  /** `"full"`: uniform in `[0, delay)`; `"none"`: the delay itself. @default {"none"} */
  jitter?: "none" | "full";
  /** Source of uniform numbers in [0, 1), for full jitter. @default {Math.random} */
  random?: () => number;
}

/**
 * The wait before retrying after failed attempt `attempt` (1-based; below 1
 * counts as 1).
 *
 * @example Usage
 * ```ts
 * import { backoffDelay } from "./backoff.ts";
 * backoffDelay(3, { baseMs: 100, maxMs: 1000 }); // 400
 * backoffDelay(9, { baseMs: 100, maxMs: 1000 }); // 1000
 * backoffDelay(3, { baseMs: 100, jitter: "full", random: () => 0.5 }); // 200
 * ```
 */
export function backoffDelay(
  attempt: number,
  options: BackoffDelayOptions = {},
): number {
  const baseMs = options.baseMs ?? 1000;
  const maxMs = options.maxMs ?? 60_000;
  const factor = options.factor ?? 2;
  // A zero base stays zero even when factor^n overflows to Infinity.
  const cap = baseMs === 0
    ? 0
    : Math.min(maxMs, baseMs * factor ** Math.max(0, attempt - 1));
  return options.jitter === "full"
    ? (options.random ?? Math.random)() * cap
    : cap;
}
