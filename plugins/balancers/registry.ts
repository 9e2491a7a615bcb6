/**
 * Strategies by name, Moleculer-style: resolve a name or `{type, options}`
 * to a new balancer, and let third parties `register` more.
 *
 * @module
 */
import { createConsistentHash } from "./consistent_hash.ts";
import { createLeastConnections } from "./least_connections.ts";
import { createP2cEwma } from "./p2c_ewma.ts";
import { createRandom } from "./random.ts";
import { createRoundRobin } from "./round_robin.ts";
import { createSmoothWeighted } from "./smooth_weighted.ts";
import type { Balancer } from "./strategy.ts";

/** Builds a balancer from options (each strategy documents its own). */
// deno-lint-ignore no-explicit-any -- each strategy has its own options type
export type BalancerFactory = (options?: any) => Balancer;

const factories = new Map<string, BalancerFactory>([
  ["round-robin", createRoundRobin],
  ["random", createRandom],
  ["smooth-weighted", createSmoothWeighted],
  ["least-connections", createLeastConnections],
  ["p2c-ewma", createP2cEwma],
  ["consistent-hash", createConsistentHash],
]);

/**
 * Adds (or replaces) a strategy under `name`.
 *
 * @example Usage
 * ```ts
 * import { createBalancer, registerBalancer } from "./registry.ts";
 * import { createRoundRobin } from "./round_robin.ts";
 * registerBalancer("my-rr", () => createRoundRobin());
 * createBalancer("my-rr").pick([{ id: "a" }])?.id; // "a"
 * ```
 */
export function registerBalancer(name: string, factory: BalancerFactory): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new TypeError(
      `Cannot register balancer: name must be lower case like 'round-robin', got '${name}'`,
    );
  }
  factories.set(name, factory);
}

/** Names of the registered strategies. */
export function balancerNames(): string[] {
  return [...factories.keys()];
}

/**
 * A new balancer from a name or `{type, options}`.
 *
 * @example Usage
 * ```ts
 * import { createBalancer } from "./registry.ts";
 * createBalancer("round-robin").name; // "round-robin"
 * createBalancer({ type: "consistent-hash", options: { boundedLoad: 1.25 } }).name; // "consistent-hash"
 * ```
 */
export function createBalancer(
  spec: string | { type: string; options?: Record<string, unknown> },
): Balancer {
  const { type, options } = typeof spec === "string"
    ? { type: spec, options: undefined }
    : spec;
  const factory = factories.get(type);
  if (!factory) {
    throw new TypeError(
      `Cannot create balancer: unknown strategy '${type}' (registered: ${
        balancerNames().join(", ")
      })`,
    );
  }
  return factory(options);
}
