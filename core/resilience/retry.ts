/**
 * Retry with exponential backoff and full jitter, for retryable errors only.
 *
 * Retry `n` (1-based) waits a uniformly random time in
 * `[0, min(maxDelayMs, delayMs × factor^(n-1)))` ("full jitter", which
 * spreads retrying clients out instead of having them return in waves).
 * An error is retried only when the predicate says so; by default when its
 * `retryable` property is `true`.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { Emitter, type Unsubscribe } from "./_events.ts";
import { backoffDelay } from "./backoff.ts";
import { isRetryable, RetriesExhaustedError } from "./errors.ts";

/** Options for {@linkcode createRetry}. */
export interface RetryOptions {
  /** Name in error messages, events and the `policy` metric label. @default {"call"} */
  name?: string;
  /** Attempts after the first one. @default {5} */
  retries?: number;
  /** Backoff cap of the first retry. @default {100} */
  delayMs?: number;
  /** Largest backoff cap. @default {1000} */
  maxDelayMs?: number;
  /** Growth of the cap per retry. @default {2} */
  factor?: number;
  /** Whether an error may be retried. @default {isRetryable: `err.retryable === true`} */
  retryIf?: (err: unknown) => boolean;
  /** Source of uniform numbers in [0, 1). @default {Math.random} */
  random?: () => number;
  /** Sleeps between attempts (`sleep()` is used). @default {systemClock} */
  clock?: Clock;
  /** Registry for `plexus_retry_*` metrics. */
  metrics?: MetricsRegistry;
}

/** Emitted before each wait (`retry`) and when the last attempt failed (`exhausted`). */
export interface RetryEvents extends Record<string, unknown> {
  /** A retryable error; `delayMs` is the wait before attempt `attempt + 1`. */
  retry: { name: string; attempt: number; delayMs: number; error: unknown };
  /** The last allowed attempt failed with a retryable error. */
  exhausted: { name: string; attempts: number; error: unknown };
}

/** A retry policy. */
export interface Retry {
  /**
   * Runs `fn` until it resolves, throws a non-retryable error (rethrown as
   * is) or runs out of retries ({@linkcode RetriesExhaustedError} with the
   * last error as `cause`). `fn` gets the attempt number, from 1.
   */
  run<T>(
    fn: (attempt: number) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T>;
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof RetryEvents>(
    event: K,
    listener: (e: RetryEvents[K]) => void,
  ): Unsubscribe;
}

/**
 * Creates a retry policy.
 *
 * @example Usage
 * ```ts
 * import { createRetry } from "./retry.ts";
 * import { TimeoutError } from "./errors.ts";
 * const retry = createRetry({ retries: 3, delayMs: 1 });
 * let calls = 0;
 * await retry.run(async () => {
 *   if (++calls < 3) throw new TimeoutError("ping", 10);
 *   return "pong";
 * }); // "pong"
 * calls; // 3
 * ```
 */
export function createRetry(options: RetryOptions = {}): Retry {
  const o = {
    name: "call",
    retries: 5,
    delayMs: 100,
    maxDelayMs: 1000,
    factor: 2,
    retryIf: isRetryable,
    random: Math.random,
    clock: systemClock,
    ...options,
  };
  if (!Number.isInteger(o.retries) || o.retries < 0) {
    throw new RangeError(
      `Cannot create retry: retries must be a non-negative integer, got ${o.retries}`,
    );
  }
  for (const k of ["delayMs", "maxDelayMs"] as const) {
    if (!(o[k] >= 0 && Number.isFinite(o[k]))) {
      throw new RangeError(
        `Cannot create retry: ${k} must be a finite number ≥ 0, got ${o[k]}`,
      );
    }
  }
  if (!(o.factor >= 1)) {
    throw new RangeError(
      `Cannot create retry: factor must be ≥ 1, got ${o.factor}`,
    );
  }
  const events = new Emitter<RetryEvents>();
  const retried = o.metrics?.counter(
    "plexus_retry_attempts_total",
    "Retries made after a retryable error, by policy",
  ).labels({ policy: o.name });
  const exhausted = o.metrics?.counter(
    "plexus_retry_exhausted_total",
    "Calls that failed every allowed attempt, by policy",
  ).labels({ policy: o.name });
  return {
    async run(fn, signal) {
      for (let attempt = 1;; attempt++) {
        signal?.throwIfAborted();
        try {
          return await fn(attempt);
        } catch (err) {
          if (!o.retryIf(err)) throw err;
          if (attempt > o.retries) {
            exhausted?.inc();
            events.emit("exhausted", {
              name: o.name,
              attempts: attempt,
              error: err,
            });
            throw new RetriesExhaustedError(o.name, attempt, err);
          }
          const delayMs = backoffDelay(attempt, {
            baseMs: o.delayMs,
            maxMs: o.maxDelayMs,
            factor: o.factor,
            jitter: "full",
            random: o.random,
          });
          retried?.inc();
          events.emit("retry", { name: o.name, attempt, delayMs, error: err });
          await o.clock.sleep(delayMs, signal);
        }
      }
    },
    on: (event, listener) => events.on(event, listener),
  };
}
