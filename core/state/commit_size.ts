/**
 * The size of an atomic commit as Deno KV counts it, so a writer can stop
 * adding to a commit before KV refuses it ("Total mutation size too large").
 *
 * KV counts, per commit: every check's and mutation's key once, and a
 * value-carrying mutation's key again with its value; it refuses more than
 * 819,200 such bytes, 1000 mutations, 100 checks or 80 KiB of the keys of
 * value-carrying mutations. The figures here are upper bounds (a value is
 * counted as its V8 serialization plus slack) and {@linkcode CommitSize.fits}
 * keeps a 10 % margin below KV's limits, so a commit it accepts is never
 * refused for its size.
 *
 * @module
 */
import { serialize } from "node:v8";

/** Deno KV's limits for one atomic commit (Deno 2.x, local and KV Connect). */
export const KV_COMMIT_LIMITS = {
  /** Keys and values of all checks and mutations, in bytes. */
  mutationBytes: 819_200,
  /** Mutations (set, delete, sum, ...) per commit. */
  mutations: 1000,
  /** Keys of the mutations that carry a value, in bytes. */
  keyBytes: 81_920,
  /** One value, in serialized bytes. */
  valueBytes: 65_536,
} as const;

/** The share of each limit {@linkcode CommitSize.fits} allows. */
const MARGIN = 0.9;
/** Bytes added to each value's V8 serialization (KV's own encoding differs by a few). */
const VALUE_SLACK = 16;

const utf8 = new TextEncoder();
/** A character outside ASCII: one byte in a key no more, one in a value maybe not. */
const NON_ASCII = /[\u0080-\uffff]/;

/**
 * The bytes `key` takes in KV's encoding, rounded up: a string or byte part
 * is its bytes plus a type byte and a terminator (a zero byte inside is
 * escaped, so counted twice), a number 9, a bigint at most 19, a boolean 1.
 *
 * @example
 * ```ts
 * import { keyBytes } from "./commit_size.ts";
 * if (keyBytes(["queue", 7]) !== 7 + 9) throw new Error("unexpected");
 * ```
 */
export function keyBytes(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) {
    if (typeof part === "string") {
      n += 2 + zeros(part) +
        (NON_ASCII.test(part) ? utf8.encode(part).length : part.length);
    } else if (part instanceof Uint8Array) {
      n += 2 + part.length + part.filter((b) => b === 0).length;
    } else if (typeof part === "number") n += 9;
    else if (typeof part === "bigint") n += 19;
    else n += 1;
  }
  return n;
}

function zeros(s: string): number {
  let z = 0;
  for (let i = s.indexOf("\0"); i !== -1; i = s.indexOf("\0", i + 1)) z++;
  return z;
}

/**
 * The serialized bytes of `value` as a KV value, rounded up: a
 * `Uint8Array` is stored as its bytes, a `Deno.KvU64` as 8, anything else
 * as its V8 serialization, bounded without serializing plain objects,
 * arrays, strings and numbers (a string counts one byte a character when
 * it is ASCII, else two; V8 may hold an ASCII string two bytes a character,
 * e.g. a slice of a non-ASCII one, so a caller whose commit KV still
 * refuses as too large should retry smaller).
 *
 * @example
 * ```ts
 * import { valueBytes } from "./commit_size.ts";
 * if (valueBytes(new Uint8Array(100)) < 100) throw new Error("unexpected");
 * if (valueBytes({ id: "a", payload: "x".repeat(1000) }) < 1000) {
 *   throw new Error("unexpected");
 * }
 * ```
 */
export function valueBytes(value: unknown): number {
  if (value instanceof Uint8Array) return value.byteLength + VALUE_SLACK;
  // Deno.KvU64 exists only with KV enabled (--unstable-kv).
  if (typeof Deno.KvU64 === "function" && value instanceof Deno.KvU64) {
    return 8 + VALUE_SLACK;
  }
  return 2 + v8Bytes(value, 0) + VALUE_SLACK;
}

/** An upper bound of `v`'s bytes in V8's serialization (no header). */
function v8Bytes(v: unknown, depth: number): number {
  switch (typeof v) {
    case "string":
      // Tag, length (≤ 5), padding, the characters.
      return 7 + (NON_ASCII.test(v) ? 2 * v.length : v.length);
    case "number":
      return 10;
    case "boolean":
    case "undefined":
      return 1;
    case "object": {
      if (v === null) return 1;
      if (depth > 16) break;
      if (Array.isArray(v)) {
        // Dense or sparse: tag, lengths, an index per element at most.
        let n = 16;
        for (let i = 0; i < v.length; i++) n += 6 + v8Bytes(v[i], depth + 1);
        return n;
      }
      if (v instanceof Uint8Array && v.byteLength === v.buffer.byteLength) {
        return v.byteLength + 24;
      }
      if (Object.getPrototypeOf(v) !== Object.prototype) break;
      let n = 7;
      for (const k in v) {
        n += v8Bytes(k, depth + 1) +
          v8Bytes((v as Record<string, unknown>)[k], depth + 1);
      }
      return n;
    }
  }
  // Anything else (a bigint, a Date, a Map, a view of a larger buffer...)
  // as V8 itself serializes it.
  return serialize(v).length;
}

/**
 * A running upper bound of one atomic commit's size, kept beside the
 * `Deno.AtomicOperation` it describes: call the same verbs on both.
 *
 * @example
 * ```ts
 * import { CommitSize } from "./commit_size.ts";
 * const size = new CommitSize();
 * let n = 0;
 * while (size.set(["big", n], "x".repeat(16_384)).fits()) n++;
 * // n values of 16 KiB fit one commit, with a margin below KV's limit.
 * if (n < 40 || n > 50) throw new Error(`unexpected ${n}`);
 * ```
 */
export class CommitSize {
  /** Bytes KV counts against `mutationBytes`. */
  bytes = 0;
  /** Mutations KV counts against `mutations`. */
  mutations = 0;
  /** Key bytes KV counts against `keyBytes`. */
  keys = 0;

  /** Counts a check of `key`. */
  check(key: Deno.KvKey): this {
    this.bytes += keyBytes(key);
    return this;
  }

  /**
   * Counts a set of `key` to `value`; pass `bytes` instead of a value when
   * an upper bound of its serialized size is already known.
   */
  set(key: Deno.KvKey, value: unknown, bytes?: number): this {
    const k = keyBytes(key);
    this.bytes += 2 * k + (bytes ?? valueBytes(value));
    this.keys += k;
    this.mutations++;
    return this;
  }

  /** Counts a `sum` (a KvU64 value) on `key`. */
  sum(key: Deno.KvKey): this {
    return this.set(key, undefined, 8 + VALUE_SLACK);
  }

  /** Counts a delete of `key`. */
  delete(key: Deno.KvKey): this {
    const k = keyBytes(key);
    this.bytes += k;
    this.keys += k;
    this.mutations++;
    return this;
  }

  /** Adds what `other` counted. */
  add(other: CommitSize): this {
    this.bytes += other.bytes;
    this.mutations += other.mutations;
    this.keys += other.keys;
    return this;
  }

  /** Whether a commit of this size stays within 90 % of each of KV's limits. */
  fits(): boolean {
    return this.bytes <= KV_COMMIT_LIMITS.mutationBytes * MARGIN &&
      this.mutations <= KV_COMMIT_LIMITS.mutations * MARGIN &&
      this.keys <= KV_COMMIT_LIMITS.keyBytes * MARGIN;
  }
}
