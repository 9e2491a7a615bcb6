/**
 * Time as an injectable dependency, so queue, lease and registry rules can be
 * tested with a manual clock and simulated deterministically.
 *
 * @module
 */

/** A source of wall-clock and monotonic time, and of sleeps. */
export interface Clock {
  /** Wall-clock milliseconds since the epoch (comparable across processes on one host). */
  now(): number;
  /** Monotonic milliseconds (comparable only within this process). */
  mono(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when it aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  mono: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

/**
 * A clock that moves only when told to. `sleep` resolves once `advance`
 * passes its deadline, in deadline order.
 *
 * @example Usage
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * const clock = new ManualClock(1_000);
 * const woke = clock.sleep(50);
 * await clock.advance(50);
 * await woke;
 * clock.now(); // 1050
 * ```
 */
export class ManualClock implements Clock {
  #wall: number;
  #mono = 0;
  #rate: number;
  #sleepers: { at: number; resolve: () => void }[] = [];

  /** `rate` scales how fast this clock's time runs (clock-rate skew). */
  constructor(start = 0, rate = 1) {
    this.#wall = start;
    this.#rate = rate;
  }
  now(): number {
    return this.#wall;
  }
  mono(): number {
    return this.#mono;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = { at: this.#mono + ms, resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  }
  /** Moves time forward by `ms` (scaled by the rate), waking sleepers in order. */
  async advance(ms: number): Promise<void> {
    const target = this.#mono + ms * this.#rate;
    for (;;) {
      this.#sleepers.sort((a, b) => a.at - b.at);
      const next = this.#sleepers[0];
      if (!next || next.at > target) break;
      this.#sleepers.shift();
      this.#wall += next.at - this.#mono;
      this.#mono = next.at;
      next.resolve();
      // Let the woken task run before time moves on.
      await new Promise((r) => setTimeout(r, 0));
    }
    this.#wall += target - this.#mono;
    this.#mono = target;
  }
}
