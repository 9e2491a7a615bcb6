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
  CORE_CAPABILITIES,
  createKernel,
  type Kernel,
  type KernelOptions,
  type PluginInfo,
  type PluginIsolation,
  type PluginState,
  type ResolvedPlan,
  resolvePlan,
  type SwapReport,
} from "./core/kernel.ts";
export {
  actionTopic,
  createServiceBroker,
  type LocalAction,
  type ServiceBroker,
  type ServiceBrokerOptions,
} from "./core/services.ts";
export {
  type Config,
  ConfigError,
  loadConfig,
  type LoadConfigOptions,
  type ParsedCommand,
  type RateLimit,
} from "./core/config.ts";
export {
  type NodeHandle,
  startNode,
  type StartNodeOptions,
} from "./core/node.ts";
export {
  createRouter,
  type Router,
  type RouterOptions,
  topicMatches,
} from "./core/router.ts";
export {
  createEnvelope,
  type Envelope,
  type EnvelopeInput,
  type EnvelopeParse,
  envelopeSchema,
  parseEnvelope,
  safeParseEnvelope,
} from "./core/envelope.ts";
export {
  createLogger,
  type Logger,
  type LoggerOptions,
  type LogRecord,
  type LogSink,
} from "./core/observe/logger.ts";
export { createMetrics, type MetricsRegistry } from "./core/observe/metrics.ts";
export type {
  LogStream,
  LogStreamStats,
  StreamMessage,
  StreamMessageType,
} from "./core/observe/log_stream.ts";
export type { Security } from "./core/http/security.ts";
export type {
  LoginInput,
  OperatorSessions,
  OperatorSessionView,
  SessionSummary,
  SessionVerifier,
} from "./core/http/session.ts";
export type { Authenticator, AuthFailure } from "./core/http/auth.ts";
export type {
  IssueOptions,
  JwtAuthority,
  VerifiedToken,
} from "./core/security/jwt.ts";
export type {
  Keyring,
  PublicTrustedKey,
  TrustedKey,
} from "./core/security/keyring.ts";
export type {
  RateLimitDecision,
  RateLimiter,
  RateLimitPolicy,
  RateLimitStats,
} from "./core/security/rate_limit.ts";
export type { SignatureKey } from "./core/security/http_signatures/mod.ts";
export type { PluginCatalog } from "./core/loader.ts";
export type { AuthVariables } from "./core/http/auth.ts";
export {
  createTestKernel,
  type TestKernel,
  type TestKernelOptions,
} from "./core/testing.ts";
