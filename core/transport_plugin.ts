/**
 * Turns a transport's connect function into its plugin, so every broker
 * transport has the same wrapper: kind `transport`, provides
 * `transport:NAME`, the config checked by its schema, the node's logger and
 * metrics handed to `connect` (the transport's failure and dead-letter
 * telemetry lands in the node's registry), a health check timed around one
 * cheap broker call, and `close()` on stop. When the node's `sealed` config
 * names topics, the transport is wrapped so their payloads are sealed end to
 * end (docs/security.md, "Sealed payloads").
 *
 * @module
 */
import type * as npm from "./_npm_types.ts";
import type { Logger } from "./observe/logger.ts";
import type { MetricsRegistry } from "./observe/metrics.ts";
import { tracedTransport } from "./observe/otel.ts";
import type {
  Health,
  NodeIdentity,
  PermissionSpec,
  Plugin,
  PluginContext,
  PluginManifest,
} from "./plugin.ts";
import type { Transport } from "./transport.ts";
import {
  sealedOpener,
  sealedTransport,
  SEALING_POLICY,
  type SealingPolicy,
} from "./security/sealed_transport.ts";
import {
  agentRules,
  forwardSealedToAgents,
  type SealedAgentSink,
  type SealedForwarder,
} from "./security/sealed_forward.ts";
import { nodeSealingKeys } from "./security/sealing_keys.ts";

/** The node's logger and metrics, handed to a transport's `connect`. */
export interface TransportTelemetry {
  /** The plugin's logger (records carry `{plugin: name}`). */
  log: Logger;
  /** The node's metrics registry. */
  metrics: MetricsRegistry;
}

/** What {@linkcode transportPlugin} needs to know about a transport. */
export interface TransportPluginSpec<C, T extends Transport> {
  /** Transport name: plugin name and the `transport:NAME` capability. */
  name: string;
  /** The plugin's version. @default {"1.0.0"} */
  version?: string;
  /** Schema of the plugin's config (`pluginConfig[name]`). */
  config: npm.ZodType<C>;
  /** Deno permissions the transport uses (net, the env vars it reads). */
  permissions?: PermissionSpec;
  /** Connects with the validated config plus the node's telemetry. */
  connect(options: C & TransportTelemetry, node: NodeIdentity): Promise<T>;
  /**
   * The health check: one cheap broker round trip, reported as
   * `"{name} {ms} ms"` when it resolves and as its error when it throws.
   * @default {undefined} (no health check)
   */
  probe?: { name: string; run(transport: T): Promise<unknown> };
  /** Fields of the "NAME transport connected" log line. @default {{}} */
  logFields?(config: C): Record<string, unknown>;
}

/**
 * Builds the plugin of a transport.
 *
 * @example Usage
 * ```ts
 * import { transportPlugin } from "./plugin.ts";
 * import { z } from "zod";
 * import { memoryTransport } from "../testing/mod.ts";
 * import { createTestKernel } from "./testing.ts";
 * const plugin = transportPlugin({
 *   name: "memory",
 *   config: z.strictObject({ maxMessageBytes: z.number().default(1024) }),
 *   connect: (options) => Promise.resolve(memoryTransport(options)),
 * });
 * await using t = await createTestKernel([plugin]);
 * t.kernel.get("transport:memory").caps.maxMessageBytes; // 1024
 * ```
 */
export function transportPlugin<C, T extends Transport>(
  spec: TransportPluginSpec<C, T>,
): Plugin<C> {
  const manifest: PluginManifest<C> = {
    name: spec.name,
    version: spec.version ?? "1.0.0",
    kind: "transport",
    api: "^1",
    provides: [`transport:${spec.name}`],
    config: spec.config,
    ...(spec.permissions ? { permissions: spec.permissions } : {}),
  };
  return {
    manifest,
    async setup(ctx) {
      const transport = await spec.connect(
        { ...ctx.config, log: ctx.log, metrics: ctx.metrics },
        ctx.node,
      );
      ctx.log.info(
        `${spec.name} transport connected`,
        spec.logFields?.(ctx.config) ?? {},
      );
      const probe = spec.probe;
      const { api, forwarding } = await sealIfConfigured(transport, ctx)
        .catch(async (err) => {
          await transport.close();
          throw err;
        });
      return {
        // With OTel on: publish/deliver spans, traceparent in the headers.
        api: tracedTransport(api),
        ...(probe || forwarding
          ? { health: () => transportHealth(probe, transport, forwarding) }
          : {}),
        stop: async () => {
          await forwarding?.close();
          await transport.close();
        },
      };
    },
  };
}

/**
 * The node's `sealed` config (core capability `sealing:policy`) wraps the
 * transport in {@linkcode sealedTransport} when it names any topic.
 */
async function sealIfConfigured(
  transport: Transport,
  ctx: PluginContext<unknown>,
): Promise<{ api: Transport; forwarding?: SealedForwarder }> {
  if (!ctx.kernel.has(SEALING_POLICY)) {
    return { api: transport };
  }
  const policy = ctx.kernel.get<SealingPolicy>(SEALING_POLICY);
  if (policy.topics.length === 0) return { api: transport };
  const keys = await nodeSealingKeys({
    kv: ctx.kernel.get("state:kv"),
    nodeKey: ctx.kernel.get("node:key"),
    nodeId: ctx.node.id,
    dataDir: ctx.node.dataDir,
  });
  ctx.log.info("sealed payloads on", {
    topics: policy.topics.map((t) => t.pattern),
    as: keys.id,
  });
  const api = sealedTransport(transport, policy, keys, {
    metrics: ctx.metrics,
    log: ctx.log,
    worker: policy.worker === true,
  });
  // Agents are recipients through the gateway: this node forwards what is
  // sealed to them, unopened (it holds no key of theirs).
  const forwarding = agentRules(policy).length === 0
    ? undefined
    : forwardSealedToAgents(transport, policy, {
      opener: sealedOpener({ directory: keys.directory }, {
        replayWindowMs: policy.replayWindowMs,
        clockSkewMs: policy.clockSkewMs,
      }),
      sink: () =>
        ctx.kernel.has("gateway:agents")
          ? ctx.kernel.get<SealedAgentSink>("gateway:agents")
          : undefined,
      metrics: ctx.metrics,
      log: ctx.log,
    });
  forwarding?.ready.catch((err) =>
    ctx.log.error("sealed messages for agents are not forwarded", {
      error: err,
    })
  );
  return { api, forwarding };
}

/**
 * The probe's answer (up without one) and, on a node forwarding sealed
 * messages to agents, the forwarder's entry `sealed-forward`: down (the
 * node degraded) when its subscription failed.
 */
async function transportHealth<T>(
  probe: { name: string; run(transport: T): Promise<unknown> } | undefined,
  transport: T,
  forwarding: SealedForwarder | undefined,
): Promise<Health> {
  const health: Health = probe
    ? await probeHealth(probe, transport)
    : { status: "up" };
  if (forwarding) health.entries = { "sealed-forward": forwarding.health() };
  return health;
}

async function probeHealth<T>(
  probe: { name: string; run(transport: T): Promise<unknown> },
  transport: T,
): Promise<Health> {
  const t0 = performance.now();
  try {
    await probe.run(transport);
    return {
      status: "up",
      detail: `${probe.name} ${(performance.now() - t0).toFixed(1)} ms`,
    };
  } catch (err) {
    return { status: "down", detail: (err as Error).message };
  }
}
