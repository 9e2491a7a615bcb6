/**
 * Circuit breakers and health checks in front of any strategy: endpoints
 * whose circuit is open or whose probes fail are left out of the
 * candidates, and every report feeds the endpoint's circuit as well as the
 * strategy. The two compose:
 * `withCircuitBreakers(withHealthChecks(strategy, checks), breakers)`.
 *
 * @module
 */
import type { CircuitBreakers } from "../../core/resilience/circuit_breaker.ts";
import type { HealthChecks } from "../../core/resilience/health_check.ts";
import type { Balancer, Candidate, Outcome, PickContext } from "./strategy.ts";

/**
 * Wraps `balancer` so it only picks endpoints whose circuit lets a call
 * through (a half-open endpoint's trial slot is taken by the pick and given
 * back by the report). When every circuit is closed the candidates pass
 * through untouched, so the guard costs one counter read per pick.
 *
 * @example Usage
 * ```ts
 * import { withCircuitBreakers } from "./guarded.ts";
 * import { createRoundRobin } from "./round_robin.ts";
 * import { createCircuitBreakers } from "../../core/resilience/circuit_breaker.ts";
 * const breakers = createCircuitBreakers({ minRequests: 1 });
 * const balancer = withCircuitBreakers(createRoundRobin(), breakers);
 * const nodes = [{ id: "a" }, { id: "b" }];
 * const first = balancer.pick(nodes)!;
 * balancer.report(first.id, { ok: false, latencyMs: 3 });
 * balancer.pick(nodes)?.id; // "b"
 * balancer.pick(nodes)?.id; // "b" (a's circuit is open)
 * ```
 */
export function withCircuitBreakers(
  balancer: Balancer,
  breakers: CircuitBreakers,
): Balancer {
  return {
    name: balancer.name,
    pick<C extends Candidate>(
      candidates: readonly C[],
      ctx?: PickContext,
    ): C | undefined {
      if (breakers.notClosed === 0) return balancer.pick(candidates, ctx);
      const picked = balancer.pick(breakers.filter(candidates), ctx);
      if (picked) breakers.get(picked.id).acquire();
      return picked;
    },
    report(endpoint: string, outcome: Outcome): void {
      balancer.report(endpoint, outcome);
      breakers.get(endpoint).record(outcome.ok);
    },
  };
}

/**
 * Wraps `balancer` so it never picks an endpoint its health checks mark
 * down. When all are up the candidates pass through untouched.
 *
 * @example Usage
 * ```ts
 * import { withHealthChecks } from "./guarded.ts";
 * import { createRoundRobin } from "./round_robin.ts";
 * import { createHealthChecks } from "../../core/resilience/health_check.ts";
 * const checks = createHealthChecks({
 *   probe: (id) => id === "a" ? Promise.reject(new Error("refused")) : Promise.resolve(),
 *   unhealthyThreshold: 1,
 * });
 * checks.track(["a", "b"]);
 * await checks.check();
 * const balancer = withHealthChecks(createRoundRobin(), checks);
 * balancer.pick([{ id: "a" }, { id: "b" }])?.id; // "b"
 * ```
 */
export function withHealthChecks(
  balancer: Balancer,
  checks: HealthChecks,
): Balancer {
  return {
    name: balancer.name,
    pick: (candidates, ctx) => balancer.pick(checks.filter(candidates), ctx),
    report: (endpoint, outcome) => balancer.report(endpoint, outcome),
  };
}
