/**
 * A GCRA rate limiter whose state lives in Deno KV, so every node sharing the
 * KV (one file, or KV Connect to `denokv`) enforces one budget per id.
 *
 * GCRA (the "generic cell rate algorithm", as in redis-cell's
 * `CL.THROTTLE`) keeps one number per id, the theoretical arrival time
 * `tat`. With emission interval `T = periodMs / rate` and tolerance
 * `τ = burst · T`, a request of `cost` at `now` computes
 * `new = max(tat, now) + cost · T` and is admitted iff `new - now ≤ τ`,
 * storing `new`. So `burst` requests pass back to back, then one per `T`;
 * it behaves as a token bucket of `burst` tokens refilled at `rate` per
 * `periodMs`, without a refill job.
 *
 * Rules:
 * - State is `{tat}` (epoch ms) at `rateLimitKey(scope, id)`, written with an
 *   atomic `check(versionstamp)` + `set`, re-read and retried on conflict (a
 *   bounded number of times, with jitter); the store retries "database is
 *   locked" itself (`openStore`). `expireIn` only collects idle keys: it is
 *   set well past the moment the stored `tat` stops mattering, so it never
 *   decides anything.
 * - The arithmetic runs in whole microseconds (`T` is rounded to 1 µs), so
 *   "exactly `burst` back to back" holds with no floating-point drift.
 * - Refusals write nothing: a refused request costs nothing.
 * - Checks for one id are serialized within a process, so a process has at
 *   most one CAS in flight per id and conflicts come only from other nodes.
 * - The local pre-limit keeps, per id (bounded LRU), the highest `tat` this
 *   process has seen committed or read. The shared `tat` never goes down, so
 *   that copy is a lower bound of it, and a request the copy refuses would be
 *   refused by KV too: it is refused without a KV round trip. The pre-limit
 *   only ever refuses; every admission is a KV commit.
 * - If the CAS keeps losing after `maxAttempts`, the request is refused (fail
 *   closed): only a key hammered from several nodes at once gets there.
 * - Clocks: each node's `clock.now()` stamps its own checks. Wall clocks that
 *   disagree by δ ms let about δ / T extra requests through; keep them synced.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import { rateLimitKey } from "../state/keys.ts";
import { deleteOldest } from "../oldest.ts";

/** The answer to one {@linkcode RateLimiter.check}. */
export interface RateLimitDecision {
  /** Whether the request is admitted (and its cost spent). */
  allowed: boolean;
  /** Ms (rounded up) until a request of this cost would be admitted; 0 when admitted. */
  retryAfterMs: number;
  /** Requests of cost 1 that would still be admitted right now, after this one. */
  remaining: number;
  /** Ms (rounded up) until the full burst is available again. */
  resetMs: number;
  /** The burst: the most requests admitted back to back. */
  limit: number;
}

/** The numbers a limiter enforces, for headers and logs. */
export interface RateLimitPolicy {
  /** The KV scope (`["ratelimit", scope, id]`). */
  scope: string;
  /** Requests admitted per `periodMs`, sustained. */
  rate: number;
  /** Length of the period `rate` is counted over. */
  periodMs: number;
  /** Requests admitted back to back. */
  burst: number;
  /** `periodMs / rate`, rounded to 1 µs: the sustained gap between requests. */
  emissionIntervalMs: number;
}

/** Counters since the limiter was created. */
export interface RateLimitStats {
  /** Requests admitted (each one KV commit). */
  admitted: number;
  /** Requests refused by the local pre-limit, without touching KV. */
  refusedLocally: number;
  /** Requests refused after reading KV. */
  refusedShared: number;
  /** Requests refused because the CAS kept losing (fail closed). */
  refusedContended: number;
  /** Commits that lost a race and were retried. */
  conflicts: number;
}

/** A rate limiter shared through KV. */
export interface RateLimiter {
  /** What this limiter enforces. */
  readonly policy: RateLimitPolicy;
  /**
   * Spends `cost` of `id`'s budget if it is there. `id` is a non-empty string
   * of at most {@linkcode MAX_RATE_LIMIT_ID_BYTES} UTF-8 bytes; `cost` an
   * integer from 1 to `burst`.
   */
  check(id: string, cost?: number): Promise<RateLimitDecision>;
  /** Counters since creation. */
  stats(): RateLimitStats;
}

/** The part of Deno KV the limiter uses (a wrapper or fake may stand in). */
export type RateLimitKv = Pick<Deno.Kv, "get" | "atomic">;

