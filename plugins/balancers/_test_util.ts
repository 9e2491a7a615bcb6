/**
 * Helpers shared by the balancer tests.
 *
 * @module
 */
import type { Balancer, Candidate, PickContext } from "./strategy.ts";

/** `n` candidates `n0`, `n1`, ... */
export function nodes(n: number): Candidate[] {
  return Array.from({ length: n }, (_, i) => ({ id: `n${i}` }));
}

/** Picks `times` times, reporting each pick at once; returns counts by id. */
export function countPicks(
  balancer: Balancer,
  candidates: readonly Candidate[],
  times: number,
  ctx?: (i: number) => PickContext,
): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < times; i++) {
    const c = balancer.pick(candidates, ctx?.(i))!;
    counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
    balancer.report(c.id, { ok: true, latencyMs: 1 });
  }
  return counts;
}

/** Largest relative deviation of the counts from `expected`. */
export function maxDeviation(
  counts: Map<string, number>,
  expected: (id: string) => number,
): number {
  let worst = 0;
  for (const [id, n] of counts) {
    worst = Math.max(worst, Math.abs(n - expected(id)) / expected(id));
  }
  return worst;
}
