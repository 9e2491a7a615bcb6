/**
 * When the agent SDK connects again: reconnect delays (exponential backoff
 * with full jitter), the schedule of the next attempt, and the single-use
 * resumption token a reconnect presents instead of a signature.
 *
 * @module
 */
import { backoffDelay as exponentialDelay } from "../core/resilience/backoff.ts";

/** Reconnect delays: exponential with full jitter. */
export interface BackoffOptions {
  /** The first delay's upper bound, ms. @default {5000} */
  initialMs?: number;
  /** The largest upper bound, ms. @default {60000} */
  maxMs?: number;
  /** Source of randomness in [0, 1). @default {Math.random} */
  random?: () => number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first): a uniform
 * random value in [0, min(maxMs, initialMs × 2^attempt)) ("full jitter").
 *
 * @example Usage
 * ```ts
 * import { backoffDelay } from "./reconnect.ts";
 * import assert from "node:assert/strict";
 * const top = () => 0.999999;
 * assert.equal(backoffDelay(0, { random: top }), 4999);
 * assert.equal(backoffDelay(2, { random: top }), 19999);
 * assert.equal(backoffDelay(10, { random: top }), 59999);
 * assert.equal(backoffDelay(3, { random: () => 0 }), 0);
 * ```
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
): number {
  return Math.floor(
    exponentialDelay(Math.max(attempt, 0) + 1, {
      baseMs: options.initialMs ?? 5000,
      maxMs: options.maxMs ?? 60_000,
      jitter: "full",
      random: options.random,
    }),
  );
}

/**
 * The reconnect schedule of one client: numbers its connection attempts,
 * counts the consecutive ones that did not reach `ready` (they set the
 * {@linkcode backoffDelay}), and holds the one pending retry.
 *
 * @example Usage
 * ```ts
 * import { ReconnectSchedule } from "./reconnect.ts";
 * import assert from "node:assert/strict";
 * const schedule = new ReconnectSchedule({ initialMs: 100, random: () => 0.5 });
 * assert.equal(schedule.nextAttempt(), 1);
 * assert.equal(schedule.nextDelay(), 50); // first failure
 * assert.equal(schedule.nextDelay(), 100); // second in a row
 * schedule.connected();
 * assert.equal(schedule.nextDelay(), 50);
 * const retried = Promise.withResolvers<void>();
 * schedule.schedule(retried.resolve, 0);
 * await retried.promise;
 * schedule.schedule(() => assert.fail("cancelled"), 10);
 * schedule.cancel();
 * ```
 */
export class ReconnectSchedule {
  readonly #backoff: BackoffOptions;
  #timer?: ReturnType<typeof setTimeout>;
  /** Consecutive attempts that did not reach `ready`. */
  #failures = 0;
  #attempts = 0;

  /** Nothing is scheduled until {@linkcode ReconnectSchedule.schedule}. */
  constructor(backoff: BackoffOptions = {}) {
    this.#backoff = { ...backoff };
  }

  /** Starts an attempt; returns its number (1 for the first). */
  nextAttempt(): number {
    this.#timer = undefined;
    return ++this.#attempts;
  }

  /** An attempt reached `ready`: the next failure waits the shortest delay again. */
  connected(): void {
    this.#failures = 0;
  }

  /** Counts a failed attempt and returns the delay before the next one, ms. */
  nextDelay(): number {
    return backoffDelay(this.#failures++, this.#backoff);
  }

  /** Runs `retry` after `delayMs` (the pending retry until it runs or is cancelled). */
  schedule(retry: () => void, delayMs: number): void {
    this.#timer = setTimeout(retry, delayMs);
  }

  /** Cancels the pending retry, if any. */
  cancel(): void {
    clearTimeout(this.#timer);
  }
}

/** A resumption token from `ready`, and until when the node accepts it (epoch ms). */
export interface SavedResumeToken {
  /** The token, sent in the `auth` record instead of a signature. */
  token: string;
  /** Its expiry, epoch ms. */
  expiresAt: number;
}

/**
 * The client's resumption token. Tokens are single-use: an attempt
 * {@linkcode ResumeTokenSlot.take}s it, and gives it back only when the
 * attempt ends before the `auth` record carrying it was sent.
 *
 * @example Usage
 * ```ts
 * import { ResumeTokenSlot } from "./reconnect.ts";
 * import assert from "node:assert/strict";
 * const slot = new ResumeTokenSlot();
 * slot.store({ token: "t1", expiresAt: Date.now() + 60_000 });
 * const taken = slot.take();
 * assert.equal(taken?.token, "t1");
 * assert.equal(slot.take(), undefined); // single-use
 * slot.giveBack(taken!); // the attempt never sent it
 * assert.equal(slot.take()?.token, "t1");
 * ```
 */
export class ResumeTokenSlot {
  #saved?: SavedResumeToken;

  /** Keeps the token of a `ready` record (replacing any other). */
  store(saved: SavedResumeToken): void {
    this.#saved = saved;
  }

  /**
   * Takes the token for an attempt when it is still valid for more than a
   * second; the slot is empty afterwards either way.
   */
  take(now: number = Date.now()): SavedResumeToken | undefined {
    const saved = this.#saved && this.#saved.expiresAt > now + 1000
      ? this.#saved
      : undefined;
    this.#saved = undefined;
    return saved;
  }

  /** Puts back a token an attempt never sent, unless a newer one is stored. */
  giveBack(saved: SavedResumeToken): void {
    if (this.#saved === undefined) this.#saved = saved;
  }
}
