/**
 * The base of Plexus' typed errors: a stable `code`, whether trying again
 * may succeed (`retryable`), the HTTP status a route answers with, and the
 * figures behind it (`data`). `core/http/errors.ts` turns any of them into
 * the JSON error response, so status mapping happens in one place.
 *
 * @module
 */

/** Options for {@linkcode PlexusError}. */
export interface PlexusErrorOptions {
  /** Whether trying again (later, or elsewhere) may succeed. @default {false} */
  retryable?: boolean;
  /** The HTTP status a route answers with. @default {500} */
  status?: number;
  /** The figures behind the error (limits, ids, attempts). */
  data?: Record<string, unknown>;
  /** Seconds a client should wait; sent as `Retry-After` when retryable. */
  retryAfterS?: number;
  /** The error that led to this one. */
  cause?: unknown;
}

/**
 * Base class of Plexus' typed errors.
 *
 * @example Usage
 * ```ts
 * import { PlexusError } from "./errors.ts";
 * const err = new PlexusError("unavailable", "no leader yet", { retryable: true, status: 503 });
 * err.status; // 503
 * err.retryable; // true
 * ```
 */
export class PlexusError extends Error {
  /** Always "PlexusError" (subclasses set their own). */
  override name = "PlexusError";
  /** What kind of failure this is, stable for callers and clients. */
  readonly code: string;
  /** Whether trying again (later, or elsewhere) may succeed. */
  readonly retryable: boolean;
  /** The HTTP status a route answers with. */
  readonly status: number;
  /** The figures behind the error. */
  readonly data?: Record<string, unknown>;
  /** Seconds a client should wait before retrying, when known. */
  readonly retryAfterS?: number;
  /** `code` is stable; `message` says what was wrong and the value seen. */
  constructor(code: string, message: string, options: PlexusErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.status = options.status ?? 500;
    this.data = options.data;
    this.retryAfterS = options.retryAfterS;
  }
}
