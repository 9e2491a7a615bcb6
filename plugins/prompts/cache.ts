/**
 * The prompt answer cache, in the plugin's KV keyspace, so every node
 * sharing the KV shares it: key = SHA-256 of the normalised prompt, the
 * scenario and the values of a chosen set of metadata fields. An entry is
 * fresh for `ttlMs`, then stale (served only when no agent can answer) for
 * `maxStaleMs` more, then gone. Only answers given without SAGE are stored:
 * a SAGE answer is proven per request and never replayed.
 *
 * Answers are stored in group commits: the puts made while one commit runs
 * share the next (up to 64 answers or ~512 KB in one atomic commit), and
 * each put resolves when its own group has landed. With one commit per
 * answer, uncached prompts queued on KV's commits (each a disk sync, 2.7 ms
 * apiece on this machine under load) rather than on the agents. A caller
 * that commits the answer itself (the prompt service, with the request's
 * audit record) takes {@linkcode PromptCache.entry} and reports it with
 * {@linkcode PromptCache.stored}.
 *
 * Each node also keeps the fresh answers it read or stored lately in memory
 * (`localMs`, 1 s by default; at most 1,000 answers or 8 M characters), so a
 * hit costs no KV read. A stored answer never changes; a newer answer under
 * the same key (stored by a `no-cache` request on another node) is seen here
 * once the local copy is `localMs` old, and a local copy is never served
 * past its own freshness. Stale answers are always read from KV.
 *
 * @example Usage
 * ```ts
 * import { createPromptCache } from "./cache.ts";
 * using kv = await Deno.openKv(":memory:");
 * const cache = createPromptCache(kv, { ttlMs: 300_000, maxStaleMs: 3_600_000 });
 * const key = await cache.key({ prompt: "Hi ", metadata: {} }, []);
 * await cache.put(key, { response: "hello", agent: "a1" });
 * (await cache.get(key))?.state; // "fresh"
 * ```
 *
 * @module
 */

import { hash } from "node:crypto";
import { deleteOldest } from "../../core/oldest.ts";

/** What is stored for one answer. */
export interface CachedAnswer {
  response: string;
  /** The root agent that gave it. */
  agent: string;
}

/** A read entry. */
export interface CacheEntry extends CachedAnswer {
  /** When it was stored, ms since the epoch. */
  storedAt: number;
  /** `fresh` within `ttlMs`, `stale` after. */
  state: "fresh" | "stale";
  /** Milliseconds since it was stored. */
  ageMs: number;
}

/** Options of {@linkcode createPromptCache}. */
export interface PromptCacheOptions {
  /** How long an answer is served as a hit. */
  ttlMs: number;
  /** How long after that it may still be served as stale when no agent can answer. */
  maxStaleMs: number;
  /**
   * How long this node serves a fresh answer from memory before reading KV
   * again (another node's newer answer is seen within this). 0: every
   * lookup reads KV. @default {1000}
   */
  localMs?: number;
  /** Time source. @default {Date.now} */
  now?: () => number;
}

/** The cache. */
export interface PromptCache {
  /** The key of a prompt: hash of normalised prompt, scenario and the values of `fields` in its metadata. */
  key(
    input: {
      prompt: string;
      scenario?: string;
      metadata: Record<string, unknown>;
    },
    fields: readonly string[],
  ): Promise<string>;
  /** {@linkcode PromptCache.key}, returned as it is (it never waits). */
  keyOf(
    input: {
      prompt: string;
      scenario?: string;
      metadata: Record<string, unknown>;
    },
    fields: readonly string[],
  ): string;
  /** The entry under `key`, fresh or stale; undefined when none or too old. */
  get(key: string): Promise<CacheEntry | undefined>;
  /** Stores an answer; false when it is too large for one KV value (not stored). */
  put(key: string, answer: CachedAnswer): Promise<boolean>;
  /**
   * What {@linkcode PromptCache.put} would store, for a caller that commits
   * it itself (with its audit record): the KV key relative to the cache's
   * store, value, expiry and estimated bytes; undefined when too large.
   * Call {@linkcode PromptCache.stored} once it has landed.
   */
  entry(key: string, answer: CachedAnswer): StoredEntry | undefined;
  /** Tells the cache that an {@linkcode PromptCache.entry} was committed (kept in memory). */
  stored(key: string, entry: StoredEntry): void;
}

