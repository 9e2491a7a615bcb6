/**
 * The audit log: who did what to which route, with what outcome, for every
 * mutating call (POST, PUT, PATCH, DELETE). Each record is written as a JSON
 * log line (`"msg":"audit"`) and kept in Deno KV for `retentionMs`, keyed by
 * time, the node's call counter and the commit versionstamp, so records list
 * in the order they were written, even within one millisecond. A commit
 * stores its records as one value (a JSON array, as bytes) per up to
 * {@linkcode AUDIT_CHUNK_BYTES} and {@linkcode AUDIT_CHUNK_SPAN_MS} of
 * records: a KV row of its own cost each record ~7 µs of CPU (key, V8
 * serialisation, the row), which was most of what auditing added to a call.
 *
 * Records are written in group commits: the calls answered while a commit is
 * under way join the next one (up to `maxGroup` records in one atomic
 * commit), and each call waits for its own group, so no call is answered
 * before its record is stored. One commit per call capped a node at what KV
 * commits per second (its fsync), and each held up the reads queued behind
 * it on the same database.
 *
 * A handler whose call changed nothing (a prompt answered from the cache)
 * may say so with {@linkcode markUnchanged}: its record joins the next group
 * commit like any other, but the answer does not wait for that commit (an
 * fsync, 2-5 ms), so a crash within one commit can lose records of such
 * calls, never of a call that changed state.
 *
 * The principal comes from the request context (`c.get("principal")`, set by
 * the authentication middleware); a request without one is recorded as
 * `anonymous`.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import type { Logger } from "../observe/logger.ts";
import { currentCorrelationId } from "../observe/logger.ts";
import { auditKey } from "../state/keys.ts";
import { type Clock, systemClock } from "../clock.ts";

/** One audited call. */
export interface AuditRecord {
  id: string;
  at: number;
  principal: string;
  method: string;
  route: string;
  path: string;
  status: number;
  outcome: "ok" | "denied" | "failed";
  correlationId?: string;
}

/** Options for {@linkcode auditLog}. */
export interface AuditOptions {
  kv: Deno.Kv;
  log: Logger;
  /** How long records stay in KV. @default {2592000000} (30 days) */
  retentionMs?: number;
  clock?: Clock;
  /** Told when a group of records could not be stored (the calls themselves are unaffected). */
  onError?: (err: unknown) => void;
  /** Most records in one commit (KV allows 1,000 mutations). @default {128} */
  maxGroup?: number;
  /**
   * How long records of calls marked unchanged (no call waiting on them)
   * may wait to join a larger group, ms: a commit costs ~0.3 ms of CPU
   * however few records it holds. A record of a call that waits is
   * committed at once and takes those along. @default {10}
   */
  lingerMs?: number;
}

/** The audit middleware, and a way to store what it still holds. */
export type AuditMiddleware = MiddlewareHandler & {
  /** Commits every record not yet stored (the node calls it before closing KV). */
  drain(): Promise<void>;
};

/** A record waiting for the group commit it joined. */
interface Joined {
  record: AuditRecord;
  /** Its place among this node's calls (orders records of one millisecond). */
  n: number;
  /** Whether its call is held until the record is stored. */
  waits: boolean;
  /** Writes its handler asked to commit with the record (storeWithAudit). */
  writes?: AlongWrite[];
  stored: (ok: boolean) => void;
}

/** A KV write committed in the same atomic commit as a call's audit record. */
interface AlongWrite {
  key: Deno.KvKey;
  value: unknown;
  expireIn?: number;
  bytes: number;
  stored: (ok: boolean) => void;
}

/**
 * Most JSON bytes of records in one KV value (a value holds 64 KiB).
 *
 * @example Usage
 * ```ts
 * import { AUDIT_CHUNK_BYTES } from "./audit.ts";
 * import assert from "node:assert/strict";
 * assert.ok(AUDIT_CHUNK_BYTES < 65_536);
 * ```
 */
