/**
 * The two answers a consensus plugin gives a request it could not complete,
 * shared by Raft and PBFT (each subclasses them under its own name):
 * {@linkcode ConsensusUnavailableError} — not placed, it did not happen,
 * retry (HTTP 503) — and {@linkcode ConsensusTimeoutError} — placed but not
 * answered in time, its outcome unknown (HTTP 504).
 *
 * @module
 */
import { PlexusError } from "../../core/errors.ts";

/**
 * A request that could not be placed: it did not happen; retry.
 *
 * @example Usage
 * ```ts
 * import { ConsensusUnavailableError } from "./errors.ts";
 * const e = new ConsensusUnavailableError("no leader yet");
 * e.status; // 503
 * e.retryable; // true
 * ```
 */
export class ConsensusUnavailableError extends PlexusError {
  override name = "ConsensusUnavailableError";
  /** `message` says why. HTTP 503, retry after 1 s. */
  constructor(message: string, options?: ErrorOptions) {
    super("unavailable", message, {
      retryable: true,
      status: 503,
      retryAfterS: 1,
      cause: options?.cause,
    });
  }
}

/**
 * A request placed but not answered in time (or before the node stopped):
 * its outcome is unknown — a write may still take effect.
 *
 * @example Usage
 * ```ts
 * import { ConsensusTimeoutError } from "./errors.ts";
 * const e = new ConsensusTimeoutError("not answered within 5 s");
 * e.status; // 504
 * e.retryable; // false
 * ```
 */
export class ConsensusTimeoutError extends PlexusError {
  override name = "ConsensusTimeoutError";
  /** HTTP 504; not retryable, since a write may still take effect. */
  constructor(message: string, options?: ErrorOptions) {
    super("timeout", message, { status: 504, cause: options?.cause });
  }
}

/**
 * Whether `err` is one of the two.
 *
 * @example Usage
 * ```ts
 * import { isConsensusAnswer, ConsensusTimeoutError } from "./errors.ts";
 * isConsensusAnswer(new ConsensusTimeoutError("late")); // true
 * isConsensusAnswer(new RangeError("bug")); // false
 * ```
 */
export function isConsensusAnswer(
  err: unknown,
): err is ConsensusUnavailableError | ConsensusTimeoutError {
  return err instanceof ConsensusUnavailableError ||
    err instanceof ConsensusTimeoutError;
}
