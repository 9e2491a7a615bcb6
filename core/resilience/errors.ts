/**
 * Typed errors of the resilience layer. Each carries a `code`, whether a
 * retry may succeed (`retryable`) and the figures behind it (`data`), like
 * `TransportError` in `core/transport.ts`; all are {@linkcode PlexusError}s.
 *
 * @module
 */
import { PlexusError } from "../errors.ts";

/** Codes of {@linkcode ResilienceError}. */
export type ResilienceErrorCode =
  | "circuit_open"
  | "bulkhead_full"
  | "timeout"
  | "retries_exhausted";

/**
 * Base class of the resilience errors.
 *
 * @example Usage
 * ```ts
 * import { BulkheadFullError, ResilienceError } from "./errors.ts";
 * const err = new BulkheadFullError("db", { concurrency: 2, queueSize: 0 });
 * err instanceof ResilienceError; // true
 * err.retryable; // true
 * ```
 */
export class ResilienceError extends PlexusError {
  override name = "ResilienceError";
  /** What kind of refusal or failure this is. */
  declare readonly code: ResilienceErrorCode;
  /** The figures behind the error (endpoint, limits, attempts). */
  declare readonly data: Record<string, unknown>;
  /**
   * `options.retryable` says whether trying again later may succeed; a
   * timeout answers HTTP 504, every other refusal 503.
   */
  constructor(
    code: ResilienceErrorCode,
    message: string,
    options: {
      retryable: boolean;
      cause?: unknown;
      data?: Record<string, unknown>;
    },
  ) {
    super(code, message, {
      retryable: options.retryable,
      status: code === "timeout" ? 504 : 503,
      data: options.data ?? {},
      cause: options.cause,
    });
  }
}

/**
 * A call refused because the endpoint's circuit is open (or half-open with
 * its trial calls taken). Retryable: another endpoint, or this one later,
 * may answer.
 *
 * @example Usage
 * ```ts
 * import { CircuitOpenError } from "./errors.ts";
 * const err = new CircuitOpenError("node-2", { state: "open", retryInMs: 4000 });
 * err.message; // "Circuit for 'node-2' is open: calls refused for another 4000 ms"
 * ```
 */
export class CircuitOpenError extends ResilienceError {
  override name = "CircuitOpenError";
  readonly endpoint: string;
  constructor(
    endpoint: string,
    info: { state: "open" | "half-open"; retryInMs?: number },
  ) {
    super(
      "circuit_open",
      info.state === "open"
        ? `Circuit for '${endpoint}' is open: calls refused for another ${
          Math.max(0, Math.ceil(info.retryInMs ?? 0))
        } ms`
        : `Circuit for '${endpoint}' is half-open and its trial calls are in flight: call refused`,
      { retryable: true, data: { endpoint, ...info } },
    );
    this.endpoint = endpoint;
  }
}

/**
 * A call refused because a bulkhead's slots and queue are all taken.
 *
 * @example Usage
 * ```ts
 * import { BulkheadFullError } from "./errors.ts";
 * new BulkheadFullError("db", { concurrency: 4, queueSize: 10 }).message;
 * // "Bulkhead 'db' is full: 4 calls running (limit 4) and 10 queued (limit 10)"
 * ```
 */
export class BulkheadFullError extends ResilienceError {
  override name = "BulkheadFullError";
  constructor(
    bulkhead: string,
    limits: { concurrency: number; queueSize: number },
  ) {
    super(
      "bulkhead_full",
      `Bulkhead '${bulkhead}' is full: ${limits.concurrency} calls running (limit ${limits.concurrency}) and ${limits.queueSize} queued (limit ${limits.queueSize})`,
      { retryable: true, data: { bulkhead, ...limits } },
    );
  }
}

/**
 * A call that did not settle within its deadline. Retryable.
 *
 * @example Usage
 * ```ts
 * import { TimeoutError } from "./errors.ts";
 * new TimeoutError("fetch profile", 250).message;
 * // "'fetch profile' timed out after 250 ms"
 * ```
 */
export class TimeoutError extends ResilienceError {
  override name = "TimeoutError";
  constructor(operation: string, timeoutMs: number) {
    super("timeout", `'${operation}' timed out after ${timeoutMs} ms`, {
      retryable: true,
      data: { operation, timeoutMs },
    });
  }
}

/**
 * Every allowed attempt failed with a retryable error; `cause` is the last
 * one. Not retryable itself (the retry budget is spent).
 *
 * @example Usage
 * ```ts
 * import { RetriesExhaustedError } from "./errors.ts";
 * const err = new RetriesExhaustedError("send", 4, new Error("reset"));
 * err.message; // "'send' failed after 4 attempts: reset"
 * ```
 */
export class RetriesExhaustedError extends ResilienceError {
  override name = "RetriesExhaustedError";
  readonly attempts: number;
  constructor(operation: string, attempts: number, lastError: unknown) {
    super(
      "retries_exhausted",
      `'${operation}' failed after ${attempts} attempt${
        attempts === 1 ? "" : "s"
      }: ${lastError instanceof Error ? lastError.message : String(lastError)}`,
      { retryable: false, cause: lastError, data: { operation, attempts } },
    );
    this.attempts = attempts;
  }
}

/**
 * Whether `err` says a retry may succeed: its `retryable` property is `true`
 * (resilience errors, `TransportError`, Moleculer-style errors).
 *
 * @example Usage
 * ```ts
 * import { isRetryable, TimeoutError } from "./errors.ts";
 * isRetryable(new TimeoutError("x", 1)); // true
 * isRetryable(new TypeError("bad input")); // false
 * ```
 */
export function isRetryable(err: unknown): boolean {
  return typeof err === "object" && err !== null &&
    (err as { retryable?: unknown }).retryable === true;
}
