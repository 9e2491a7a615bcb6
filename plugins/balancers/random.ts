/**
 * Random: each pick is uniform over the candidates. The plugin
 * (`builtin:balancers/random`) provides `balancer:random`; config `seed`
 * makes it replay.
 *
 * @module
 */
import { z } from "zod";
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import {
  type Balancer,
  type Candidate,
  type RandomSource,
  seededRandom,
} from "./strategy.ts";

/** Options for {@linkcode createRandom}. */
export interface RandomOptions {
  /** Draws the picks; pass `seededRandom(n)` to replay. @default {Math.random} */
  random?: RandomSource;
}

/**
 * Creates a uniform random balancer.
 *
 * @example Usage
 * ```ts
 * import { createRandom } from "./random.ts";
 * import { seededRandom } from "./strategy.ts";
 * const balancer = createRandom({ random: seededRandom(1) });
 * balancer.pick([{ id: "a" }, { id: "b" }])?.id; // "a" or "b", the same every run
 * ```
 */
export function createRandom(options: RandomOptions = {}): Balancer {
  const random = options.random ?? Math.random;
  return {
    name: "random",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      const n = candidates.length;
      if (n < 2) return candidates[0];
      return candidates[Math.floor(random() * n)];
    },
    report() {},
  };
}

/** The random plugin. */
export default balancerPlugin({
  name: "random",
  options: { seed: z.number().int().optional() },
  create: ({ seed }) =>
    createRandom({
      random: seed === undefined ? undefined : seededRandom(seed),
    }),
});