export const AUDIT_CHUNK_BYTES = 60_000;
/**
 * Widest time span of the records in one KV value, ms: a value is keyed by
 * its earliest record, so a listing from `since` starts this much earlier.
 *
 * @example Usage
 * ```ts
 * import { AUDIT_CHUNK_SPAN_MS } from "./audit.ts";
 * import assert from "node:assert/strict";
 * assert.equal(AUDIT_CHUNK_SPAN_MS, 1_000);
 * ```
 */
export const AUDIT_CHUNK_SPAN_MS = 1_000;

/** Calls whose audit record is still open for writes (their handler runs). */
const open = new WeakMap<Request, AlongWrite[]>();
/** Most estimated bytes of handler writes in one commit (KV takes ~800 KiB). */
const MAX_WRITE_BYTES = 512 * 1024;

const MUTATING = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Requests whose handler said they changed nothing (see markUnchanged). */
const unchanged = new WeakSet<Request>();

/**
 * Says that `request`'s call changed no state (e.g. an answer served from a
 * cache): it is still audited, in the next group commit, but its answer is
 * not held until that commit is durable. Call it from the handler, with the
 * request the node handed it (`c.req.raw`).
 *
 * @example Usage
 * ```ts ignore
 * ctx.api("notes").post("/lookup", "tasks:read", (c) => {
 *   markUnchanged(c.req.raw);
 *   return c.json(found);
 * });
 * ```
 */
export function markUnchanged(request: Request): void {
  unchanged.add(request);
}

/**
 * Commits `value` under `key` in `kv`'s keyspace (a plugin's `ctx.kv`) in
 * the same atomic commit as `request`'s audit record, instead of a commit of
 * its own: one fsync fewer for a call that writes once and is answered only
 * once its record is durable. The promise says whether that commit landed
 * (it settles after the handler has returned: do not await it there).
 * Undefined when the request has no audit record open for writes (not
 * audited, not a mutating method, or already answered): store it yourself.
 *
 * @example Usage
 * ```ts ignore
 * const stored = storeWithAudit(c.req.raw, ctx.kv, ["cache", key], answer, { bytes: 2048 });
 * if (!stored) await ctx.kv.set(["cache", key], answer);
 * ```
 */
export function storeWithAudit(
  request: Request,
  kv: { readonly prefix: Deno.KvKey },
  key: Deno.KvKey,
  value: unknown,
  options: { expireIn?: number; bytes?: number } = {},
): Promise<boolean> | undefined {
  const writes = open.get(request);
  if (!writes) return undefined;
  const bytes = options.bytes ?? 1024;
  if (!(bytes > 0 && bytes <= MAX_WRITE_BYTES)) return undefined;
  return new Promise<boolean>((stored) =>
    writes.push({
      key: [...kv.prefix, ...key],
      value,
      expireIn: options.expireIn,
      bytes,
      stored,
    })
  );
}

/**
 * Longest path kept in a record, characters: a request head may be 64 KiB,
 * and one record too big for a KV value would fail its whole group commit.
 */
const MAX_PATH_CHARS = 4096;

/** The path as recorded: cut at MAX_PATH_CHARS, the cut marked. */
function boundedPath(path: string): string {
  return path.length <= MAX_PATH_CHARS
    ? path
    : `${path.slice(0, MAX_PATH_CHARS)}…(${path.length} chars)`;
}

/** Maps an HTTP status to an audit outcome. */
export function outcomeOf(status: number): AuditRecord["outcome"] {
  if (status === 401 || status === 403 || status === 429) return "denied";
  return status >= 400 ? "failed" : "ok";
}

/**
 * Middleware that audits mutating calls after they are answered.
 *
 * @example Usage
 * ```ts ignore
 * app.use("/api/v1/*", auditLog({ kv, log }));
 * ```
 */