/** An answer as stored in KV, for a caller committing it itself. */
export interface StoredEntry {
  /** Relative to the cache's store (`["cache", key]`). */
  kvKey: Deno.KvKey;
  /** The KV value: the answer as JSON bytes. */
  value: Uint8Array;
  /** The answer the value holds. */
  answer: StoredAnswer;
  expireIn: number;
  /** Bytes of the value, and some for its key. */
  bytes: number;
}

/** An answer and when it was stored, ms since the epoch. */
type StoredAnswer = CachedAnswer & { storedAt: number };

/** The KV store a cache needs (a plugin's scoped `ctx.kv` is one). */
export interface CacheKv {
  get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>>;
  atomic(): CacheAtomic;
}

/** The atomic operation a cache needs (`Deno.AtomicOperation` is one). */
export interface CacheAtomic {
  set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): CacheAtomic;
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError>;
}

/** A put waiting for the group commit it joined. */
interface Waiting {
  key: string;
  entry: StoredEntry;
  resolve: (stored: boolean) => void;
  reject: (err: unknown) => void;
}

/** Largest answer stored, characters. */
const MAX_STORED_CHARS = 20_000;
/** Largest value stored, bytes (KV takes at most 64 KiB). */
const MAX_VALUE_BYTES = 60_000;
/** Most answers in one commit. */
const MAX_GROUP = 64;
/** Most estimated bytes in one commit (KV takes ~800 KiB per atomic operation). */
const MAX_GROUP_BYTES = 512 * 1024;
/** Most answers kept in memory. */
const MAX_LOCAL = 1000;
/** Most characters of answers kept in memory. */
const MAX_LOCAL_CHARS = 8_000_000;

/** Most raw requests whose key is remembered. */
const MAX_KEYS = 1000;
/** Longest raw request (prompt, scenario, fields) whose key is remembered. */
const MAX_KEYED_CHARS = 2048;

