/**
 * Smooth weighted round-robin, the nginx algorithm
 * (`ngx_http_upstream_get_peer`): every pick adds each candidate's
 * effective weight to its current weight, takes the largest and subtracts
 * the total from it. Weights 5, 1, 1 give `a a b a c a a`, spreading the
 * heavy candidate out instead of sending it five calls in a row.
 *
 * As in nginx, a failure lowers the candidate's effective weight (by
 * `weight / maxFails`) and each pick raises it back by one up to its
 * weight, so a failing endpoint gets less traffic and recovers gradually.
 *
 * The plugin (`builtin:balancers/smooth-weighted`) provides
 * `balancer:smooth-weighted`.
 *
 * @module
 */
import { z } from "zod";
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import {
  type Balancer,
  type Candidate,
  type Outcome,
  weightOf,
} from "./strategy.ts";

/** Options for {@linkcode createSmoothWeighted}. */
export interface SmoothWeightedOptions {
  /** Failures that take the effective weight from `weight` to 0. @default {1} */
  maxFails?: number;
}

interface Peer {
  weight: number;
  effective: number;
  current: number;
}

/**
 * Creates a smooth weighted round-robin balancer.
 *
 * @example Usage
 * ```ts
 * import { createSmoothWeighted } from "./smooth_weighted.ts";
 * const swrr = createSmoothWeighted();
 * const nodes = [{ id: "a", weight: 5 }, { id: "b", weight: 1 }, { id: "c", weight: 1 }];
 * Array.from({ length: 7 }, () => swrr.pick(nodes)?.id).join(" "); // "a a b a c a a"
 * ```
 */
export function createSmoothWeighted(
  options: SmoothWeightedOptions = {},
): Balancer {
  const maxFails = options.maxFails ?? 1;
  if (!(maxFails >= 1)) {
    throw new RangeError(
      `Cannot create smooth-weighted balancer: maxFails must be ≥ 1, got ${maxFails}`,
    );
  }
  let peers = new Map<string, Peer>();

  const peerOf = (c: Candidate): Peer => {
    const weight = weightOf(c);
    let p = peers.get(c.id);
    if (!p) {
      peers.set(c.id, p = { weight, effective: weight, current: 0 });
    } else if (p.weight !== weight) {
      p.weight = weight;
      p.effective = weight;
    }
    return p;
  };

  return {
    name: "smooth-weighted",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      const n = candidates.length;
      if (n < 2) return candidates[0];
      if (peers.size > 2 * n + 16) {
        // Forget endpoints that left, so churn does not grow the map.
        const kept = new Map<string, Peer>();
        for (const c of candidates) {
          const p = peers.get(c.id);
          if (p) kept.set(c.id, p);
        }
        peers = kept;
      }
      let total = 0;
      let best: C | undefined;
      let bestPeer: Peer | undefined;
      for (let i = 0; i < n; i++) {
        const c = candidates[i];
        const p = peerOf(c);
        p.current += p.effective;
        total += p.effective;
        if (p.effective < p.weight) p.effective++;
        if (!bestPeer || p.current > bestPeer.current) {
          best = c;
          bestPeer = p;
        }
      }
      bestPeer!.current -= total;
      return best;
    },
    report(endpoint: string, outcome: Outcome): void {
      if (outcome.ok) return;
      const p = peers.get(endpoint);
      if (p) p.effective = Math.max(0, p.effective - p.weight / maxFails);
    },
  };
}

/** The smooth weighted round-robin plugin. */
export default balancerPlugin({
  name: "smooth-weighted",
  options: { maxFails: z.number().int().positive().default(1) },
  create: (o) => createSmoothWeighted(o),
});
