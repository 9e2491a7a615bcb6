/**
 * A view of Deno KV confined to one key prefix, handed to each plugin so
 * plugins cannot read or clobber each other's keys by accident.
 *
 * @module
 */

/** Atomic operation on a scoped keyspace (keys are relative to the scope). */
export interface ScopedAtomic {
  /** Adds version checks, as `Deno.AtomicOperation.check`. */
  check(...checks: Deno.AtomicCheck[]): ScopedAtomic;
  /** Adds a set, as `Deno.AtomicOperation.set`. */
  set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): ScopedAtomic;
  /** Adds a delete, as `Deno.AtomicOperation.delete`. */
  delete(key: Deno.KvKey): ScopedAtomic;
  /** Adds a sum on a `Deno.KvU64`, as `Deno.AtomicOperation.sum`. */
  sum(key: Deno.KvKey, n: bigint): ScopedAtomic;
  /** Commits, as `Deno.AtomicOperation.commit`. */
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError>;
}

/** Deno KV confined to a prefix; keys given and returned are relative to it. */
export interface ScopedKv {
  /** The prefix every key is stored under. */
  readonly prefix: Deno.KvKey;
  /** Reads one entry, as `Deno.Kv.get`. */
  get<T = unknown>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>>;
  /** Writes one entry, as `Deno.Kv.set`. */
  set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): Promise<Deno.KvCommitResult>;
  /** Deletes one entry, as `Deno.Kv.delete`. */
  delete(key: Deno.KvKey): Promise<void>;
  /** Lists the entries under `selector.prefix`, as `Deno.Kv.list`. */
  list<T = unknown>(
    selector: { prefix: Deno.KvKey },
    options?: Deno.KvListOptions,
  ): AsyncIterable<Deno.KvEntry<T>>;
  /** Starts an atomic operation, as `Deno.Kv.atomic`. */
  atomic(): ScopedAtomic;
}

/**
 * Wraps `kv` so every key is prefixed with `prefix`.
 *
 * @example Usage
 * ```ts
 * import { scopeKv } from "./scoped_kv.ts";
 * const kv = await Deno.openKv(":memory:");
 * const mine = scopeKv(kv, ["plugins", "hello"]);
 * await mine.set(["count"], 1);
 * (await kv.get(["plugins", "hello", "count"])).value; // 1
 * kv.close();
 * ```
 */
export function scopeKv(kv: Deno.Kv, prefix: Deno.KvKey): ScopedKv {
  const full = (key: Deno.KvKey): Deno.KvKey => [...prefix, ...key];
  const strip = <T>(entry: Deno.KvEntry<T>): Deno.KvEntry<T> => ({
    ...entry,
    key: entry.key.slice(prefix.length),
  });
  const strip2 = <T>(entry: Deno.KvEntryMaybe<T>): Deno.KvEntryMaybe<T> => ({
    ...entry,
    key: entry.key.slice(prefix.length),
  } as Deno.KvEntryMaybe<T>);
  return {
    prefix,
    get: async <T>(key: Deno.KvKey) => strip2(await kv.get<T>(full(key))),
    set: (key, value, options) => kv.set(full(key), value, options),
    delete: (key) => kv.delete(full(key)),
    async *list<T>(
      selector: { prefix: Deno.KvKey },
      options?: Deno.KvListOptions,
    ) {
      for await (
        const e of kv.list<T>({ prefix: full(selector.prefix) }, options)
      ) {
        yield strip(e);
      }
    },
    atomic() {
      const op = kv.atomic();
      const scoped: ScopedAtomic = {
        check(...checks) {
          op.check(...checks.map((c) => ({ ...c, key: full(c.key) })));
          return scoped;
        },
        set(key, value, options) {
          op.set(full(key), value, options);
          return scoped;
        },
        delete(key) {
          op.delete(full(key));
          return scoped;
        },
        sum(key, n) {
          op.sum(full(key), n);
          return scoped;
        },
        commit: () => op.commit(),
      };
      return scoped;
    },
  };
}
