/**
 * A deadline on a promise that cannot be cancelled: the caller stops waiting
 * at `ms` and gets an error, whatever the promise does later. For calls that
 * take an `AbortSignal`, {@linkcode createTimeout} in `timeout.ts` also
 * aborts the call.
 *
 * @module
 */
import { TimeoutError } from "./errors.ts";

/** Options for {@linkcode deadline}. */
export interface DeadlineOptions {
  /** The rejection at the deadline. @default {a TimeoutError naming "call"} */
  error?: () => unknown;
}

/**
 * Settles as `promise` does, or rejects with `options.error()` once `ms` have
 * passed first; the timer is cleared either way.
 *
 * @example Usage
 * ```ts
 * import { deadline } from "./deadline.ts";
 * await deadline(Promise.resolve("fast"), 1000); // "fast"
 * try {
 *   await deadline(new Promise(() => {}), 5, { error: () => new Error("slow: no answer within 5 ms") });
 * } catch (err) {
 *   (err as Error).message; // "slow: no answer within 5 ms"
 * }
 * ```
 */
export function deadline<T>(
  promise: Promise<T>,
  ms: number,
  options: DeadlineOptions = {},
): Promise<T> {
  const error = options.error ?? (() => new TimeoutError("call", ms));
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(error()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
