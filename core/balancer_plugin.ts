/**
 * Turns a strategy factory into a balancer plugin: kind `balancer`,
 * provides `balancer:NAME`, config = the strategy's options plus a
 * `circuitBreaker` block, and an api that is the configured strategy behind
 * per-endpoint circuit breakers (metrics in the node's registry).
 *
 * @module
 */
import { z } from "zod";
import { definePlugin, type Plugin } from "./plugin.ts";
import {
  type CircuitBreakers,
  createCircuitBreakers,
} from "./resilience/circuit_breaker.ts";
import { withCircuitBreakers } from "./resilience/guarded.ts";
import type { ZodObject, ZodOutput, ZodRawShape } from "./_npm_types.ts";
import type { Balancer } from "./contracts/balancer.ts";

/** What `kernel.get("balancer:NAME")` returns. */
export interface BalancerApi extends Balancer {
  /**
   * A fresh balancer with the plugin's config and the same circuits, for a
   * separate pool of candidates (strategy state is per pool; endpoint
   * health is per endpoint).
   */
  create(): Balancer;
  /** The per-endpoint circuits, or undefined when disabled in the config. */
  readonly breakers?: CircuitBreakers;
}

const ms = z.number().int().positive().max(3_600_000);

/** Schema of the `circuitBreaker` block every balancer plugin accepts. */
export const circuitBreakerConfig = z.strictObject({
  enabled: z.boolean().default(true),
  threshold: z.number().gt(0).max(1).default(0.5),
  minRequests: z.number().int().positive().default(20),
  windowMs: ms.default(60_000),
  halfOpenAfterMs: ms.default(10_000),
  halfOpenMaxCalls: z.number().int().positive().default(1),
});

/** What {@linkcode balancerPlugin} needs to know about a strategy. */
export interface BalancerPluginSpec<S extends ZodRawShape> {
  /** Strategy name: plugin name and the `balancer:NAME` capability. */
  name: string;
  /** The plugin's version. @default {"1.0.0"} */
  version?: string;
  /** The strategy's own config fields (with defaults). */
  options: S;
  /** Builds one balancer from the validated options. */
  create(options: ZodOutput<ZodObject<S>>): Balancer;
}

/**
 * Builds the plugin of a strategy.
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { balancerPlugin } from "./balancer_plugin.ts";
 * import { createTestKernel } from "./testing.ts";
 * const plugin = balancerPlugin({
 *   name: "first",
 *   options: { note: z.string().default("") },
 *   // The simplest strategy: the first candidate, every time.
 *   create: () => ({ name: "first", pick: (c) => c[0], report: () => {} }),
 * });
 * await using t = await createTestKernel([plugin]);
 * t.kernel.get("balancer:first").pick([{ id: "a" }, { id: "b" }])?.id; // "a"
 * ```
 */
export function balancerPlugin<S extends ZodRawShape>(
  spec: BalancerPluginSpec<S>,
): Plugin {
  const config = z.strictObject({
    ...spec.options,
    circuitBreaker: circuitBreakerConfig.default(
      circuitBreakerConfig.parse({}),
    ),
  });
  return definePlugin({
    manifest: {
      name: spec.name,
      version: spec.version ?? "1.0.0",
      kind: "balancer",
      api: "^1",
      provides: [`balancer:${spec.name}`],
      config,
    },
    setup(ctx) {
      const { circuitBreaker, ...options } = ctx.config as
        & z.infer<z.ZodObject<S>>
        & { circuitBreaker: z.infer<typeof circuitBreakerConfig> };
      const { enabled, ...breakerOptions } = circuitBreaker;
      const breakers = enabled
        ? createCircuitBreakers({ ...breakerOptions, metrics: ctx.metrics })
        : undefined;
      const create = (): Balancer => {
        const balancer = spec.create(options as z.infer<z.ZodObject<S>>);
        return breakers ? withCircuitBreakers(balancer, breakers) : balancer;
      };
      const shared = create();
      const api: BalancerApi = {
        name: shared.name,
        pick: (candidates, ctx) => shared.pick(candidates, ctx),
        report: (endpoint, outcome) => shared.report(endpoint, outcome),
        create,
        breakers,
      };
      if (breakers) {
        breakers.on("change", (e) => {
          const level = e.to === "closed" ? "info" : "warn";
          ctx.log[level](`endpoint circuit ${e.to}`, { ...e });
        });
      }
      ctx.log.debug("balancer ready", {
        strategy: spec.name,
        circuitBreaker: enabled,
      });
      return Promise.resolve({ api, stop: () => Promise.resolve() });
    },
  }) as Plugin;
}
