/**
 * Many deadlines under one timer: each deadline falls in a bucket of
 * `tickMs` (5 ms by default), and one interval timer fires the buckets that
 * have passed. A deadline fires no earlier than asked and at most about one
 * tick late. Creating and clearing a timer per request cost ~1.5-1.8 µs of
 * CPU, more than the rest of the SDK's bookkeeping per request
 * (bench/README.md, `gateway`).
 *
 * The interval keeps the process alive only while a deadline is pending.
 * When the last one goes it is unref'd (~0.08 µs) and stopped by the next
 * sweep that still finds nothing, so one call at a time does not create and
 * clear a timer per call either. Where timers cannot be unref'd (a browser)
 * it is stopped at once.
 *
 * Used by the SDK's send queue (a call's timeout), the agent gateway (a
 * backend handler's deadline) and the WebSocket mesh transport (a request's
 * timeout).
 *
 * @module
 */

/** Default bucket width, ms: a deadline fires up to this much late. */
export const DEADLINE_TICK_MS = 5;

/** A pending deadline (see {@linkcode Deadlines.add}). */
export interface Deadline {
  /** Its bucket: the tick at or after which it fires. */
  readonly bucket: number;
  /** What it runs when it fires. */
  readonly fire: () => void;
}

/**
 * A set of deadlines in coarse buckets under one interval timer (see the
 * module doc). The timer holds the process only while a deadline is
 * pending, so an idle set keeps no process or test alive.
 *
 * @example Usage
 * ```ts
 * import { Deadlines } from "./deadlines.ts";
 * import assert from "node:assert/strict";
 * const deadlines = new Deadlines();
 * const fired: string[] = [];
 * deadlines.add(10, () => fired.push("late"));
 * const early = deadlines.add(10, () => fired.push("answered"));
 * deadlines.cancel(early); // the answer came first
 * await new Promise((r) => setTimeout(r, 30));
 * assert.deepEqual(fired, ["late"]);
 * assert.equal(deadlines.size, 0);
 * ```
 */
export class Deadlines {
  readonly #tickMs: number;
  readonly #now: () => number;
  /** Pending deadlines by bucket. */
  readonly #buckets = new Map<number, Set<Deadline>>();
  #size = 0;
  /** The last bucket fired (or passed empty). */
  #swept = 0;
  /** Holds the process while a deadline is pending; unref'd when idle. */
  #timer?: ReturnType<typeof setInterval>;

  /** An empty set; `now` is the wall clock in ms (tests pass their own). */
  constructor(tickMs: number = DEADLINE_TICK_MS, now: () => number = Date.now) {
    if (!(tickMs >= 1)) {
      throw new RangeError(`tickMs must be at least 1, got ${tickMs}`);
    }
    this.#tickMs = tickMs;
    this.#now = now;
  }

  /** Deadlines pending. */
  get size(): number {
    return this.#size;
  }

  /** Runs `fire` once `ms` have passed (up to one tick later), unless cancelled. */
  add(ms: number, fire: () => void): Deadline {
    const now = this.#now();
    if (this.#size++ === 0) {
      if (this.#timer === undefined) {
        this.#swept = Math.floor(now / this.#tickMs);
        this.#timer = setInterval(() => this.#sweep(), this.#tickMs);
      } else hold(this.#timer, true);
    }
    const d: Deadline = {
      // Never a bucket already swept (it would never fire).
      bucket: Math.max(
        Math.ceil((now + Math.max(0, ms)) / this.#tickMs),
        this.#swept + 1,
      ),
      fire,
    };
    const set = this.#buckets.get(d.bucket);
    if (set) set.add(d);
    else this.#buckets.set(d.bucket, new Set([d]));
    return d;
  }

  /** Stops deadline `d` from firing; nothing if it fired or was cancelled. */
  cancel(d: Deadline): void {
    const set = this.#buckets.get(d.bucket);
    if (!set?.delete(d)) return;
    if (set.size === 0) this.#buckets.delete(d.bucket);
    if (--this.#size === 0) this.#release();
  }

  /** Cancels every pending deadline. */
  clear(): void {
    this.#buckets.clear();
    this.#size = 0;
    this.#stop();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Nothing pending: let the process go; the next empty sweep stops the timer. */
  #release(): void {
    if (this.#timer === undefined || !hold(this.#timer, false)) this.#stop();
  }

  /** Fires every bucket that has passed. */
  #sweep(): void {
    if (this.#size === 0) return this.#stop(); // idle for a whole tick
    const now = Math.floor(this.#now() / this.#tickMs);
    let failure: { err: unknown } | undefined;
    for (; this.#swept < now; this.#swept++) {
      const set = this.#buckets.get(this.#swept + 1);
      if (!set) continue;
      this.#buckets.delete(this.#swept + 1);
      this.#size -= set.size;
      for (const d of set) {
        try {
          d.fire();
        } catch (err) {
          failure ??= { err };
        }
      }
    }
    if (this.#size === 0) this.#release();
    // One throwing callback does not stop the others from firing.
    if (failure) throw failure.err;
  }
}

/**
 * Refs or unrefs a timer where timers have `ref`/`unref` (Deno, Node);
 * false where they do not.
 */
function hold(timer: unknown, on: boolean): boolean {
  const t = timer as { ref?: () => void; unref?: () => void };
  if (typeof t?.ref !== "function" || typeof t.unref !== "function") {
    return false;
  }
  if (on) t.ref();
  else t.unref();
  return true;
}
