/**
 * The one interface every balancing strategy implements: `pick` a candidate
 * for a call, then `report` how the call went. The types live in
 * `core/contracts/balancer.ts` (the kernel needs them) and are re-exported
 * here beside the helpers strategies share.
 *
 * A candidate is anything with an `id` (a node for work, an agent for tasks
 * routed by capability), an optional `weight` and optional `meta`. A pick
 * counts as in flight for its candidate until the matching `report`, which
 * is how least-connections, P2C-EWMA and bounded-load hashing see load: make
 * exactly one `report` per `pick` (use {@linkcode dispatch} to get that for
 * free). Strategies draw randomness from an injected source so a seed makes
 * them deterministic in tests.
 *
 * @module
 */

import { mulberry32 } from "../../core/random.ts";
import { PlexusError } from "../../core/errors.ts";
import type {
  Balancer,
  Candidate,
  PickContext,
  RandomSource,
} from "../../core/contracts/balancer.ts";

export type {
  Balancer,
  Candidate,
  Outcome,
  PickContext,
  RandomSource,
} from "../../core/contracts/balancer.ts";

/**
 * Thrown by {@linkcode dispatch} when there is nothing to pick from.
 * Retryable: endpoints may come back.
 *
 * @example Usage
 * ```ts
 * import { NoCandidateError } from "./strategy.ts";
 * new NoCandidateError("round-robin", 0).message;
 * // "round-robin: no candidate to pick from (0 offered)"
 * ```
 */
export class NoCandidateError extends PlexusError {
  override name = "NoCandidateError";
  declare readonly code: "no_candidate";
  /** Retryable (a candidate may come back); HTTP 503. */
  constructor(balancer: string, offered: number) {
    super(
      "no_candidate",
      offered === 0
        ? `${balancer}: no candidate to pick from (0 offered)`
        : `${balancer}: none of the ${offered} candidates is available (circuits open)`,
      { retryable: true, status: 503, data: { balancer, offered } },
    );
  }
}

/**
 * Picks a candidate, runs `call` on it and reports the outcome (ok when
 * `call` resolves) with the time it took; returns what `call` returns.
 *
 * @example Usage
 * ```ts
 * import { dispatch } from "./strategy.ts";
 * import { createLeastConnections } from "./least_connections.ts";
 * const balancer = createLeastConnections();
 * const nodes = [{ id: "a" }, { id: "b" }];
 * await dispatch(balancer, nodes, (node) => Promise.resolve(`sent to ${node.id}`));
 * ```
 */
export async function dispatch<C extends Candidate, T>(
  balancer: Balancer,
  candidates: readonly C[],
  call: (candidate: C) => Promise<T>,
  options: { ctx?: PickContext; now?: () => number } = {},
): Promise<T> {
  const candidate = balancer.pick(candidates, options.ctx);
  if (!candidate) throw new NoCandidateError(balancer.name, candidates.length);
  const now = options.now ?? performance.now.bind(performance);
  const start = now();
  let result: T;
  try {
    result = await call(candidate);
  } catch (err) {
    balancer.report(candidate.id, { ok: false, latencyMs: now() - start });
    throw err;
  }
  balancer.report(candidate.id, { ok: true, latencyMs: now() - start });
  return result;
}

/**
 * The weight of `c`, checked: a positive finite number, 1 when absent.
 *
 * @example Usage
 * ```ts
 * import { weightOf } from "./strategy.ts";
 * weightOf({ id: "a" }); // 1
 * weightOf({ id: "b", weight: 5 }); // 5
 * ```
 */
export function weightOf(c: Candidate): number {
  const w = c.weight;
  if (w === undefined) return 1;
  if (!(w > 0 && w < Infinity)) {
    throw new RangeError(
      `Cannot balance: candidate '${c.id}' has weight ${w}, expected a positive finite number`,
    );
  }
  return w;
}

/**
 * A seeded uniform source in [0, 1) (mulberry32): the same seed gives the
 * same sequence, so strategies and simulations replay exactly.
 *
 * @example Usage
 * ```ts
 * import { seededRandom } from "./strategy.ts";
 * const a = seededRandom(42), b = seededRandom(42);
 * a() === b(); // true
 * ```
 */
export function seededRandom(seed: number): RandomSource {
  return mulberry32(seed);
}
