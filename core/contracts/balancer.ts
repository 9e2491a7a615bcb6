/**
 * The balancer contract: what the kernel and the task router need from a
 * balancing strategy. Implementations live in `plugins/balancers/`.
 *
 * A candidate is anything with an `id` (a node for work, an agent for tasks
 * routed by capability), an optional `weight` and optional `meta`. A pick
 * counts as in flight for its candidate until the matching `report`, which
 * is how load-aware strategies see load: make exactly one `report` per
 * `pick`.
 *
 * @example Usage
 * ```ts
 * import type { Balancer, Candidate } from "./balancer.ts";
 * const first: Balancer = {
 *   name: "first",
 *   pick: <C extends Candidate>(candidates: readonly C[]) => candidates[0],
 *   report: () => {},
 * };
 * first.pick([{ id: "a" }, { id: "b" }])?.id; // "a"
 * ```
 *
 * @module
 */

/** Something a balancer can choose: a node, an agent, a backend. */
export interface Candidate {
  /** Stable identity; state (weights, latency, connections) is kept by id. */
  readonly id: string;
  /** Relative capacity, a positive finite number. @default {1} */
  readonly weight?: number;
  /** Free-form data for custom strategies (zone, capabilities, version). */
  readonly meta?: Readonly<Record<string, unknown>>;
}

/** Per-call input to `pick`. */
export interface PickContext {
  /** Affinity key: calls with the same key go to the same candidate (consistent hashing). */
  readonly key?: string;
}

/** How a call to a picked candidate went. */
export interface Outcome {
  /** Whether the call succeeded (failures feed circuit breakers and latency penalties). */
  ok: boolean;
  /** Time from pick to completion, in milliseconds. */
  latencyMs: number;
}

/** A balancing strategy. */
export interface Balancer {
  /** Strategy name, e.g. `round-robin`. */
  readonly name: string;
  /**
   * Chooses one of `candidates` (undefined when there are none). The choice
   * counts as in flight until {@linkcode Balancer.report} for its id.
   */
  pick<C extends Candidate>(
    candidates: readonly C[],
    ctx?: PickContext,
  ): C | undefined;
  /** Ends one in-flight pick of `endpoint` (an id) and feeds its outcome. */
  report(endpoint: string, outcome: Outcome): void;
}

/** Source of uniform numbers in [0, 1). */
export type RandomSource = () => number;
