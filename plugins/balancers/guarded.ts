/**
 * Circuit breakers in front of any strategy: endpoints whose circuit is
 * open are left out of the candidates, and every report feeds the
 * endpoint's circuit as well as the strategy.
 *
 * @module
 */
import type { CircuitBreakers } from "../../core/resilience/circuit_breaker.ts";
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