export function auditLog(options: AuditOptions): AuditMiddleware {
  const retention = options.retentionMs ?? 30 * 24 * 3_600_000;
  const clock = options.clock ?? systemClock;
  const maxGroup = options.maxGroup ?? 128;
  if (!Number.isInteger(maxGroup) || maxGroup < 1 || maxGroup > 1000) {
    throw new RangeError(`maxGroup must be 1-1000 records, got ${maxGroup}`);
  }
  const lingerMs = options.lingerMs ?? 10;
  if (!Number.isFinite(lingerMs) || lingerMs < 0 || lingerMs > 60_000) {
    throw new RangeError(`lingerMs must be 0-60000 ms, got ${lingerMs}`);
  }
  const { kv } = options;
  let waiting: Joined[] = [];
  /** How many of `waiting` belong to calls held until they are stored. */
  let waiters = 0;
  /** The flush under way, if any. */
  let flushing: Promise<void> | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let draining = false;
  let calls = 0;

  /**
   * Commits the waiting records, `maxGroup` at a time, while a call waits
   * on one of them or a whole group is ready (or the log drains).
   */
  const flush = async () => {
    try {
      while (waiting.length > 0) {
        // At most maxGroup mutations and MAX_WRITE_BYTES of handler writes.
        let n = 0;
        let mutations = 0;
        let bytes = 0;
        while (n < waiting.length) {
          const w = waiting[n].writes ?? [];
          const more = w.reduce((sum, x) => sum + x.bytes, 0);
          if (
            n > 0 &&
            (mutations + 1 + w.length > maxGroup ||
              bytes + more > MAX_WRITE_BYTES)
          ) break;
          mutations += 1 + w.length;
          bytes += more;
          n++;
        }
        const group = waiting.slice(0, n);
        waiting = waiting.slice(n);
        for (const j of group) if (j.waits) waiters--;
        let ok = true;
        try {
          const vs = kv.commitVersionstamp();
          const op = kv.atomic();
          for (const chunk of chunks(group)) {
            op.set(
              auditKey(chunk.at, chunk.n, vs),
              encoder.encode(chunk.json),
              { expireIn: retention },
            );
          }
          for (const { writes } of group) {
            for (const w of writes ?? []) {
              op.set(w.key, w.value, { expireIn: w.expireIn });
            }
          }
          const res = await op.commit();
          if (!res.ok) throw new Error("the audit commit failed its checks");
        } catch (err) {
          ok = false;
          options.onError?.(err);
        }
        for (const j of group) {
          for (const w of j.writes ?? []) w.stored(ok);
          j.stored(ok);
        }
        // Records nobody waits on may linger for a larger group.
        if (!draining && waiters === 0 && waiting.length < maxGroup) break;
      }
    } finally {
      flushing = undefined;
      if (waiting.length > 0) kick();
    }
  };
  const start = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (waiting.length > 0) flushing = flush();
  };
  /** Starts a flush now (a call waits, or a group is full), else lingers. */
  const kick = () => {
    if (flushing) return; // it looks again when its commit lands
    if (waiters > 0 || waiting.length >= maxGroup || lingerMs === 0) {
      if (timer !== undefined) clearTimeout(timer);
      // A promise that is ours until the microtask runs.
      timer = undefined;
      flushing = Promise.resolve().then(() => {
        flushing = undefined;
        start();
        return flushing;
      });
    } else if (timer === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        if (!flushing && waiting.length > 0) start();
      }, lingerMs);
      Deno.unrefTimer(timer);
    }
  };
  const store = (
    record: AuditRecord,
    waits: boolean,
    writes: AlongWrite[] | undefined,
  ) =>
    new Promise<boolean>((stored) => {
      waiting.push({
        record,
        n: calls++,
        waits,
        writes: writes?.length ? writes : undefined,
        stored,
      });
      if (waits) waiters++;
      // After this turn's other calls have joined (a microtask at the least).
      kick();
    });

  const middleware: MiddlewareHandler = async (c, next) => {
    const mutating = MUTATING.has(c.req.method);
    const raw = c.req.raw;
    // Open for storeWithAudit while the handler runs (one audit per request).
    const owns = mutating && !open.has(raw);
    if (owns) open.set(raw, []);
    let writes: AlongWrite[] | undefined;
    try {
      await next();
    } catch (err) {
      for (const w of open.get(raw) ?? []) w.stored(false);
      throw err;
    } finally {
      if (owns) {
        writes = open.get(raw);
        open.delete(raw);
      }
    }
    if (!mutating) return;
    const principal =
      (c.get("principal" as never) as { sub?: string } | undefined)?.sub ??
        "anonymous";
    const record: AuditRecord = {
      id: crypto.randomUUID(),
      at: clock.now(),
      principal,
      method: c.req.method,
      route: c.req.routePath,
      path: boundedPath(c.req.path),
      status: c.res.status,
      outcome: outcomeOf(c.res.status),
    };
    const cid = currentCorrelationId();
    if (cid) record.correlationId = cid;
    options.log.info("audit", { audit: record });
    // Nothing changed: the record is on its way, the answer need not wait.
    // A call whose writes go with its record waits for them too.
    const waits = !unchanged.has(c.req.raw) || (writes?.length ?? 0) > 0;
    const stored = store(record, waits, writes);
    if (waits) await stored;
  };
  const drain = async () => {
    draining = true;
    try {
      while (waiting.length > 0 || flushing) {
        if (!flushing) start();
        await flushing;
      }
    } finally {
      draining = false;
    }
  };
  return Object.assign(middleware, { drain });
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const NON_ASCII = /[\u0080-\uffff]/;

