/**
 * Circuit breakers and health checks in front of any strategy: endpoints
 * whose circuit is open or whose probes fail are left out of the
 * candidates, and every report feeds the endpoint's circuit as well as the
 * strategy. The two compose:
 * `withCircuitBreakers(withHealthChecks(strategy, checks), breakers)`.
 *
 * @module
 */
import type { CircuitBreakers } from "./circuit_breaker.ts";
import type { HealthChecks } from "./health_check.ts";
import type {
  Balancer,
  Candidate,
  Outcome,
  PickContext,
} from "../contracts/balancer.ts";

/**
 * Wraps `balancer` so it only picks endpoints whose circuit lets a call
 * through (a half-open endpoint's trial slot is taken by the pick and given
 * back by the report). When every circuit is closed the candidates pass
 * through untouched, so the guard costs one counter read per pick.
 *
 * @example Usage
 * ```ts
 * import { withCircuitBreakers } from "./guarded.ts";
 * import { createCircuitBreakers } from "./circuit_breaker.ts";
 * const breakers = createCircuitBreakers({ minRequests: 1 });
 * // A strategy that always picks the first candidate it is offered.
 * const first = { name: "first", pick: <C>(c: C[]) => c[0], report: () => {} };
 * const balancer = withCircuitBreakers(first, breakers);
 * const nodes = [{ id: "a" }, { id: "b" }];
 * const a = balancer.pick(nodes)!;
 * balancer.report(a.id, { ok: false, latencyMs: 3 });
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
 * import { createHealthChecks } from "./health_check.ts";
 * const checks = createHealthChecks({
 *   probe: (id) => id === "a" ? Promise.reject(new Error("refused")) : Promise.resolve(),
 *   unhealthyThreshold: 1,
 * });
 * checks.track(["a", "b"]);
 * await checks.check();
 * const first = { name: "first", pick: <C>(c: C[]) => c[0], report: () => {} };
 * const balancer = withHealthChecks(first, checks);
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
