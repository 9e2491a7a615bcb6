/**
 * Deadlines for calls: the call gets an `AbortSignal` that aborts at the
 * deadline, and the caller gets a {@linkcode TimeoutError} then, whether or
 * not the call honours the signal.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { Emitter, type Unsubscribe } from "./_events.ts";
import { TimeoutError } from "./errors.ts";

/** Options for {@linkcode createTimeout}. */
export interface TimeoutOptions {
  /** Name in error messages, events and the `policy` metric label. @default {"call"} */
  name?: string;
  /** Time source; the deadline is a `clock.sleep`. @default {systemClock} */
  clock?: Clock;
  /** Registry for the `plexus_timeouts_total` counter. */
  metrics?: MetricsRegistry;
}

/** Emitted when a call misses its deadline. */
export interface TimeoutEvents extends Record<string, unknown> {
  /** A call missed its deadline of `timeoutMs`. */
  timeout: { name: string; timeoutMs: number };
}

/** A timeout policy. */
export interface Timeout {
  /** Runs `fn`, rejecting with {@linkcode TimeoutError} after `timeoutMs`. */
  run<T>(
    fn: (signal: AbortSignal) => Promise<T>,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<T>;
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof TimeoutEvents>(
    event: K,
    listener: (e: TimeoutEvents[K]) => void,
  ): Unsubscribe;
}

/**
 * Creates a timeout policy.
 *
 * @example Usage
 * ```ts
 * import { createTimeout } from "./timeout.ts";
 * import { TimeoutError } from "./errors.ts";
 * const timeout = createTimeout({ name: "slow call" });
 * try {
 *   await timeout.run((signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))), 5);
 * } catch (err) {
 *   err instanceof TimeoutError; // true
 * }
 * ```
 */
export function createTimeout(options: TimeoutOptions = {}): Timeout {
  const name = options.name ?? "call";
  const clock = options.clock ?? systemClock;
  const events = new Emitter<TimeoutEvents>();
  const timeouts = options.metrics?.counter(
    "plexus_timeouts_total",
    "Calls that missed their deadline, by policy",
  ).labels({ policy: name });
  return {
    run<T>(
      fn: (signal: AbortSignal) => Promise<T>,
      timeoutMs: number,
      signal?: AbortSignal,
    ): Promise<T> {
      if (!(timeoutMs > 0)) {
        return Promise.reject(
          new RangeError(
            `Cannot run '${name}' with a timeout: timeoutMs must be > 0, got ${timeoutMs}`,
          ),
        );
      }
      if (signal?.aborted) return Promise.reject(signal.reason);
      return new Promise<T>((resolve, reject) => {
        const call = new AbortController();
        const timer = new AbortController();
        const finish = () => {
          timer.abort();
          signal?.removeEventListener("abort", onAbort);
        };
        const onAbort = () => {
          finish();
          call.abort(signal!.reason);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        clock.sleep(timeoutMs, timer.signal).then(() => {
          const err = new TimeoutError(name, timeoutMs);
          timeouts?.inc();
          events.emit("timeout", { name, timeoutMs });
          finish();
          call.abort(err);
          reject(err);
        }, () => {/* the call settled first and cancelled the timer */});
        new Promise<T>((r) => r(fn(call.signal))).then((value) => {
          finish();
          resolve(value);
        }, (err) => {
          finish();
          reject(err);
        });
      });
    },
    on: (event, listener) => events.on(event, listener),
  };
}
