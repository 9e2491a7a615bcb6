/**
 * A bounded admission queue: at most `maxConcurrent` holders at once, at
 * most `maxQueued` waiting; one more is refused at once with 429 and
 * `Retry-After`, so a burst costs the node a fixed amount of memory.
 *
 * @example Usage
 * ```ts
 * import { createLimiter } from "./limiter.ts";
 * const limiter = createLimiter({ maxConcurrent: 1, maxQueued: 0 });
 * const release = await limiter.acquire();
 * await limiter.acquire().catch((e) => e.status); // 429
 * release();
 * ```
 *
 * @module
 */
import { PlexusError } from "../../core/plugin.ts";

/** Options of {@linkcode createLimiter}. */
export interface LimiterOptions {
  maxConcurrent: number;
  maxQueued: number;
}

/** The queue. */
export interface Limiter {
  /**
   * Waits for a slot; resolves with the function that frees it. Rejects
   * with a 429 {@linkcode PlexusError} when the queue is full, or with the
   * signal's reason when it aborts while waiting.
   */
  acquire(signal?: AbortSignal): Promise<() => void>;
  /**
   * A free slot now, without waiting: the function that frees it, or
   * undefined when every slot is taken (then {@linkcode Limiter.acquire}).
   */
  tryAcquire(): (() => void) | undefined;
  /** Holders now. */
  readonly running: number;
  /** Waiting now. */
  readonly queued: number;
}

/** Creates a limiter. */
export function createLimiter(options: LimiterOptions): Limiter {
  let running = 0;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  };
  const once = () => {
    let done = false;
    return () => {
      if (!done) {
        done = true;
        release();
      }
    };
  };
  return {
    tryAcquire() {
      if (running >= options.maxConcurrent) return undefined;
      running++;
      return once();
    },
    acquire(signal) {
      if (running < options.maxConcurrent) {
        running++;
        return Promise.resolve(once());
      }
      if (waiting.length >= options.maxQueued) {
        return Promise.reject(
          new PlexusError(
            "too_many_requests",
            `${running} prompts are being answered and ${waiting.length} wait (limits ${options.maxConcurrent} and ${options.maxQueued}); try again shortly`,
            { status: 429, retryable: true, retryAfterS: 1 },
          ),
        );
      }
      return new Promise((resolve, reject) => {
        const go = () => {
          signal?.removeEventListener("abort", abort);
          resolve(once());
        };
        const abort = () => {
          const i = waiting.indexOf(go);
          if (i >= 0) waiting.splice(i, 1);
          reject(signal!.reason);
        };
        waiting.push(go);
        signal?.addEventListener("abort", abort, { once: true });
      });
    },
    get running() {
      return running;
    },
    get queued() {
      return waiting.length;
    },
  };
}
