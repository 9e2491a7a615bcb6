/**
 * Balancing strategies, each a plugin chosen by name (`--balancer NAME`):
 * `round-robin`, `random`, `smooth-weighted` (nginx), `least-connections`,
 * `p2c-ewma` (power of two choices on peak-EWMA latency) and
 * `consistent-hash` (ring with virtual nodes, optional bounded load).
 *
 * Every strategy implements one interface, {@linkcode Balancer}:
 * `pick(candidates, ctx)` then `report(endpoint, {ok, latencyMs})` once per
 * pick. The plugins put per-endpoint circuit breakers in front
 * ({@linkcode withCircuitBreakers}). A third-party strategy is one file
 * written against this module; see `examples/least_recent.ts`.
 *
 * The plugins are exported by name (`roundRobinPlugin`, ...): each is
 * `builtin:balancers/NAME`, providing `balancer:NAME`.
 *
 * @example Usage
 * ```ts
 * import { createP2cEwma, dispatch, seededRandom } from "./mod.ts";
 * const balancer = createP2cEwma({ random: seededRandom(1) });
 * const nodes = [{ id: "node-1" }, { id: "node-2", weight: 2 }];
 * const reply = await dispatch(balancer, nodes, (node) => Promise.resolve(`hi from ${node.id}`));
 * reply.startsWith("hi from node-"); // true
 * ```
 *
 * @module
 */
export * from "./strategy.ts";
export * from "./round_robin.ts";
export * from "./random.ts";
export * from "./smooth_weighted.ts";
export * from "./least_connections.ts";
export * from "./p2c_ewma.ts";
export * from "./consistent_hash.ts";
export * from "../../core/resilience/guarded.ts";
export * from "../../core/balancer_plugin.ts";
export { default as roundRobinPlugin } from "./round_robin.ts";
export { default as randomPlugin } from "./random.ts";
export { default as smoothWeightedPlugin } from "./smooth_weighted.ts";
export { default as leastConnectionsPlugin } from "./least_connections.ts";
export { default as p2cEwmaPlugin } from "./p2c_ewma.ts";
export { default as consistentHashPlugin } from "./consistent_hash.ts";
