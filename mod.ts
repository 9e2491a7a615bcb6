/**
 * Plexus: a Deno-native distributed plugin host.
 *
 * Plugin authors need {@linkcode definePlugin} and the contract types;
 * embedders can boot a node with {@linkcode startNode}.
 *
 * @module
 */
export * from "./core/plugin.ts";
export {
  createKernel,
  type Kernel,
  type PluginInfo,
  type PluginState,
  resolvePlan,
} from "./core/kernel.ts";
export { type Config, ConfigError, loadConfig } from "./core/config.ts";
export { type NodeHandle, startNode } from "./core/node.ts";
export { createRouter, type Router, topicMatches } from "./core/router.ts";
export {
  createEnvelope,
  type Envelope,
  envelopeSchema,
} from "./core/envelope.ts";
export { createLogger, type Logger } from "./core/observe/logger.ts";
export { createMetrics, type MetricsRegistry } from "./core/observe/metrics.ts";
export { createTestKernel } from "./core/testing.ts";
