/**
 * Round-robin: each pick takes the next candidate in order, wrapping round.
 * The plugin (`builtin:balancers/round-robin`) provides
 * `balancer:round-robin`.
 *
 * @module
 */
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import type { Balancer, Candidate } from "./strategy.ts";

/**
 * Creates a round-robin balancer. Weights are ignored (see
 * `createSmoothWeighted`); reports are ignored too.
 *
 * @example Usage
 * ```ts
 * import { createRoundRobin } from "./round_robin.ts";
 * const rr = createRoundRobin();
 * const nodes = [{ id: "a" }, { id: "b" }, { id: "c" }];
 * [1, 2, 3, 4].map(() => rr.pick(nodes)?.id); // ["a", "b", "c", "a"]
 * ```
 */
export function createRoundRobin(): Balancer {
  let next = 0;
  return {
    name: "round-robin",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      const n = candidates.length;
      if (n === 0) return undefined;
      const i = next < n ? next : next % n;
      next = i + 1;
      return candidates[i];
    },
    report() {},
  };
}

/** The round-robin plugin. */
export default balancerPlugin({
  name: "round-robin",
  options: {},
  create: () => createRoundRobin(),
});
