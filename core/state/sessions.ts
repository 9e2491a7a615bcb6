/**
 * Sessions for agents and dashboard operators, kept in Deno KV.
 *
 * The bearer token is 32 random bytes (base64url) handed to the caller once;
 * KV stores only its SHA-256, so a leaked database holds no usable token.
 * Deadlines live in the record and are checked on every read: `expireIn`
 * only garbage-collects, because KV may keep a key well past it.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { serialize } from "node:v8";
import { type Clock, systemClock } from "../clock.ts";
import { sessionKey, sessionsBySubjectKey } from "./keys.ts";

/** Who a session belongs to: a connected agent or a dashboard operator. */
export type SessionKind = "agent" | "operator";

/** A session as stored (never holds the token itself). */
export interface Session {
  /** SHA-256 of the token, base64url: the session's id and key. */
  id: string;
  /** Agent id or operator name. */
  subject: string;
  kind: SessionKind;
  /** Wall-clock ms. */
  createdAt: number;
  /** Wall-clock ms; the session is dead from this instant on. */
  expiresAt: number;
  /** Wall-clock ms of creation or the last successful touch. */
  lastSeen: number;
  /** The sliding window `touch` extends by unless told otherwise. */
  ttlMs: number;
  /** Caller data (roles, channels, ...), structured-cloneable. */
  data?: unknown;
  /** Id of the node the subject is connected to, if any. */
  node?: string;
}

/** Input of {@linkcode SessionStore.create}. */
export interface CreateSessionInput {
  subject: string;
  kind: SessionKind;
  /** Lifetime from now. @default {the store's defaultTtlMs} */
  ttlMs?: number;
  data?: unknown;
  node?: string;
}

/** Options for {@linkcode SessionStore.touch}. */
export interface TouchOptions {
  /** Extend to now + this. @default {the session's ttlMs} */
  extendMs?: number;
}

/** Options for {@linkcode createSessionStore}. */
export interface SessionStoreOptions {
  /** @default {systemClock} */
  clock?: Clock;
  /** Lifetime of a session created without `ttlMs`. @default {3_600_000} */
  defaultTtlMs?: number;
  /**
   * Absolute cap from `createdAt`: neither `create` nor `touch` sets an
   * expiry past it. @default {undefined} (no cap)
   */
  maxLifetimeMs?: number;
  /** How long past `expiresAt` KV may keep the key before deleting it. @default {60_000} */
  gcSlackMs?: number;
}

/** Sessions in KV. Every method reads expiry from the record, not from KV. */
export interface SessionStore {
  /** Creates a session; the token is returned only here. */
  create(
    input: CreateSessionInput,
  ): Promise<{ token: string; session: Session }>;
  /** The live session for `token`, or null when missing, revoked or expired. */
  get(token: string): Promise<Session | null>;
  /**
   * Slides the expiry to now + `extendMs` (never shortening it, never past
   * `maxLifetimeMs`) and sets `lastSeen`; null when missing, revoked or expired.
   */
  touch(token: string, options?: TouchOptions): Promise<Session | null>;
  /** Deletes the session; true when one was there. */
  revoke(token: string): Promise<boolean>;
  /**
   * Deletes every session of `subject` (expired ones too), in batches within
   * KV's per-operation limits; resolves to how many records were deleted.
   */
  revokeSubject(subject: string): Promise<number>;
  /** The live sessions of `subject`, oldest first. */
  list(subject: string): Promise<Session[]>;
}

/** KV's value size limit in bytes. */
export const MAX_VALUE_BYTES = 65_536;
/** Longest subject in UTF-8 bytes, so every key stays far below KV's limits. */
export const MAX_SUBJECT_BYTES = 512;
// Tokens we issue are 43 characters; anything much longer is not ours.
const MAX_TOKEN_LENGTH = 256;
// Per atomic op KV allows 1000 mutations and 81,920 bytes of keys.
const MAX_MUTATIONS = 1000;
const MAX_KEY_BYTES_PER_OP = 81_920;
const MAX_CAS_ATTEMPTS = 64;
const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/**
 * The id a token is stored under: SHA-256, base64url.
 *
 * @example Usage
 * ```ts
 * import { hashToken } from "./sessions.ts";
 * const id = await hashToken("abc");
 * id.length; // 43
 * ```
 */
export function hashToken(token: string): Promise<string> {
  // node:crypto: synchronous, ~5 µs, where WebCrypto's async digest is ~70.
  return Promise.resolve(
    base64url(createHash("sha256").update(token).digest()),
  );
}

function newToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

function checkSubject(subject: unknown, op: string): string {
  if (typeof subject !== "string" || subject.length === 0) {
    throw new TypeError(
      `Cannot ${op}: subject must be a non-empty string, got ${
        typeof subject === "string" ? "''" : String(subject)
      }`,
    );
  }
  const bytes = encoder.encode(subject).length;
  if (bytes > MAX_SUBJECT_BYTES) {
    throw new RangeError(
      `Cannot ${op}: subject is ${bytes} bytes; at most ${MAX_SUBJECT_BYTES}`,
    );
  }
  return subject;
}

function checkPositive(name: string, value: unknown, op: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `Cannot ${op}: ${name} must be a finite number > 0, got ${String(value)}`,
    );
  }
  return value;
}

function serializedSize(value: unknown, op: string): number {
  try {
    return serialize(value).length;
  } catch (err) {
    throw new TypeError(
      `Cannot ${op}: data is not structured-cloneable: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
}

function isTokenShaped(token: unknown): token is string {
  return typeof token === "string" && token.length > 0 &&
    token.length <= MAX_TOKEN_LENGTH;
}

/**
 * Creates a session store over `kv`.
 *
 * @example Usage
 * ```ts
 * import { createSessionStore } from "./sessions.ts";
 * import { ManualClock } from "../clock.ts";
 * const kv = await Deno.openKv(":memory:");
 * const clock = new ManualClock(1_000);
 * const sessions = createSessionStore(kv, { clock, defaultTtlMs: 60_000 });
 * const { token } = await sessions.create({ subject: "agent-1", kind: "agent" });
 * (await sessions.get(token))?.subject; // "agent-1"
 * await clock.advance(60_000);
 * await sessions.get(token); // null
 * kv.close();
 * ```
 */
export function createSessionStore(
  kv: Deno.Kv,
  options: SessionStoreOptions = {},
): SessionStore {
  const clock = options.clock ?? systemClock;
  const defaultTtlMs = checkPositive(
    "defaultTtlMs",
    options.defaultTtlMs ?? 3_600_000,
    "create session store",
  );
  const maxLifetimeMs = options.maxLifetimeMs === undefined
    ? Infinity
    : checkPositive(
      "maxLifetimeMs",
      options.maxLifetimeMs,
      "create session store",
    );
  const gcSlackMs = options.gcSlackMs ?? 60_000;
  if (!Number.isFinite(gcSlackMs) || gcSlackMs < 0) {
    throw new RangeError(
      `Cannot create session store: gcSlackMs must be a finite number >= 0, got ${gcSlackMs}`,
    );
  }

  const expireIn = (s: Session, now: number) =>
    Math.max(1, Math.ceil(s.expiresAt - now + gcSlackMs));
  const live = (s: Session | null, now: number): s is Session =>
    s !== null && s.expiresAt > now;

  /** Deletes `subject`'s sessions `ids`, with their index entries, in KV-sized batches. */
  async function deleteAll(subject: string, ids: string[]): Promise<void> {
    // Two deletes per session; a generous bound on their encoded key bytes
    // (a NUL in the subject is escaped to two bytes).
    const keyBytes = 2 * encoder.encode(subject).length + 200;
    const batch = Math.min(
      MAX_MUTATIONS / 2,
      Math.floor(MAX_KEY_BYTES_PER_OP / keyBytes),
    );
    for (let i = 0; i < ids.length; i += batch) {
      const chunk = ids.slice(i, i + batch);
      const op = kv.atomic();
      for (const id of chunk) {
        op.delete(sessionKey(id)).delete(sessionsBySubjectKey(subject, id));
      }
      await op.commit();
    }
  }

  return {
    async create(input) {
      const op = "create session";
      if (typeof input !== "object" || input === null) {
        throw new TypeError(`Cannot ${op}: input must be an object`);
      }
      const subject = checkSubject(input.subject, op);
      if (input.kind !== "agent" && input.kind !== "operator") {
        throw new TypeError(
          `Cannot ${op}: kind must be 'agent' or 'operator', got '${
            String(input.kind)
          }'`,
        );
      }
      const ttlMs = checkPositive("ttlMs", input.ttlMs ?? defaultTtlMs, op);
      if (input.node !== undefined && typeof input.node !== "string") {
        throw new TypeError(
          `Cannot ${op}: node must be a string, got ${typeof input.node}`,
        );
      }
      const token = newToken();
      const id = await hashToken(token);
      const now = clock.now();
      const session: Session = {
        id,
        subject,
        kind: input.kind,
        createdAt: now,
        expiresAt: Math.min(now + ttlMs, now + maxLifetimeMs),
        lastSeen: now,
        ttlMs,
        ...(input.data === undefined ? {} : { data: input.data }),
        ...(input.node === undefined ? {} : { node: input.node }),
      };
      const size = serializedSize(session, op);
      if (size > MAX_VALUE_BYTES) {
        throw new RangeError(
          `Cannot ${op}: the record with its data is ${size} bytes; a KV value holds at most ${MAX_VALUE_BYTES}`,
        );
      }
      const ex = expireIn(session, now);
      const res = await kv.atomic()
        // 256 random bits never collide; the check only keeps that an invariant.
        .check({ key: sessionKey(id), versionstamp: null })
        .set(sessionKey(id), session, { expireIn: ex })
        .set(sessionsBySubjectKey(subject, id), null, { expireIn: ex })
        .commit();
      if (!res.ok) throw new Error(`Cannot ${op}: session id collision`);
      return { token, session };
    },

    async get(token) {
      if (!isTokenShaped(token)) return null;
      const entry = await kv.get<Session>(sessionKey(await hashToken(token)));
      return live(entry.value, clock.now()) ? entry.value : null;
    },

    async touch(token, opts = {}) {
      const extendMs = opts.extendMs === undefined
        ? undefined
        : checkPositive("extendMs", opts.extendMs, "touch session");
      if (!isTokenShaped(token)) return null;
      const key = sessionKey(await hashToken(token));
      for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt++) {
        const entry = await kv.get<Session>(key);
        const now = clock.now();
        if (!live(entry.value, now)) return null;
        const s = entry.value;
        const next: Session = {
          ...s,
          lastSeen: Math.max(s.lastSeen, now),
          expiresAt: Math.max(
            s.expiresAt,
            Math.min(now + (extendMs ?? s.ttlMs), s.createdAt + maxLifetimeMs),
          ),
        };
        const ex = expireIn(next, now);
        const res = await kv.atomic()
          .check(entry)
          .set(key, next, { expireIn: ex })
          // The index must live as long as the record it points to.
          .set(sessionsBySubjectKey(s.subject, s.id), null, { expireIn: ex })
          .commit();
        if (res.ok) return next;
      }
      throw new Error(
        `Cannot touch session: still contended after ${MAX_CAS_ATTEMPTS} attempts`,
      );
    },

    async revoke(token) {
      if (!isTokenShaped(token)) return false;
      const key = sessionKey(await hashToken(token));
      for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt++) {
        const entry = await kv.get<Session>(key);
        if (entry.value === null) return false;
        const s = entry.value;
        const res = await kv.atomic()
          .check(entry)
          .delete(key)
          .delete(sessionsBySubjectKey(s.subject, s.id))
          .commit();
        if (res.ok) return true;
      }
      throw new Error(
        `Cannot revoke session: still contended after ${MAX_CAS_ATTEMPTS} attempts`,
      );
    },

    async revokeSubject(subject) {
      checkSubject(subject, "revoke sessions");
      let deleted = 0;
      // Re-list until empty, so sessions created meanwhile go too.
      for (;;) {
        const ids: string[] = [];
        for await (
          const e of kv.list({ prefix: sessionsBySubjectKey(subject) }, {
            limit: 1000,
          })
        ) {
          ids.push(e.key[e.key.length - 1] as string);
        }
        if (ids.length === 0) return deleted;
        await deleteAll(subject, ids);
        deleted += ids.length;
      }
    },

    async list(subject) {
      checkSubject(subject, "list sessions");
      const keys: Deno.KvKey[] = [];
      for await (
        const e of kv.list({ prefix: sessionsBySubjectKey(subject) })
      ) {
        keys.push(sessionKey(e.key[e.key.length - 1] as string));
      }
      const out: Session[] = [];
      const now = clock.now();
      // getMany takes at most 10 keys.
      for (let i = 0; i < keys.length; i += 10) {
        for (const e of await kv.getMany<Session[]>(keys.slice(i, i + 10))) {
          if (live(e.value, now)) out.push(e.value);
        }
      }
      return out.sort((a, b) =>
        a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1)
      );
    },
  };
}
