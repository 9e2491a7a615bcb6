/**
 * The resilience layer: per-endpoint circuit breakers, active health
 * checks, retry with exponential backoff and full jitter (`backoffDelay`,
 * shared by every retry loop), timeouts, deadlines and bulkheads. Each takes an
 * injectable clock (and randomness where it has any), emits events through
 * `on(...)`, counts `plexus_*` metrics in an optional registry, and refuses
 * with a typed {@linkcode ResilienceError} carrying `code` and `retryable`.
 *
 * @example Usage
 * ```ts
 * import { createBulkhead, createCircuitBreakers, createRetry, createTimeout } from "./mod.ts";
 * const breakers = createCircuitBreakers();
 * const retry = createRetry({ retries: 2, delayMs: 1 });
 * const timeout = createTimeout();
 * const bulkhead = createBulkhead({ concurrency: 4, queueSize: 16 });
 * const answer = await bulkhead.run(() =>
 *   retry.run(() =>
 *     breakers.get("node-1").call(() =>
 *       timeout.run(() => Promise.resolve("pong"), 1000)
 *     )
 *   )
 * );
 * answer; // "pong"
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./circuit_breaker.ts";
export * from "./backoff.ts";
export * from "./retry.ts";
export * from "./deadline.ts";
export * from "./timeout.ts";
export * from "./bulkhead.ts";
export * from "./health_check.ts";
export type { Unsubscribe } from "./_events.ts";
