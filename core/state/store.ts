/**
 * Opens the node's Deno KV: a file path (default `./data/plexus.kv`),
 * `:memory:`, or a KV Connect URL (self-hosted `denokv`; the access token
 * comes from `DENO_KV_ACCESS_TOKEN`).
 *
 * Several processes may share one KV file. SQLite then refuses a checked
 * write with "database is locked" when another process wrote after its check
 * read (store_test.ts's child on a plain handle: up to 12 % of one
 * process's increments), so a store opened on a file retries every write, and
 * opening, with jittered backoff: the callers never see the contention, only
 * its delay.
 *
 * @module
 */
import { dirname } from "node:path";
import { backoffDelay } from "../resilience/backoff.ts";

/** Options for {@linkcode retryLocked} and {@linkcode openStore}. */
export interface OpenStoreOptions {
  /** Attempts before giving up on "database is locked". @default {Infinity} (the deadline decides) */
  attempts?: number;
  /** First backoff in ms; doubles each attempt up to `maxDelayMs`, with full jitter. @default {5} */
  baseDelayMs?: number;
  /** Longest single backoff. @default {250} */
  maxDelayMs?: number;
  /** Give up once this much time has passed. @default {15000} */
  deadlineMs?: number;
}

/** Whether `spec` names a KV Connect server rather than a file. */
export function isRemoteKv(spec: string): boolean {
  return /^https?:\/\//.test(spec);
}

/** Stores {@linkcode openStore} opened on a local file or `:memory:`. */
const localStores = new WeakSet<Deno.Kv>();

/**
 * How many checks one atomic commit on `kv` may carry: 100 on a local
 * store {@linkcode openStore} opened, 10 otherwise (KV Connect servers such
 * as `denokv` refuse more; a store opened elsewhere may be one).
 *
 * @example
 * ```ts
 * import { checksPerCommit, openStore } from "./store.ts";
 * const kv = await openStore(":memory:");
 * if (checksPerCommit(kv) !== 100) throw new Error("a local store takes 100");
 * kv.close();
 * ```
 */
export function checksPerCommit(kv: Deno.Kv): number {
  return localStores.has(kv) ? 100 : 10;
}

/** Whether an error is SQLite's transient lock contention. */
export function isLockedError(err: unknown): boolean {
  return err instanceof Error &&
    /database is locked|SQLITE_BUSY/i.test(err.message);
}

/**
 * Runs `fn`, retrying with full-jitter exponential backoff while it fails
 * with "database is locked".
 */
export async function retryLocked<T>(
  fn: () => Promise<T>,
  options: OpenStoreOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? Infinity;
  const base = options.baseDelayMs ?? 5;
  const cap = options.maxDelayMs ?? 250;
  const giveUpAt = performance.now() + (options.deadlineMs ?? 15_000);
  for (let i = 1;; i++) {
    try {
      return await fn();
    } catch (err) {
      if (
        !isLockedError(err) || i >= attempts || performance.now() >= giveUpAt
      ) throw err;
      // Several processes contend for one SQLite file; spread the retries out.
      await new Promise((r) =>
        setTimeout(
          r,
          backoffDelay(i, { baseMs: base, maxMs: cap, jitter: "full" }),
        )
      );
    }
  }
}

/**
 * Opens Deno KV at `spec`, creating the parent folder of a file path. A
 * file's store retries every write refused with "database is locked" (see
 * the module doc); `:memory:` and KV Connect stores are returned as opened.
 *
 * @example Usage
 * ```ts
 * import { openStore } from "./store.ts";
 * const kv = await openStore(":memory:");
 * await kv.set(["k"], 1);
 * kv.close();
 * ```
 */
export async function openStore(
  spec: string,
  options: OpenStoreOptions = {},
): Promise<Deno.Kv> {
  if (typeof Deno.openKv !== "function") {
    throw new Error(
      `Cannot open Deno KV at '${spec}': Deno KV is unstable; run with --unstable-kv`,
    );
  }
  try {
    if (spec !== ":memory:" && !isRemoteKv(spec)) {
      await Deno.mkdir(dirname(spec), { recursive: true });
    }
    const opened = await retryLocked(() => Deno.openKv(spec), options);
    if (isRemoteKv(spec)) return opened;
    const kv = spec === ":memory:" ? opened : retryingWrites(opened, options);
    localStores.add(kv);
    return kv;
  } catch (err) {
    throw new Error(
      `Cannot open Deno KV at '${spec}': ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * `kv` with its writes (`atomic().commit()`, `set`, `delete`, `enqueue`)
 * retried by {@linkcode retryLocked}. A refused write changed nothing (SQLite
 * rolls the transaction back), so running it again is the same as running it
 * later; an atomic's checks are checked again. Reads never take the write
 * lock (the file is in WAL mode) and go straight through. The result is a
 * proxy: `instanceof Deno.Kv` still holds, and `close()` closes `kv`.
 */
function retryingWrites(kv: Deno.Kv, options: OpenStoreOptions): Deno.Kv {
  const retried = new Set<PropertyKey>(["set", "delete", "enqueue"]);
  // One wrapper per function, made on first use: the hot paths (`get`,
  // `atomic`) pay a lookup, not a bind, per call. Keyed by the function, so
  // a member replaced on the handle (a test counting reads) is used.
  const wrappers = new WeakMap<object, unknown>();
  const wrap = (prop: PropertyKey, fn: (...a: unknown[]) => unknown) => {
    if (prop === "atomic") {
      return () => {
        const op = fn.call(kv) as Deno.AtomicOperation;
        const commit = op.commit.bind(op);
        op.commit = () => retryLocked(commit, options);
        return op;
      };
    }
    if (!retried.has(prop)) return fn.bind(kv);
    return (...args: unknown[]) =>
      retryLocked(() => fn.apply(kv, args) as Promise<unknown>, options);
  };
  return new Proxy(kv, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (typeof v !== "function") return v;
      let w = wrappers.get(v);
      if (w === undefined) wrappers.set(v, w = wrap(prop, v));
      return w;
    },
  });
}