/** A fresh answer kept in memory until `until`. */
interface Local {
  value: StoredAnswer;
  until: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A stored answer from its KV value: JSON bytes, or (stored before
 * 2026-12-07) the object itself; undefined when neither.
 */
function storedAnswer(value: unknown): StoredAnswer | undefined {
  let v = value;
  if (v instanceof Uint8Array) {
    try {
      v = JSON.parse(decoder.decode(v));
    } catch {
      return undefined;
    }
  }
  const a = v as Partial<StoredAnswer> | null;
  return a && typeof a.response === "string" && typeof a.agent === "string" &&
      typeof a.storedAt === "number"
    ? a as StoredAnswer
    : undefined;
}

/**
 * What "the same prompt" means: Unicode NFC, case folded, runs of
 * whitespace as one space, trimmed.
 *
 * @example Usage
 * ```ts
 * import { normalisePrompt } from "./cache.ts";
 * normalisePrompt("  Book a\n ROOM "); // "book a room"
 * ```
 */
export function normalisePrompt(prompt: string): string {
  // ASCII is its own NFC form: ICU's normalisation is skipped for it.
  const nfc = NON_ASCII.test(prompt) ? prompt.normalize("NFC") : prompt;
  return nfc.toLowerCase().replace(/\s+/g, " ").trim();
}
const NON_ASCII = /[\u0080-\uffff]/;

/** Creates a cache over `kv`. */
export function createPromptCache(
  kv: CacheKv,
  options: PromptCacheOptions,
): PromptCache {
  const now = options.now ?? Date.now;
  const expireIn = options.ttlMs + options.maxStaleMs;
  const localMs = options.localMs ?? 1000;
  if (!Number.isInteger(localMs) || localMs < 0 || localMs > 60_000) {
    throw new RangeError(`localMs must be 0-60000 ms, got ${localMs}`);
  }
  /** Keys of raw requests lately seen (scenario, fields and prompt as sent). */
  const keys = new Map<string, string>();
  /** Fresh answers in memory, oldest first. */
  const local = new Map<string, Local>();
  let localChars = 0;
  const forget = (key: string) => {
    const l = local.get(key);
    if (!l) return;
    local.delete(key);
    localChars -= l.value.response.length;
  };
  /** Keeps a fresh answer in memory for localMs, never past its freshness. */
  const remember = (key: string, value: Local["value"]) => {
    if (localMs === 0) return;
    const until = Math.min(now() + localMs, value.storedAt + options.ttlMs);
    forget(key);
    local.set(key, { value, until });
    localChars += value.response.length;
    while (local.size > MAX_LOCAL || localChars > MAX_LOCAL_CHARS) {
      localChars -= deleteOldest(local)!.value.response.length;
    }
  };
  const entryOf = (value: Local["value"], at: number): CacheEntry => {
    const ageMs = Math.max(0, at - value.storedAt);
    return {
      ...value,
      ageMs,
      state: ageMs <= options.ttlMs ? "fresh" : "stale",
    };
  };
  // Stored as JSON bytes: KV stores bytes as they are, where an object
  // goes through V8's serialiser (~5 µs of a prompt).
  const makeEntry = (
    key: string,
    answer: CachedAnswer,
  ): StoredEntry | undefined => {
    if (answer.response.length > MAX_STORED_CHARS) return undefined;
    const stored = {
      response: answer.response,
      agent: answer.agent,
      storedAt: now(),
    };
    const value = encoder.encode(JSON.stringify(stored));
    if (value.length > MAX_VALUE_BYTES) return undefined;
    const bytes = value.length + 128;
    return { kvKey: ["cache", key], value, answer: stored, expireIn, bytes };
  };
  let waiting: Waiting[] = [];
  let flushing = false;

  /** Commits the waiting puts, a bounded group at a time, until none wait. */
  const flush = async () => {
    try {
      while (waiting.length > 0) {
        let n = 0;
        let bytes = 0;
        while (
          n < waiting.length && n < MAX_GROUP &&
          (n === 0 || bytes + waiting[n].entry.bytes <= MAX_GROUP_BYTES)
        ) bytes += waiting[n++].entry.bytes;
        const group = waiting.slice(0, n);
        waiting = waiting.slice(n);
        try {
          const op = kv.atomic();
          for (const w of group) {
            op.set(w.entry.kvKey, w.entry.value, { expireIn });
          }
          const res = await op.commit();
          if (!res.ok) throw new Error("the cache commit failed its checks");
          for (const w of group) {
            remember(w.key, w.entry.answer);
            w.resolve(true);
          }
        } catch (err) {
          for (const w of group) w.reject(err);
        }
      }
    } finally {
      flushing = false;
    }
  };

  const keyOf = (
    input: {
      prompt: string;
      scenario?: string;
      metadata: Record<string, unknown>;
    },
    fields: readonly string[],
  ): string => {
    const vary = fields.length === 0
      ? []
      : [...new Set(fields)].sort().map((f) => [
        f,
        input.metadata[f] ?? null,
      ]);
    // The key is a pure function of these: the same raw request reuses it
    // (normalising and hashing were ~6 % of a hit's CPU).
    // A leading tag keeps the two shapes apart (a scenario has no "\n").
    const raw = vary.length === 0
      ? `0${input.scenario ?? ""}\n${input.prompt}`
      : `1${input.scenario ?? ""}\n${JSON.stringify(vary)}\n${input.prompt}`;
    const known = keys.get(raw);
    if (known !== undefined) return known;
    const text = JSON.stringify([
      normalisePrompt(input.prompt),
      input.scenario ?? "",
      vary,
    ]);
    // Synchronous: WebCrypto's digest was a tenth of a cache hit's CPU;
    // one-shot: createHash builds a Node stream per key.
    const key = hash("sha256", text, "hex");
    if (raw.length <= MAX_KEYED_CHARS) {
      if (keys.size >= MAX_KEYS) deleteOldest(keys);
      keys.set(raw, key);
    }
    return key;
  };

  return {
    key: (input, fields) => Promise.resolve(keyOf(input, fields)),
    keyOf,
    async get(key) {
      const l = local.get(key);
      if (l) {
        const at = now();
        if (at < l.until) return entryOf(l.value, at);
        forget(key);
      }
      const e = await kv.get<unknown>(["cache", key]);
      const stored = storedAnswer(e.value);
      if (!stored) return undefined;
      const entry = entryOf(stored, now());
      // expireIn is the earliest deletion, not a deadline: check the age.
      if (entry.ageMs > options.ttlMs + options.maxStaleMs) return undefined;
      if (entry.state === "fresh") remember(key, stored);
      return entry;
    },
    entry: (key, answer) => makeEntry(key, answer),
    stored(key, entry) {
      remember(key, entry.answer);
    },
    put(key, answer) {
      const entry = makeEntry(key, answer);
      if (!entry) return Promise.resolve(false);
      return new Promise<boolean>((resolve, reject) => {
        waiting.push({ key, entry, resolve, reject });
        if (!flushing) {
          flushing = true;
          // After this turn's other puts have joined.
          queueMicrotask(() => void flush());
        }
      });
    },
  };
}
