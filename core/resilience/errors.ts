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
  | "timeout";

/**
 * Base class of the resilience errors.
 *
 * @example Usage
 * ```ts
 * import { ResilienceError, TimeoutError } from "./errors.ts";
 * const err = new TimeoutError("db", 100);
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