/** One KV value of a group commit: records as a JSON array, keyed by the earliest. */
interface Chunk {
  at: number;
  n: number;
  json: string;
}

/**
 * Splits a commit's records (in call order) into values of at most
 * AUDIT_CHUNK_BYTES of JSON spanning at most AUDIT_CHUNK_SPAN_MS.
 */
function chunks(group: readonly Joined[]): Chunk[] {
  const out: Chunk[] = [];
  let parts: string[] = [];
  let bytes = 0;
  let first = 0;
  let min = 0;
  let max = 0;
  const close = () => {
    if (parts.length === 0) return;
    out.push({ at: min, n: group[first].n, json: `[${parts.join(",")}]` });
    parts = [];
    bytes = 0;
  };
  for (let i = 0; i < group.length; i++) {
    const { record } = group[i];
    // Records are ASCII but for principals and paths: length is bytes or more.
    const json = JSON.stringify(record);
    const size = json.length * (NON_ASCII.test(json) ? 3 : 1) + 1;
    if (
      parts.length > 0 &&
      (bytes + size > AUDIT_CHUNK_BYTES ||
        Math.max(max, record.at) - Math.min(min, record.at) >
          AUDIT_CHUNK_SPAN_MS)
    ) close();
    if (parts.length === 0) {
      first = i;
      min = max = record.at;
    }
    parts.push(json);
    bytes += size;
    min = Math.min(min, record.at);
    max = Math.max(max, record.at);
  }
  close();
  return out;
}

/** The records of one stored value: a chunk (bytes), or one record (before chunks). */
function recordsOf(value: unknown): AuditRecord[] {
  if (value instanceof Uint8Array) {
    return JSON.parse(decoder.decode(value)) as AuditRecord[];
  }
  return [value as AuditRecord];
}

/**
 * Audit records from `since` (wall ms), oldest first; at most `limit` (100).
 *
 * @example Usage
 * ```ts ignore
 * const lastHour = await listAudit(kv, { since: Date.now() - 3_600_000 });
 * ```
 */
export async function listAudit(
  kv: Deno.Kv,
  options: { since?: number; limit?: number } = {},
): Promise<AuditRecord[]> {
  const limit = options.limit ?? 100;
  const since = options.since;
  const found: AuditRecord[] = [];
  let latest = -Infinity;
  // A value is keyed by its earliest record and spans at most
  // AUDIT_CHUNK_SPAN_MS: start that much before `since`, and stop at a value
  // whose every record is later than the `limit` found so far.
  const selector = since === undefined
    ? { prefix: auditKey() }
    : { prefix: auditKey(), start: auditKey(since - AUDIT_CHUNK_SPAN_MS) };
  for await (const e of kv.list(selector, { batchSize: 100 })) {
    const at = e.key[1] as number;
    if (found.length >= limit && at > latest) break;
    for (const r of recordsOf(e.value)) {
      if (since !== undefined && r.at < since) continue;
      found.push(r);
      latest = Math.max(latest, r.at);
    }
  }
  // Stable: records of one millisecond stay in the order they were stored.
  found.sort((a, b) => a.at - b.at);
  return found.slice(0, limit);
}
