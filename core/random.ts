/**
 * A seeded uniform source (mulberry32) shared by simulations and strategies:
 * the same seed gives the same sequence, so runs replay exactly.
 *
 * @module
 */

/**
 * Uniform floats in [0, 1) from a 32-bit seed.
 *
 * @example Usage
 * ```ts
 * import { mulberry32 } from "./random.ts";
 * const a = mulberry32(42), b = mulberry32(42);
 * a() === b(); // true
 * ```
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
