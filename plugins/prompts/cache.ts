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
 * apiece on this machine under load) rather than on the agents.
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

import { createHash } from "node:crypto";

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
  /** The entry under `key`, fresh or stale; undefined when none or too old. */
  get(key: string): Promise<CacheEntry | undefined>;
  /** Stores an answer; false when it is too large for one KV value (not stored). */
  put(key: string, answer: CachedAnswer): Promise<boolean>;
}

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
  value: CachedAnswer & { storedAt: number };
  /** Estimated bytes of its value. */
  bytes: number;
  resolve: (stored: boolean) => void;
  reject: (err: unknown) => void;
}

/** Largest answer stored (a KV value is at most 64 KiB). */
const MAX_STORED_CHARS = 20_000;
/** Most answers in one commit. */
const MAX_GROUP = 64;
/** Most estimated bytes in one commit (KV takes ~800 KiB per atomic operation). */
const MAX_GROUP_BYTES = 512 * 1024;

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
  return prompt.normalize("NFC").toLowerCase().replace(/\s+/g, " ").trim();
}

/** Creates a cache over `kv`. */
export function createPromptCache(
  kv: CacheKv,
  options: PromptCacheOptions,
): PromptCache {
  const now = options.now ?? Date.now;
  const expireIn = options.ttlMs + options.maxStaleMs;
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
          (n === 0 || bytes + waiting[n].bytes <= MAX_GROUP_BYTES)
        ) bytes += waiting[n++].bytes;
        const group = waiting.slice(0, n);
        waiting = waiting.slice(n);
        try {
          const op = kv.atomic();
          for (const w of group) {
            op.set(["cache", w.key], w.value, { expireIn });
          }
          const res = await op.commit();
          if (!res.ok) throw new Error("the cache commit failed its checks");
          for (const w of group) w.resolve(true);
        } catch (err) {
          for (const w of group) w.reject(err);
        }
      }
    } finally {
      flushing = false;
    }
  };

  return {
    key(input, fields) {
      const vary = [...new Set(fields)].sort().map((f) => [
        f,
        input.metadata[f] ?? null,
      ]);
      const text = JSON.stringify([
        normalisePrompt(input.prompt),
        input.scenario ?? "",
        vary,
      ]);
      // Synchronous: WebCrypto's digest was a tenth of a cache hit's CPU.
      return Promise.resolve(createHash("sha256").update(text).digest("hex"));
    },
    async get(key) {
      const e = await kv.get<CachedAnswer & { storedAt: number }>([
        "cache",
        key,
      ]);
      if (!e.value) return undefined;
      const ageMs = Math.max(0, now() - e.value.storedAt);
      // expireIn is the earliest deletion, not a deadline: check the age.
      if (ageMs > options.ttlMs + options.maxStaleMs) return undefined;
      return {
        ...e.value,
        ageMs,
        state: ageMs <= options.ttlMs ? "fresh" : "stale",
      };
    },
    put(key, answer) {
      if (answer.response.length > MAX_STORED_CHARS) {
        return Promise.resolve(false);
      }
      const value = {
        response: answer.response,
        agent: answer.agent,
        storedAt: now(),
      };
      // UTF-8 is at most 3 bytes per UTF-16 unit; plus the key and fields.
      const bytes = 3 * (value.response.length + value.agent.length) + 256;
      return new Promise<boolean>((resolve, reject) => {
        waiting.push({ key, value, bytes, resolve, reject });
        if (!flushing) {
          flushing = true;
          // After this turn's other puts have joined.
          queueMicrotask(() => void flush());
        }
      });
    },
  };
}
