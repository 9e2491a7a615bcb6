/**
 * Least connections: each pick takes the candidate with the fewest calls in
 * flight per unit of weight (nginx `least_conn`); ties are broken at
 * random so equal candidates share the load. Every pick counts until its
 * `report`.
 *
 * The plugin (`builtin:balancers/least-connections`) provides
 * `balancer:least-connections`.
 *
 * @module
 */
import { z } from "zod";
import { Inflight } from "./_inflight.ts";
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import {
  type Balancer,
  type Candidate,
  type RandomSource,
  seededRandom,
  weightOf,
} from "./strategy.ts";

/** Options for {@linkcode createLeastConnections}. */
export interface LeastConnectionsOptions {
  /** Breaks ties. @default {Math.random} */
  random?: RandomSource;
}

/** A least-connections balancer, which can tell its in-flight counts. */
export interface LeastConnections extends Balancer {
  /** Picks of `endpoint` not yet reported. */
  inflight(endpoint: string): number;
}

/**
 * Creates a least-connections balancer.
 *
 * @example Usage
 * ```ts
 * import { createLeastConnections } from "./least_connections.ts";
 * const lc = createLeastConnections();
 * const nodes = [{ id: "a" }, { id: "b" }];
 * const first = lc.pick(nodes)!;
 * lc.pick(nodes)!.id !== first.id; // true: the other one has no call in flight
 * lc.report(first.id, { ok: true, latencyMs: 4 });
 * lc.inflight(first.id); // 0
 * ```
 */
export function createLeastConnections(
  options: LeastConnectionsOptions = {},
): LeastConnections {
  const random = options.random ?? Math.random;
  const inflight = new Inflight();
  return {
    name: "least-connections",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      const n = candidates.length;
      if (n === 0) return undefined;
      let best = candidates[0];
      let bestLoad = inflight.get(best.id) / weightOf(best);
      let ties = 1;
      for (let i = 1; i < n; i++) {
        const c = candidates[i];
        const load = inflight.get(c.id) / weightOf(c);
        if (load < bestLoad) {
          best = c;
          bestLoad = load;
          ties = 1;
        } else if (load === bestLoad && random() * ++ties < 1) {
          // Reservoir sampling: each of the tied candidates wins with 1/ties.
          best = c;
        }
      }
      inflight.start(best.id);
      return best;
    },
    report(endpoint: string): void {
      inflight.end(endpoint);
    },
    inflight: (endpoint) => inflight.get(endpoint),
  };
}

/** The least-connections plugin. */
export default balancerPlugin({
  name: "least-connections",
  options: { seed: z.number().int().optional() },
  create: ({ seed }) =>
    createLeastConnections({
      random: seed === undefined ? undefined : seededRandom(seed),
    }),
});
