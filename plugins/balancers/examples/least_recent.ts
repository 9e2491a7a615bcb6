/**
 * An example third-party balancing strategy, written only against the
 * plugin entry (`core/plugin.ts`, `@plexus/host/plugin` outside this
 * repository): "least recent" picks the
 * candidate that was picked longest ago (never-picked ones first, in list
 * order). Like round-robin it spreads calls evenly, but it stays fair when
 * the candidate list changes from call to call (agents that come and go),
 * where an index into the list would skip or repeat some.
 *
 * Load it with `--plugin ./plugins/balancers/examples/least_recent.ts`;
 * other plugins get it with `kernel.get("balancer:least-recent")`. Copy
 * this file to start your own strategy.
 *
 * @module
 */
import {
  type Balancer,
  balancerPlugin,
  type Candidate,
} from "../../../core/plugin.ts";

/**
 * Creates a least-recently-picked balancer.
 *
 * @example Usage
 * ```ts
 * import { createLeastRecent } from "./least_recent.ts";
 * const balancer = createLeastRecent();
 * const agents = [{ id: "a" }, { id: "b" }, { id: "c" }];
 * balancer.pick(agents)?.id; // "a"
 * balancer.pick(agents)?.id; // "b"
 * balancer.pick([{ id: "a" }, { id: "d" }])?.id; // "d" (never picked)
 * ```
 */
export function createLeastRecent(): Balancer {
  // A pick counter, not a clock: ties cannot happen and tests replay exactly.
  let tick = 0;
  const lastPicked = new Map<string, number>();
  return {
    name: "least-recent",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      let best: C | undefined;
      let bestTick = Infinity;
      for (const c of candidates) {
        const t = lastPicked.get(c.id) ?? -1;
        if (t < bestTick) {
          best = c;
          bestTick = t;
        }
      }
      if (best) {
        lastPicked.set(best.id, tick++);
        // Forget endpoints gone for good, so churn does not grow the map.
        if (lastPicked.size > 4 * candidates.length + 64) {
          const keep = new Set(candidates.map((c) => c.id));
          for (const id of lastPicked.keys()) {
            if (!keep.has(id)) lastPicked.delete(id);
          }
        }
      }
      return best;
    },
    report() {},
  };
}

/** The least-recent plugin: provides `balancer:least-recent`. */
export default balancerPlugin({
  name: "least-recent",
  version: "0.1.0",
  options: {},
  create: () => createLeastRecent(),
});