/** Options for {@linkcode createRateLimiter}. */
export interface RateLimiterOptions {
  /** Limit name; the KV key is `["ratelimit", scope, id]`. 1-128 characters. */
  scope: string;
  /** Requests admitted per `periodMs`, sustained: a positive integer. */
  rate: number;
  /** The period `rate` is counted over, in ms. */
  periodMs: number;
  /** Requests admitted back to back: a positive integer. @default {rate} */
  burst?: number;
  /** Time source. @default {systemClock} */
  clock?: Clock;
  /**
   * The in-process pre-limit: `false` turns it off; `maxIds` bounds how many
   * ids it remembers (least recently used go first).
   * @default {{ maxIds: 10000 }}
   */
  localPreLimit?: boolean | { maxIds?: number };
  /** Commits tried per check before refusing as contended. @default {32} */
  maxAttempts?: number;
  /**
   * Keep a key this long after its `tat` has passed before KV may delete it;
   * covers clock skew between nodes. @default {60000}
   */
  gcSlackMs?: number;
}

/** Longest id accepted by {@linkcode RateLimiter.check}, in UTF-8 bytes (KV keys are at most 2 KiB). */
export const MAX_RATE_LIMIT_ID_BYTES = 1024;

const encoder = new TextEncoder();
const DEFAULT_MAX_IDS = 10_000;

interface GcraState {
  /** Theoretical arrival time, epoch ms (µs resolution). */
  tat: number;
}

function positiveInteger(name: string, value: unknown, op: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot ${op}: ${name} must be an integer >= 1, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * Creates a GCRA limiter over `kv`.
 *
 * @example Usage
 * ```ts
 * import { createRateLimiter } from "./rate_limit.ts";
 * import { ManualClock } from "../clock.ts";
 * const kv = await Deno.openKv(":memory:");
 * const clock = new ManualClock(1_000_000);
 * // 60 per minute, 3 back to back.
 * const limiter = createRateLimiter(kv, {
 *   scope: "ip",
 *   rate: 60,
 *   periodMs: 60_000,
 *   burst: 3,
 *   clock,
 * });
 * for (let i = 0; i < 3; i++) await limiter.check("10.0.0.1"); // admitted
 * const d = await limiter.check("10.0.0.1");
 * d.allowed; // false
 * d.retryAfterMs; // 1000
 * await clock.advance(1_000);
 * (await limiter.check("10.0.0.1")).allowed; // true
 * kv.close();
 * ```
 */
export function createRateLimiter(
  kv: RateLimitKv,
  options: RateLimiterOptions,
): RateLimiter {
  const op = "create rate limiter";
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object`);
  }
  const { scope } = options;
  if (typeof scope !== "string" || scope.length < 1 || scope.length > 128) {
    throw new RangeError(
      `Cannot ${op}: scope must be a string of 1-128 characters, got ${
        typeof scope === "string" ? `'${scope.slice(0, 140)}'` : String(scope)
      }`,
    );
  }
  const rate = positiveInteger("rate", options.rate, op);
  const periodMs = options.periodMs;
  if (
    typeof periodMs !== "number" || !Number.isFinite(periodMs) || periodMs <= 0
  ) {
    throw new RangeError(
      `Cannot ${op}: periodMs must be a finite number > 0, got ${
        String(periodMs)
      }`,
    );
  }
  const burst = positiveInteger("burst", options.burst ?? rate, op);
  const emissionUs = Math.round((periodMs * 1000) / rate);
  if (emissionUs < 1) {
    throw new RangeError(
      `Cannot ${op}: rate ${rate} per ${periodMs} ms is more than one request per microsecond`,
    );
  }
  const toleranceUs = burst * emissionUs;
  if (!Number.isSafeInteger(toleranceUs * 2)) {
    throw new RangeError(
      `Cannot ${op}: burst × periodMs / rate = ${
        toleranceUs / 1000
      } ms is too long`,
    );
  }
  const maxAttempts = positiveInteger(
    "maxAttempts",
    options.maxAttempts ?? 32,
    op,
  );
  const gcSlackMs = options.gcSlackMs ?? 60_000;
  if (
    typeof gcSlackMs !== "number" || !Number.isFinite(gcSlackMs) ||
    gcSlackMs < 0
  ) {
    throw new RangeError(
      `Cannot ${op}: gcSlackMs must be a finite number >= 0, got ${
        String(gcSlackMs)
      }`,
    );
  }
  const pre = options.localPreLimit ?? true;
  if (typeof pre !== "boolean" && (typeof pre !== "object" || pre === null)) {
    throw new TypeError(
      `Cannot ${op}: localPreLimit must be a boolean or {maxIds}, got ${
        String(pre)
      }`,
    );
  }
  const maxIds = pre === false ? 0 : positiveInteger(
    "localPreLimit.maxIds",
    (pre === true ? undefined : pre.maxIds) ?? DEFAULT_MAX_IDS,
    op,
  );
  const clock = options.clock ?? systemClock;

  const policy: RateLimitPolicy = Object.freeze({
    scope,
    rate,
    periodMs,
    burst,
    emissionIntervalMs: emissionUs / 1000,
  });
  const stats: RateLimitStats = {
    admitted: 0,
    refusedLocally: 0,
    refusedShared: 0,
    refusedContended: 0,
    conflicts: 0,
  };
  /** Highest tat (µs) seen per id, least recently used first. */
  const local = new Map<string, number>();
  /** Tail of each id's chain of checks in this process. */
  const tails = new Map<string, Promise<unknown>>();

  const nowUs = () => Math.round(clock.now() * 1000);
  const ceilMs = (us: number) => Math.ceil(us / 1000);

  /** GCRA on `tat` (µs; undefined = never seen) at `now` (µs). */
  const decide = (tat: number | undefined, now: number, cost: number) => {
    const base = Math.max(tat ?? now, now);
    const next = base + cost * emissionUs;
    if (next - now <= toleranceUs) {
      return {
        next,
        decision: {
          allowed: true,
          retryAfterMs: 0,
          remaining: Math.floor((toleranceUs - (next - now)) / emissionUs),
          resetMs: ceilMs(next - now),
          limit: burst,
        },
      };
    }
    return {
      next: undefined,
      decision: {
        allowed: false,
        retryAfterMs: ceilMs(next - now - toleranceUs),
        remaining: Math.floor((toleranceUs - (base - now)) / emissionUs),
        resetMs: ceilMs(base - now),
        limit: burst,
      },
    };
  };

  const learn = (id: string, tat: number | undefined, now: number) => {
    if (maxIds === 0 || tat === undefined) return;
    const known = local.get(id);
    local.delete(id);
    const best = Math.max(tat, known ?? tat);
    // A tat already passed refuses nothing; forget it.
    if (best <= now) return;
    local.set(id, best);
    if (local.size > maxIds) deleteOldest(local);
  };

  const readTat = (value: GcraState | null): number | undefined =>
    value !== null && typeof value === "object" && Number.isFinite(value.tat)
      ? Math.round(value.tat * 1000)
      : undefined;

  const checkShared = async (
    id: string,
    cost: number,
  ): Promise<RateLimitDecision> => {
    const start = nowUs();
    const known = local.get(id);
    if (known !== undefined) {
      const { decision } = decide(known, start, cost);
      if (!decision.allowed) {
        // Most recently used goes last.
        local.delete(id);
        local.set(id, known);
        stats.refusedLocally++;
        return decision;
      }
    }
    const key = rateLimitKey(scope, id);
    let last: RateLimitDecision | undefined;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const entry = await kv.get<GcraState>(key);
      const now = nowUs();
      const tat = readTat(entry.value);
      const { next, decision } = decide(tat, now, cost);
      if (next === undefined) {
        learn(id, tat, now);
        stats.refusedShared++;
        return decision;
      }
      const expireIn = Math.max(1, ceilMs(next - now) + Math.ceil(gcSlackMs));
      const res = await kv.atomic()
        .check(entry)
        .set(key, { tat: next / 1000 } satisfies GcraState, { expireIn })
        .commit();
      if (res.ok) {
        learn(id, next, now);
        stats.admitted++;
        return decision;
      }
      stats.conflicts++;
      last = decision;
      // Real time, not the injected clock: this only spreads out retries.
      await new Promise((r) =>
        setTimeout(r, Math.random() * Math.min(25, 2 ** attempt))
      );
    }
    stats.refusedContended++;
    return {
      allowed: false,
      retryAfterMs: ceilMs(emissionUs),
      remaining: 0,
      resetMs: last!.resetMs,
      limit: burst,
    };
  };

  return {
    policy,
    check(id, cost = 1) {
      if (typeof id !== "string" || id.length === 0) {
        return Promise.reject(
          new TypeError(
            `Cannot check rate limit '${scope}': id must be a non-empty string, got ${
              typeof id === "string" ? "''" : String(id)
            }`,
          ),
        );
      }
      const bytes = encoder.encode(id).length;
      if (bytes > MAX_RATE_LIMIT_ID_BYTES) {
        return Promise.reject(
          new RangeError(
            `Cannot check rate limit '${scope}': id is ${bytes} bytes; at most ${MAX_RATE_LIMIT_ID_BYTES}`,
          ),
        );
      }
      if (
        typeof cost !== "number" || !Number.isSafeInteger(cost) || cost < 1 ||
        cost > burst
      ) {
        return Promise.reject(
          new RangeError(
            `Cannot check rate limit '${scope}': cost must be an integer from 1 to the burst ${burst}, got ${
              String(cost)
            }`,
          ),
        );
      }
      // One check per id at a time in this process: the next one sees what
      // this one learned, and may be refused locally.
      const run = (tails.get(id) ?? Promise.resolve()).then(() =>
        checkShared(id, cost)
      );
      const tail = run.catch(() => {});
      tails.set(id, tail);
      tail.then(() => {
        if (tails.get(id) === tail) tails.delete(id);
      });
      return run;
    },
    stats: () => ({ ...stats }),
  };
}
