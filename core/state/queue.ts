/**
 * A durable work queue on Deno KV, shared safely by many processes (one KV
 * file) and many machines (KV Connect to `denokv`).
 *
 * Built on atomic check-and-set, not `kv.enqueue`: KV's own queue cannot
 * share work across processes (a listener in another process waits up to
 * 60 s) and does not exist over KV Connect.
 *
 * Rules:
 * - Priority 0–9, 9 most urgent. Among due messages a claim always takes the
 *   highest priority first, and FIFO within a priority: the ready index is
 *   keyed by `9 - priority` and the commit versionstamp of the enqueue.
 * - `claim(n, leaseMs)` moves messages to in-flight under a lease in one
 *   atomic commit per batch (each item checked by its ready-index entry, so a
 *   message is claimed by one claimer only). If the batch loses a race it
 *   falls back to claiming item by item, in order.
 * - No commit outgrows Deno KV's limits (819,200 bytes, 1000 mutations):
 *   claims, acks, `enqueueMany` and group commits take as many messages as
 *   fit one commit (`CommitSize`) and commit the rest after, in order
 *   (docs/state.md "Commit limits").
 * - Each claim counts an attempt. `ack` finishes, `nak(delay)` retries later
 *   (exponential backoff by default), `inProgress` extends the lease, `term`
 *   dead-letters at once. After `maxAttempts` a message goes to the DLQ with
 *   its error history.
 * - Expired leases return to ready (or to the DLQ when attempts are used up)
 *   and due delayed messages become ready when someone sweeps: consumers
 *   sweep by default; give `sweeper: () => consensus.isLeader()` so only the
 *   leader does.
 * - Every transition out of a state checks the versionstamp of what it read,
 *   so a deposed lease holder's ack fails with {@linkcode LeaseLostError}.
 * - An ack's result is kept in the done record when both fit one KV value;
 *   a larger one is stored in chunks first, under a fresh reference the done
 *   record then names, so a reader sees all of it or none. A result over
 *   `maxResultBytes`, or one KV cannot store, dead-letters its message (the
 *   ack rejects with {@linkcode UnstorableResultError}); in a batched ack,
 *   any failure fails only its own message.
 * - Wall-clock times (`availableAt`, `leaseUntil`) come from the injected
 *   clock; across machines, keep leases well above the clock skew.
 * - In the window mode (`commit: { windowMs }`) the ready messages one
 *   commit stores are packed into segments, one KV value each, claimed and
 *   acked through a small state value beside it; a message leaving that
 *   path gets its own record first (`./queue_segments.ts`, docs/state.md
 *   "Segments").
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";
import { type Clock, systemClock } from "../clock.ts";
import { type QueueCountState, queueKeys } from "./keys.ts";
import { checksPerCommit, retryLocked } from "./store.ts";
import { CommitSize, valueBytes } from "./commit_size.ts";
import { backoffDelay } from "../resilience/backoff.ts";
import { PlexusError } from "../errors.ts";
import {
  emptySegState,
  isReady,
  leaseOf,
  leaseToken,
  packedId,
  type SegLease,
  type SegLeaseRef,
  SEGMENT_BYTES,
  segmentOf,
  type SegState,
  settlePositions,
} from "./queue_segments.ts";
import { deleteOldest } from "../oldest.ts";

/** Where a message is in its life. */
export type MessageState =
  | "ready"
  | "delayed"
  | "inflight"
  | "done"
  | "dead"
  | "cancelled";

/** One failed attempt. */
export interface AttemptError {
  at: number;
  attempt: number;
  error: string;
  consumer?: string;
}

/** A message as stored. */
export interface QueueMessage<T = unknown> {
  id: string;
  queue: string;
  priority: number;
  payload: T;
  state: MessageState;
  attempts: number;
  maxAttempts: number;
  backoff: BackoffOptions;
  enqueuedAt: number;
  availableAt: number;
  idempotencyKey?: string;
  leaseId?: string;
  leaseUntil?: number;
  consumer?: string;
  /** Tag of the last holder transition (recognises an ambiguous commit). */
  lastOp?: string;
  /** Most recent failures, oldest first (at most 20 kept). */
  errors: AttemptError[];
  result?: unknown;
  /** Where a result too large for the done record is stored. */
  resultRef?: StoredResult;
  finishedAt?: number;
  deadAt?: number;
  deadReason?: string;
  /** When {@linkcode DurableQueue.cancel} took it out. */
  cancelledAt?: number;
  cancelReason?: string;
}

/** What {@linkcode DurableQueue.cancel} did. */
export type CancelOutcome<T> =
  | {
    outcome: "cancelled";
    /** The state it was cancelled from: in-flight means a holder is running it. */
    from: "ready" | "delayed" | "inflight";
    message: QueueMessage<T>;
  }
  /** Already done, dead or cancelled: nothing changed. */
  | { outcome: "finished"; message: QueueMessage<T> }
  | { outcome: "unknown" };

/** The mark an in-flight message's cancel leaves for its holder. */
export interface CancelMark {
  reason: string;
  at: number;
}

/**
 * A result stored beside its done record: `chunks` values under
 * `["queue", q, "result", id, ref, i]` holding its `bytes` serialized bytes.
 */
export interface StoredResult {
  ref: string;
  bytes: number;
  chunks: number;
}

/** Exponential backoff between attempts: `min(maxMs, baseMs * 2^(attempt-1))`. */
export interface BackoffOptions {
  /** @default {1000} */
  baseMs: number;
  /** @default {60000} */
  maxMs: number;
}

/** Options for {@linkcode DurableQueue.enqueue}. */
export interface EnqueueOptions {
  /** 0–9, 9 most urgent. @default {4} */
  priority?: number;
  /** Not claimable before this many ms from now. @default {0} */
  delayMs?: number;
  /** Enqueues with the same key within the window return the first id. */
  idempotencyKey?: string;
  /** How long an idempotency key deduplicates. @default {86400000} */
  idempotencyWindowMs?: number;
  /** Attempts before the DLQ. @default {3} */
  maxAttempts?: number;
  backoff?: Partial<BackoffOptions>;
  /** Message id; by default a UUIDv7 (time-ordered: keys land together in KV). */
  id?: string;
}

/** Result of an enqueue. */
export interface Enqueued {
  id: string;
  /** True when an idempotency key matched an earlier enqueue. */
  deduplicated: boolean;
}

/** A stored ready message as {@linkcode DurableQueue.peek} lists it. */
export interface ReadyRef {
  id: string;
  priority: number;
  /**
   * The versionstamp of the commit that made it ready (its enqueue, or the
   * nak or sweep that returned it): a smaller one became ready earlier,
   * across every queue of one KV.
   */
  readySince: string;
}

/** Depth and age figures for metrics. */
export interface QueueStats {
  ready: number;
  delayed: number;
  inflight: number;
  dead: number;
  /** Age in ms of the oldest ready message, 0 when none. */
  oldestReadyAgeMs: number;
}

/** Thrown when an ack/nak/extend comes from a holder whose lease is gone. */
export class LeaseLostError extends PlexusError {
  override name = "LeaseLostError";
  /** `message` names the message and the holder. HTTP 409, not retryable. */
  constructor(message: string, options?: ErrorOptions) {
    super("lease_lost", message, { status: 409, cause: options?.cause });
  }
}

/**
 * An ack's result cannot be stored: it serializes to more than
 * `maxResultBytes`, or KV cannot serialize it at all. The message was
 * dead-lettered with this error's message as the reason.
 */
export class UnstorableResultError extends RangeError {
  override name = "UnstorableResultError";
}

/** Largest result an ack stores by default (serialized bytes). */
export const DEFAULT_MAX_RESULT_BYTES = 4 * 1024 * 1024;

/** Options for {@linkcode DurableQueue}. */
export interface QueueOptions {
  clock?: Clock;
  /** How long finished messages stay readable (status lookups). @default {3600000} */
  doneRetentionMs?: number;
  /**
   * Items per atomic claim and ack commit. Each item costs one check; KV
   * Connect servers allow only 10 checks per operation, a local store 100.
   * @default {checksPerCommit(kv)} (100 on a local store openStore opened, else 10)
   */
  maxBatch?: number;
  /**
   * Largest ack result stored, in serialized bytes (V8 structured clone, as
   * KV stores values); a larger one dead-letters its message.
   * @default {4194304}
   */
  maxResultBytes?: number;
  /**
   * Group commit: concurrent {@linkcode DurableQueue.enqueue} calls (no
   * idempotency key, no caller-chosen id) made while a commit is on its way
   * share the next commit, up to this many messages; each call resolves
   * once its commit is durable, as alone. 1 commits each call on its own.
   * @default {100}
   */
  maxGroup?: number;
  /**
   * When enqueues and acks count as done: `"sync"` once their commit is
   * durable, or `{ windowMs }` (opt-in group commit with a loss window):
   * once they join an in-memory group whose commit starts at most
   * `windowMs` later, so a SIGKILL loses at most what was acknowledged in
   * the last `windowMs` (plus two commits' time). See {@linkcode QueueCommitMode}.
   * @default {"sync"}
   */
  commit?: QueueCommitMode;
}

/**
 * How a queue commits enqueues (those without idempotency key or chosen id)
 * and acks.
 *
 * - `"sync"`: a call resolves once its KV commit is durable; nothing
 *   acknowledged is ever lost.
 * - `{ windowMs, maxBuffered }`: a call resolves once it joins the in-memory
 *   group of the next commit; that commit starts at most `windowMs` after
 *   its oldest call joined (at once when it is full: `maxGroup` enqueues,
 *   `maxBatch` acks). A call that would not fit the next commit, or that
 *   comes while a call older than `windowMs` is still not durable, waits
 *   for its own commit instead (it is never at risk, and its commit starts
 *   at once). At most `maxBuffered` calls wait in memory; the next blocks
 *   until a commit makes room. So a crash loses only calls acknowledged
 *   within the last `windowMs` plus the duration of two commits (the one
 *   under way, then their own). A commit that fails after its callers were
 *   acknowledged is reported by {@linkcode DurableQueue.flush} and
 *   {@linkcode DurableQueue.close} ({@linkcode QueueCommitError}); call
 *   `close()` on a clean stop, or the waiting calls are lost as in a crash.
 *
 * @example
 * ```ts
 * import { DurableQueue } from "./queue.ts";
 * const kv = await Deno.openKv(":memory:");
 * const q = new DurableQueue(kv, "fast", { commit: { windowMs: 20 } });
 * await q.enqueue("a"); // in memory; durable within 20 ms
 * await q.close(); // commits what waits
 * kv.close();
 * ```
 */
export type QueueCommitMode = "sync" | {
  /** Longest a call acknowledged early waits before its commit starts (1-60000). */
  windowMs: number;
  /** Calls held in memory at most; the next blocks. @default {10000} */
  maxBuffered?: number;
};

/**
 * Commits of a queue in `{ windowMs }` mode failed after their callers had
 * been acknowledged: those enqueues were not stored (`lostEnqueues`), those
 * acks did not land (`failedAcks`: the messages are delivered again when
 * their leases run out). Thrown by {@linkcode DurableQueue.flush} and
 * {@linkcode DurableQueue.close}.
 *
 * @example
 * ```ts
 * import { QueueCommitError } from "./queue.ts";
 * const err = new QueueCommitError("jobs", ["id-1"], [], new Error("disk full"));
 * if (err.lostEnqueues[0] !== "id-1") throw new Error("unexpected");
 * ```
 */
export class QueueCommitError extends PlexusError {
  override name = "QueueCommitError";
  /** Ids of acknowledged enqueues that were not stored. */
  readonly lostEnqueues: string[];
  /** Ids of acknowledged acks that did not land. */
  readonly failedAcks: string[];
  /** `queue` names the queue; `cause` is the first commit error seen. */
  constructor(
    queue: string,
    lostEnqueues: string[],
    failedAcks: string[],
    cause: unknown,
  ) {
    super(
      "queue_commit_failed",
      `Queue '${queue}': ${lostEnqueues.length} acknowledged enqueue(s) were not stored and ${failedAcks.length} acknowledged ack(s) did not land (${
        (cause as Error)?.message ?? cause
      })`,
      { status: 503, cause },
    );
    this.lostEnqueues = lostEnqueues;
    this.failedAcks = failedAcks;
  }
}

/** An enqueue waiting for the group commit it joined. */
interface GroupedEnqueue<T> {
  msg: QueueMessage<T>;
  resolve: (e: Enqueued) => void;
  reject: (err: unknown) => void;
  /** performance.now() when it joined (windowed mode). */
  at?: number;
  /** Windowed mode: its caller waits for the commit (not acknowledged early). */
  waits?: boolean;
  /** Windowed mode: taken into a commit (no longer claimable from memory). */
  taken?: boolean;
  /**
   * Windowed mode: claimed from memory before its commit; settles with the
   * versionstamp of the commit that stores it (its holder waits for it).
   */
  stored?: PromiseWithResolvers<string>;
  /** Its position in the segment its commit stored it in, if packed. */
  pos?: number;
}

/** An ack waiting for its commit (windowed mode). */
interface PendingAck<T> {
  holder: Holder<T>;
  prepared: PreparedResult;
  at: number;
  /** Its caller waits for the commit (not acknowledged early). */
  waits: boolean;
  /** Settles the caller (an early one was already told "acked"). */
  done: (err: Error | undefined) => void;
}

/** A claimed message and the verbs that settle it. */
export interface Delivery<T = unknown> {
  readonly id: string;
  readonly payload: T;
  /** 1 on first delivery. */
  readonly attempts: number;
  readonly message: QueueMessage<T>;
  /** Finishes the message; `result` is kept for `doneRetentionMs`. */
  ack(result?: unknown): Promise<void>;
  /** Retries later: after `delayMs`, or the backoff for this attempt. */
  nak(delayMs?: number, error?: string): Promise<void>;
  /** Extends the lease by `leaseMs` (default: the claim's lease) from now. */
  inProgress(leaseMs?: number): Promise<void>;
  /** Dead-letters at once. */
  term(reason: string): Promise<void>;
  /** Whether ack/nak/term already ran. */
  readonly settled: boolean;
}

/** What a delivery knows about the message it holds. */
interface Holder<T> {
  msg: QueueMessage<T>;
  /** Versionstamp of the last write this holder made. */
  vs: string;
  settled: boolean;
  /** The holder's transitions, one at a time. */
  chain: Promise<unknown>;
  /** An ack waits in the windowed group: no other verb may follow. */
  closing?: boolean;
  /** Claimed from memory: the group entry that will store it. */
  entry?: GroupedEnqueue<T>;
  /** Claimed packed: its segment, lease and position (no record of its own). */
  pack?: { seg: string; lease: string; pos: number };
}

/** A batched settle in which at least one message was taken back. */
class BatchLostError extends Error {
  override name = "BatchLostError";
}

/**
 * The segment a new message is stored in by its windowed commit: a packed
 * id, and ready, claimed from memory, or acked from memory without a
 * result (a result stays with a record).
 */
function packedSegment(m: QueueMessage<unknown>): string | undefined {
  if (
    m.state === "delayed" ||
    (m.state === "done" && (m.result !== undefined || m.resultRef))
  ) return undefined;
  return segmentOf(m.id);
}

/** A stand-in as long as a packed id, until a message joins its segment. */
const PACKED_ID_SIZE = "00000000-0000-7000-8000-000000000000~000";

/**
 * Messages one segment holds at most, whatever `maxGroup` says, so moving
 * a whole expired lease's messages out (4 or 5 mutations each) takes few
 * commits. Segments stored before this limit may hold more (up to ~300
 * small ones in 60 KiB): every path that moves many of a segment's
 * messages at once (a sweep, a burst of naks) splits its work into
 * commits that fit KV's limits.
 */
const SEGMENT_MESSAGES = 200;

/** Segments whose messages a queue keeps for its claims. */
const SEG_CACHE = 128;

/** A packed message waiting to be moved out to its own record. */
interface ExplodeRequest {
  pos: number;
  leaseId?: string;
  done: PromiseWithResolvers<Deno.KvCommitResult | null>;
}

/** A short random wait before retrying a commit that lost a race (ms: up to 2^tries, at most 50). */
function pause(tries: number): Promise<void> {
  return new Promise((r) =>
    setTimeout(r, Math.random() * Math.min(50, 2 ** tries))
  );
}

/** A segment as read: its entries, messages and state (empty when absent). */
interface SegRead<T> {
  /** Undefined when only the state was read. */
  seg?: Deno.KvEntryMaybe<QueueMessage<T>[]>;
  stateEntry: Deno.KvEntryMaybe<SegState>;
  msgs: QueueMessage<T>[] | null;
  state: SegState;
}

/** Part of a ready index entry a claim takes. */
interface Pick {
  entry: Deno.KvEntry<string[]>;
  take: string[];
  rest: string[];
}

/** A done record with its result inline stays under this (KV's limit is 64 KiB). */
const INLINE_RECORD_BYTES = 60 * 1024;
/** Chunk size of a result stored beside its record. */
const RESULT_CHUNK_BYTES = 60 * 1024;
/** Result chunks written per commit (KV caps a commit's total size). */
const RESULT_CHUNKS_PER_COMMIT = 8;
/** Result chunks, written before their record, outlive it by this much. */
const RESULT_SLACK_MS = 600_000;

/** How an ack stores its result: inline, by reference, or not at all. */
interface PreparedResult {
  result?: unknown;
  /** The inline result's serialized bytes. */
  bytes?: number;
  ref?: StoredResult;
}

/** Messages one claim commit moves at most (2 mutations each, of KV's 1000). */
const MAX_CLAIM_PER_COMMIT = 100;

/**
 * Splits picks into groups of at most `checks` checks (one per entry, one
 * per segment its ids are packed in) and `ids` ids.
 */
function chunks(picks: Pick[], checks: number, ids: number): Pick[][] {
  const out: Pick[][] = [];
  let cur: Pick[] = [];
  let n = 0;
  let c = 0;
  for (const p of picks) {
    const cost = 1 +
      new Set(p.take.map(segmentOf).filter((s) => s !== undefined)).size;
    if (cur.length && (c + cost > checks || n + p.take.length > ids)) {
      out.push(cur);
      cur = [];
      n = 0;
      c = 0;
    }
    cur.push(p);
    n += p.take.length;
    c += cost;
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * Splits `picks` after their first `n` ids: what one commit takes, and
 * what is left for the next. An entry cut in two is left holding its
 * untaken ids; the commit that takes the first part writes it, so its
 * versionstamp ("" here) is that commit's, filled in once known.
 */
function cutPicks(picks: Pick[], n: number): { picks: Pick[]; left: Pick[] } {
  const head: Pick[] = [];
  const left: Pick[] = [];
  for (const p of picks) {
    if (n >= p.take.length) {
      head.push(p);
      n -= p.take.length;
    } else if (n > 0) {
      const rest = [...p.take.slice(n), ...p.rest];
      head.push({ entry: p.entry, take: p.take.slice(0, n), rest });
      left.push({
        entry: { key: p.entry.key, value: rest, versionstamp: "" },
        take: p.take.slice(n),
        rest: p.rest,
      });
      n = 0;
    } else left.push(p);
  }
  return { picks: head, left };
}

/**
 * `group` in units one commit must not split: a message stored as its own
 * record, or all the members of one segment.
 */
function enqueueUnits<X extends { msg: QueueMessage<unknown> }>(
  group: X[],
): X[][] {
  const units: X[][] = [];
  const bySeg = new Map<string, X[]>();
  for (const g of group) {
    const seg = packedSegment(g.msg);
    if (seg === undefined) units.push([g]);
    else if (bySeg.has(seg)) bySeg.get(seg)!.push(g);
    else {
      bySeg.set(seg, [g]);
      units.push(bySeg.get(seg)!);
    }
  }
  return units;
}

/**
 * Splits `items` in order into runs one commit each holds within KV's
 * limits, `cost` giving an item's share and `base` what every commit
 * carries anyway (counters). An item too large alone still gets its run:
 * its commit fails alone, with KV's error.
 */
function splitToFit<X>(
  items: X[],
  cost: (x: X) => CommitSize,
  base: () => CommitSize,
): X[][] {
  const runs: X[][] = [];
  let cur: X[] = [];
  let size = base();
  for (const x of items) {
    const one = cost(x);
    if (cur.length && !new CommitSize().add(size).add(one).fits()) {
      runs.push(cur);
      cur = [];
      size = base();
    }
    cur.push(x);
    size.add(one);
  }
  if (cur.length) runs.push(cur);
  return runs;
}

const MAX_ERRORS = 20;
/** Longest error or dead-letter reason a record keeps, in characters. */
const MAX_TEXT_CHARS = 2000;
/** A stand-in as long as the longest reason, to size a record before it. */
const MAX_TEXT = "x".repeat(2 * MAX_TEXT_CHARS + 100);

/** `text` cut to `max` characters, saying how much was cut. */
function clip(text: string, max = MAX_TEXT_CHARS): string {
  return text.length <= max
    ? text
    : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/**
 * `text` cut to what record `m` still has room for as its field `field`
 * within one KV value (at most {@linkcode MAX_TEXT_CHARS}): a message near
 * the size limit keeps less of a long dead-letter or cancel reason.
 */
function clipInto(m: object, field: string, text: string): string {
  const limit = KV_VALUE_BYTES - 256;
  const cut = clip(text);
  if (valueBytes({ ...m, [field]: cut }) <= limit) return cut;
  // Tight: measured exactly. Two bytes a character at worst, and the
  // "… (n more characters)" note.
  const base = serialize({ ...m, [field]: "" }).length;
  const room = Math.floor((limit - base) / 2) - 40;
  return clip(text, Math.max(0, Math.min(MAX_TEXT_CHARS, room)));
}
const U64 = 1n << 64n;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function validPriority(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 9) {
    throw new RangeError(
      `Cannot enqueue: priority must be an integer 0-9, got ${p}`,
    );
  }
  return p;
}

/**
 * A UUIDv7 (RFC 9562): the time in ms, then random bits. Message keys made
 * from it land near each other in KV's B-tree (most writes touch the same
 * few pages), where random UUIDs scatter them over the whole file.
 */
function timeOrderedId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${
    h.slice(16, 20)
  }-${h.slice(20)}`;
}

/** KV's largest value, in serialized bytes. */
const KV_VALUE_BYTES = 65_536;

/**
 * Longest consumer name a claim takes, in characters: every claimed record
 * and every lease in a segment's state carries it.
 */
export const MAX_CONSUMER_CHARS = 256;

/**
 * Largest message an enqueue takes, in serialized bytes of its record:
 * KV's 64 KiB value limit less 1 KiB kept for what a claim adds (lease id
 * and deadline, a consumer name of up to {@linkcode MAX_CONSUMER_CHARS}
 * characters, the holder's tag), so a stored message can always be
 * claimed. Before, a message of 65,200 bytes was stored, and its second
 * claim, and every claim after it, threw 'Value too large'.
 */
export const MAX_MESSAGE_BYTES = KV_VALUE_BYTES - 1024;

/**
 * Refuses a consumer name longer than {@linkcode MAX_CONSUMER_CHARS} (or
 * empty) with a `RangeError` naming it; `what` says who asked.
 *
 * @example
 * ```ts
 * import { checkConsumerName } from "./queue.ts";
 * checkConsumerName("node-1", "claim"); // fine
 * try {
 *   checkConsumerName("x".repeat(300), "claim");
 *   throw new Error("not refused");
 * } catch (err) {
 *   if (!(err instanceof RangeError)) throw err;
 * }
 * ```
 */
export function checkConsumerName(name: string, what: string): void {
  if (typeof name !== "string" || name.length === 0) {
    throw new RangeError(
      `Cannot ${what}: the consumer name must be a non-empty string, got ${
        typeof name === "string" ? "''" : typeof name
      }`,
    );
  }
  if (name.length > MAX_CONSUMER_CHARS) {
    throw new RangeError(
      `Cannot ${what}: the consumer name is ${name.length} characters, over the limit of ${MAX_CONSUMER_CHARS} ('${
        name.slice(0, 40)
      }…')`,
    );
  }
}

/** Throws what a commit would: `value` does not fit one KV value. */
function fitsValue(value: unknown, what: string): number {
  const n = serialize(value).length;
  if (n > MAX_MESSAGE_BYTES) {
    throw new RangeError(
      `Cannot ${what}: the message is ${n} bytes, over the limit of ${MAX_MESSAGE_BYTES} ` +
        `(it exceeds Deno KV's 64 KiB value limit less 1 KiB kept for the lease a claim adds); ` +
        `store large payloads elsewhere and enqueue a reference`,
    );
  }
  return n;
}

/** A versionstamp no commit has: a check against it always fails. */
const NO_VERSIONSTAMP = "00000000000000000000";

/** A commit's outcome; `retried` when a "database is locked" try came first. */
interface Committed {
  res: Deno.KvCommitResult | Deno.KvCommitError;
  retried: boolean;
}

/** Whether KV refused a commit for its size (a value, a key or the whole). */
function isTooLarge(err: unknown): boolean {
  return err instanceof TypeError && /too large/i.test(err.message);
}

function tooLarge(err: unknown, what: string): never {
  if (err instanceof TypeError && /too large/i.test(err.message)) {
    throw new RangeError(
      `Cannot ${what}: the message exceeds Deno KV's 64 KiB value limit (${err.message}); ` +
        `store large payloads elsewhere and enqueue a reference`,
      { cause: err },
    );
  }
  throw err;
}

/**
 * Local wake-ups: a consumer in this process waiting for work is woken as
 * soon as a message becomes ready here; other processes find it by polling.
 */
const wakers = new Map<string, Set<() => void>>();

/** Adds a settle verb's writes for message `m` (the `i`th held) to `op`. */
type SettleBuild<T> = (
  op: Deno.AtomicOperation,
  m: QueueMessage<T>,
  i: number,
) => Deno.AtomicOperation;

/**
 * A durable queue named `name` in `kv`.
 *
 * @example Usage
 * ```ts
 * import { DurableQueue } from "./queue.ts";
 * const kv = await Deno.openKv(":memory:");
 * const q = new DurableQueue(kv, "emails");
 * await q.enqueue({ to: "ada@example.com" }, { priority: 7 });
 * const [d] = await q.claim(1, 30_000);
 * await d.ack();
 * kv.close();
 * ```
 */
export class DurableQueue<T = unknown> {
  readonly name: string;
  readonly #kv: Deno.Kv;
  readonly #clock: Clock;
  readonly #keys: ReturnType<typeof queueKeys>;
  readonly #retention: number;
  readonly #maxBatch: number;
  readonly #maxResult: number;
  readonly #maxGroup: number;
  #group: GroupedEnqueue<T>[] = [];
  /** Windowed mode: the segment each priority's next ready enqueue joins. */
  /** Serialized bytes of a record's fields besides its payload, with slack. */
  #envelope: number | undefined;
  /** Messages of segments seen lately (they never change). */
  readonly #segCache = new Map<string, QueueMessage<T>[]>();
  readonly #positions = new WeakMap<QueueMessage<T>[], Map<string, number>>();
  /** Packed messages waiting to move out to records, by segment. */
  readonly #explodes = new Map<string, ExplodeRequest[]>();
  readonly #openSegs = new Map<
    number,
    { id: string; n: number; bytes: number }
  >();
  #flushing = false;
  /** Windowed mode: the window in ms (undefined: sync). */
  readonly #windowMs: number | undefined;
  readonly #maxBuffered: number;
  #acks: PendingAck<T>[] = [];
  /** Calls waiting in memory or in the commit under way (windowed mode). */
  #buffered = 0;
  /** When the oldest call of the commit under way joined. */
  #committingSince: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #draining: Promise<void> | undefined;
  /** Calls in the buffer not acknowledged early: their commit is due at once. */
  #waiting = 0;
  /** Callers blocked on a full buffer. */
  #room: (() => void)[] = [];
  #closed = false;
  #lost: { enqueues: string[]; acks: string[]; cause?: unknown } = {
    enqueues: [],
    acks: [],
  };
  readonly #holders = new WeakMap<Delivery<T>, Holder<T>>();
  readonly #readyAdds = new WeakMap<
    Deno.AtomicOperation,
    Map<number, string[]>
  >();

  constructor(kv: Deno.Kv, name: string, options: QueueOptions = {}) {
    if (!NAME_RE.test(name)) {
      throw new TypeError(
        `Cannot create queue: name must be 1-64 letters, digits, '.', '_' or '-', got '${name}'`,
      );
    }
    this.name = name;
    this.#kv = kv;
    this.#clock = options.clock ?? systemClock;
    this.#keys = queueKeys(name);
    this.#retention = options.doneRetentionMs ?? 3_600_000;
    this.#maxBatch = options.maxBatch ?? checksPerCommit(kv);
    this.#maxResult = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    if (!Number.isInteger(this.#maxResult) || this.#maxResult < 1) {
      throw new RangeError(
        `Cannot create queue: maxResultBytes must be a positive integer, got ${this.#maxResult}`,
      );
    }
    this.#maxGroup = options.maxGroup ?? 100;
    if (!Number.isInteger(this.#maxGroup) || this.#maxGroup < 1) {
      throw new RangeError(
        `Cannot create queue: maxGroup must be a positive integer, got ${this.#maxGroup}`,
      );
    }
    const mode = options.commit ?? "sync";
    if (mode === "sync") {
      this.#windowMs = undefined;
      this.#maxBuffered = 0;
    } else {
      const w = mode?.windowMs;
      if (!Number.isInteger(w) || w < 1 || w > 60_000) {
        throw new RangeError(
          `Cannot create queue '${name}': commit.windowMs must be an integer 1-60000, got ${w}`,
        );
      }
      const b = mode.maxBuffered ?? 10_000;
      if (!Number.isInteger(b) || b < 1) {
        throw new RangeError(
          `Cannot create queue '${name}': commit.maxBuffered must be a positive integer, got ${b}`,
        );
      }
      this.#windowMs = w;
      this.#maxBuffered = b;
    }
  }

  #wake(): void {
    for (const w of wakers.get(this.name) ?? []) w();
  }

  /** Resolves when a message becomes ready in this process, or after `ms`. */
  waitForWork(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = wakers.get(this.name);
      if (!set) wakers.set(this.name, set = new Set());
      const ac = new AbortController();
      const done = () => {
        set!.delete(done);
        ac.abort();
        signal?.removeEventListener("abort", done);
        resolve();
      };
      set.add(done);
      signal?.addEventListener("abort", done, { once: true });
      this.#clock.sleep(ms, ac.signal).then(done, () => {});
    });
  }

  #count(
    op: Deno.AtomicOperation,
    state: QueueCountState,
    delta: number,
  ): void {
    if (delta !== 0) {
      op.sum(
        this.#keys.count(state),
        delta > 0 ? BigInt(delta) : U64 + BigInt(delta),
      );
    }
  }

  /**
   * Commits the operation `build` makes, retrying "database is locked" with
   * a freshly built operation each time (one cannot be committed twice).
   */
  async #commit(build: () => Deno.AtomicOperation): Promise<Committed> {
    let tries = 0;
    const res = await retryLocked(() => {
      tries++;
      const op = build();
      this.#writeReady(op);
      return op.commit();
    });
    return { res, retried: tries > 1 };
  }

  /**
   * Adds a message; with an idempotency key, a repeat within the window
   * returns the first id. Resolves once the message is committed; calls
   * made while a commit is under way share the next one (`maxGroup`).
   */
  async enqueue(payload: T, options: EnqueueOptions = {}): Promise<Enqueued> {
    this.#open("enqueue");
    if (
      this.#windowMs !== undefined && options.idempotencyKey === undefined &&
      options.id === undefined
    ) {
      const msg = this.#newMessage(payload, options, this.#clock.now(), true);
      // Refused now, while the caller still hears about it.
      const bytes = this.#sizeOf(msg) ??
        fitsValue(msg, `enqueue on '${this.name}'`);
      const early = await this.#join("enqueue");
      return await new Promise<Enqueued>((resolve, reject) => {
        // Its segment is chosen as it joins the group, in the same turn: a
        // drain in between may have closed (and stored) the segment open
        // before, which must not be written again.
        if (msg.state === "ready") msg.id = this.#packedIdFor(msg, bytes);
        const ok = { id: msg.id, deduplicated: false };
        if (!early) this.#waiting++;
        this.#group.push({
          msg,
          at: performance.now(),
          waits: !early,
          resolve: early ? () => {} : resolve,
          reject: early ? (err) => this.#lose("enqueues", msg.id, err) : reject,
        });
        if (early) resolve(ok);
        this.#schedule();
        // Consumers here may take it from memory at once.
        if (msg.state === "ready") this.#wake();
      });
    }
    if (
      this.#maxGroup > 1 && options.idempotencyKey === undefined &&
      options.id === undefined
    ) {
      const msg = this.#newMessage(payload, options, this.#clock.now());
      this.#checkSize(msg);
      return await new Promise<Enqueued>((resolve, reject) => {
        this.#group.push({ msg, resolve, reject });
        if (!this.#flushing) {
          this.#flushing = true;
          // After this turn's other calls have joined.
          queueMicrotask(() => void this.#flushGroups());
        }
      });
    }
    for (let tries = 0;; tries++) {
      const now = this.#clock.now();
      const msg = this.#newMessage(payload, options, now);
      this.#checkSize(msg);
      let idem:
        | { key: Deno.KvKey; versionstamp: string | null; window: number }
        | undefined;
      if (options.idempotencyKey !== undefined) {
        const key = this.#keys.idem(options.idempotencyKey);
        const seen = await this.#kv.get<{ id: string; until: number }>(key);
        if (seen.value && seen.value.until > now) {
          return { id: seen.value.id, deduplicated: true };
        }
        idem = {
          key,
          versionstamp: seen.versionstamp,
          window: options.idempotencyWindowMs ?? 86_400_000,
        };
      }
      const build = () => {
        const op = this.#kv.atomic();
        if (idem) {
          op.check({ key: idem.key, versionstamp: idem.versionstamp })
            .set(idem.key, { id: msg.id, until: now + idem.window }, {
              expireIn: idem.window,
            });
        }
        return this.#enqueueInto(op, msg);
      };
      let res: Deno.KvCommitResult | Deno.KvCommitError;
      let retried: boolean;
      try {
        ({ res, retried } = await this.#commit(build));
      } catch (err) {
        tooLarge(err, `enqueue on '${this.name}'`);
      }
      // After a "database is locked" retry the first try may have landed:
      // a message under our fresh id can only be ours.
      const landed = !res.ok && retried && options.id === undefined &&
        (await this.get(msg.id))?.enqueuedAt === now;
      if (res.ok || landed) {
        if (msg.state === "ready") this.#wake();
        return { id: msg.id, deduplicated: false };
      }
      if (options.idempotencyKey === undefined || tries > 20) {
        throw new Error(
          `Cannot enqueue on '${this.name}': message id '${msg.id}' already exists`,
        );
      }
      // Lost a race on the idempotency key: read it again.
    }
  }

  /**
   * Windowed mode: the id of a ready message packed into its priority's open
   * segment (a new one when that is full: `maxGroup` messages, at most
   * {@linkcode SEGMENT_MESSAGES}, or {@linkcode SEGMENT_BYTES}). The commit that takes it stores the segment
   * as one value. A message too large to share a value keeps a plain id.
   */
  #packedIdFor(msg: QueueMessage<T>, bytes: number): string {
    const cost = bytes + 16; // the array's own bytes
    if (cost > SEGMENT_BYTES) return timeOrderedId();
    let seg = this.#openSegs.get(msg.priority);
    if (
      !seg || seg.n >= Math.min(this.#maxGroup, SEGMENT_MESSAGES) ||
      seg.bytes + cost > SEGMENT_BYTES
    ) {
      seg = { id: timeOrderedId(), n: 0, bytes: 0 };
      this.#openSegs.set(msg.priority, seg);
    }
    seg.bytes += cost;
    return packedId(seg.id, seg.n++);
  }

  /** Refuses `m` when its record is over {@linkcode MAX_MESSAGE_BYTES}. */
  #checkSize(m: QueueMessage<T>): void {
    if (valueBytes(m) > MAX_MESSAGE_BYTES) {
      fitsValue(m, `enqueue on '${this.name}'`);
    }
  }

  /**
   * An upper bound of `msg`'s serialized size without serializing it, for
   * a byte or string payload that surely fits a KV value (else undefined:
   * serialize it). The record's other fields take at most the envelope
   * measured once, plus slack for larger numbers.
   */
  #sizeOf(msg: QueueMessage<T>): number | undefined {
    const p = msg.payload as unknown;
    const body = p instanceof Uint8Array
      ? p.byteLength
      : typeof p === "string" && p.length < 8192
      ? 2 * p.length // one or two bytes a character
      : undefined;
    if (body === undefined) return undefined;
    this.#envelope ??= serialize({ ...msg, payload: null }).length + 64;
    const n = this.#envelope + body + 16;
    return n <= KV_VALUE_BYTES / 2 ? n : undefined;
  }

  #open(verb: string): void {
    if (this.#closed) {
      throw new Error(`Cannot ${verb} on '${this.name}': the queue is closed`);
    }
  }

  /**
   * Windowed mode: waits for room in the buffer, counts the caller in, and
   * says whether it may be acknowledged before its commit (no call older
   * than the window is still waiting for durability).
   */
  async #join(kind: "enqueue" | "ack"): Promise<boolean> {
    while (this.#buffered >= this.#maxBuffered) {
      await new Promise<void>((r) => this.#room.push(r));
      this.#open(kind);
    }
    this.#buffered++;
    // Early only into the next commit, and only while nothing waiting is
    // older than the window: then the call is durable within windowMs plus
    // two commits (the one under way, then its own).
    const next = kind === "enqueue"
      ? this.#group.length < this.#maxGroup
      : this.#acks.length < this.#maxBatch;
    const oldest = this.#oldestWaiting();
    return next &&
      (oldest === undefined || performance.now() - oldest < this.#windowMs!);
  }

  /** When the oldest call not yet durable joined, or undefined. */
  #oldestWaiting(): number | undefined {
    const times = [
      this.#committingSince,
      this.#group[0]?.at,
      this.#acks[0]?.at,
    ].filter((t): t is number => t !== undefined);
    return times.length ? Math.min(...times) : undefined;
  }

  #lose(kind: "enqueues" | "acks", id: string, err: unknown): void {
    this.#lost[kind].push(id);
    this.#lost.cause ??= err;
  }

  /** Starts the next windowed commit when its oldest call is due, or at once when full. */
  #schedule(): void {
    if (this.#draining) return;
    const oldest = Math.min(
      this.#group[0]?.at ?? Infinity,
      this.#acks[0]?.at ?? Infinity,
    );
    if (oldest === Infinity) return;
    const full = this.#group.length >= this.#maxGroup ||
      this.#acks.length >= this.#maxBatch || this.#closed || this.#waiting > 0;
    const wait = full
      ? 0
      : Math.max(0, oldest + this.#windowMs! - performance.now());
    if (this.#timer !== undefined) {
      // A timer for the same oldest call; only a full group brings it forward.
      if (!full) return;
      clearTimeout(this.#timer);
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#draining = this.#drain().finally(() => {
        this.#draining = undefined;
        this.#schedule();
      });
    }, wait);
  }

  /** Commits waiting enqueues and acks (one commit each per round) until none are due. */
  async #drain(all = false): Promise<void> {
    for (;;) {
      const enq = this.#group.splice(0, this.#maxGroup);
      // A segment is written by one commit: its later members come along,
      // and the segments taken are closed to new members.
      const segs = new Set(enq.map((g) => segmentOf(g.msg.id)));
      segs.delete(undefined);
      if (segs.size) {
        for (let i = 0; i < this.#group.length;) {
          if (segs.has(segmentOf(this.#group[i].msg.id))) {
            enq.push(...this.#group.splice(i, 1));
          } else i++;
        }
        for (const [p, open] of this.#openSegs) {
          if (segs.has(open.id)) this.#openSegs.delete(p);
        }
      }
      for (const g of enq) g.taken = true;
      const acks = this.#acks.splice(0, this.#maxBatch);
      if (enq.length === 0 && acks.length === 0) return;
      this.#committingSince = Math.min(
        enq[0]?.at ?? Infinity,
        acks[0]?.at ?? Infinity,
      );
      try {
        await Promise.all([
          enq.length ? this.#commitGroup(enq) : undefined,
          acks.length ? this.#commitAcks(acks) : undefined,
        ]);
      } finally {
        this.#committingSince = undefined;
        this.#buffered -= enq.length + acks.length;
        for (const e of [...enq, ...acks]) if (e.waits) this.#waiting--;
        for (const r of this.#room.splice(0)) r();
      }
      const oldest = this.#oldestWaiting();
      const due = oldest !== undefined &&
        (all || this.#closed || this.#waiting > 0 ||
          performance.now() - oldest >= this.#windowMs! ||
          this.#group.length >= this.#maxGroup ||
          this.#acks.length >= this.#maxBatch);
      if (!due) return;
    }
  }

  /**
   * Windowed mode: commits what waits now and resolves once it is durable.
   * Rejects with {@linkcode QueueCommitError} if any commit since the last
   * `flush()` failed after its callers were acknowledged. In sync mode
   * there is nothing to flush.
   */
  async flush(): Promise<void> {
    if (this.#windowMs !== undefined) {
      for (;;) {
        if (this.#timer !== undefined) {
          clearTimeout(this.#timer);
          this.#timer = undefined;
        }
        if (this.#draining) await this.#draining;
        if (this.#group.length === 0 && this.#acks.length === 0) break;
        this.#draining = this.#drain(true).finally(() => {
          this.#draining = undefined;
        });
      }
    }
    const lost = this.#lost;
    if (lost.enqueues.length || lost.acks.length) {
      this.#lost = { enqueues: [], acks: [] };
      throw new QueueCommitError(
        this.name,
        lost.enqueues,
        lost.acks,
        lost.cause,
      );
    }
  }

  /**
   * Stops taking enqueues and acks, commits what waits (windowed mode) and
   * resolves once it is durable; rejects like {@linkcode DurableQueue.flush}.
   * Claims and reads still work. Call it on a clean stop.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const r of this.#room.splice(0)) r();
    await this.flush();
  }

  /** Commits the waiting enqueues, `maxGroup` at a time, until none wait. */
  async #flushGroups(): Promise<void> {
    try {
      while (this.#group.length > 0) {
        await this.#commitGroup(this.#group.splice(0, this.#maxGroup));
      }
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * One commit for `group`. The ids are fresh random UUIDs, so no check
   * guards them (KV Connect allows only 10 checks per commit). A commit
   * KV refuses (too large) is split in halves, down to one message, which
   * then fails alone: the others still land.
   */
  async #commitGroup(group: GroupedEnqueue<T>[]): Promise<void> {
    const units = enqueueUnits(group);
    if (units.length > 1) {
      // Many large messages: one commit per run that fits KV's limits.
      const runs = splitToFit(
        units,
        (u) =>
          u.reduce((c, g) => c.add(this.#enqueueCost(g.msg)), new CommitSize()),
        () => this.#countersCost(),
      );
      if (runs.length > 1) {
        for (const run of runs) await this.#commitGroup(run.flat());
        return;
      }
    }
    const msgs = group.map((g) => g.msg);
    // Messages with packed ids go into their segments, one value each:
    // ready ones, and those claimed (or acked without a result) from
    // memory, whose leases (done marks) the segment's state starts with.
    // The rest (delayed, acked with a result) as records.
    const segs = new Map<string, GroupedEnqueue<T>[]>();
    const plain: QueueMessage<T>[] = [];
    for (const g of group) {
      const seg = packedSegment(g.msg);
      if (seg === undefined) plain.push(g.msg);
      else if (segs.has(seg)) segs.get(seg)!.push(g);
      else segs.set(seg, [g]);
    }
    for (const gs of segs.values()) gs.forEach((g, i) => (g.pos = i));
    const stored = new Map<string, QueueMessage<T>[]>();
    try {
      const { res, retried } = await this.#commit(() => {
        const op = this.#kv.atomic();
        for (const m of plain) this.#enqueueInto(op, m, false);
        for (const [seg, gs] of segs) {
          stored.set(seg, this.#segmentInto(op, seg, gs));
        }
        return op;
      });
      // A "database is locked" retry: the first try may have landed.
      const landed = !res.ok && retried &&
        (await this.get(msgs[0].id))?.enqueuedAt === msgs[0].enqueuedAt;
      if (!res.ok && !landed) {
        throw new Error(
          `Cannot enqueue on '${this.name}': the commit of ${msgs.length} message(s) failed its checks`,
        );
      }
      for (const [seg, ms] of stored) this.#cacheSeg(seg, ms);
      const claimed = group.filter((g) => g.stored);
      if (res.ok) {
        for (const g of claimed) g.stored!.resolve(res.versionstamp);
      } else if (claimed.length) {
        const now = await this.#getEntries(claimed.map((g) => g.msg.id));
        claimed.forEach((g, i) => g.stored!.resolve(now[i].versionstamp ?? ""));
      }
    } catch (err) {
      // Split in halves, a segment never across two commits.
      if (units.length === 1) {
        try {
          tooLarge(err, `enqueue on '${this.name}'`);
        } catch (mapped) {
          for (const g of group) {
            g.stored?.reject(mapped);
            g.reject(mapped);
          }
        }
        return;
      }
      const half = Math.ceil(units.length / 2);
      await this.#commitGroup(units.slice(0, half).flat());
      await this.#commitGroup(units.slice(half).flat());
      return;
    }
    if (msgs.some((m) => m.state === "ready")) this.#wake();
    for (const g of group) g.resolve({ id: g.msg.id, deduplicated: false });
  }

  /**
   * Writes segment `seg` of `gs` into `op`: the messages as enqueued, the
   * ready ones in the ready index, and, when some were claimed or acked
   * from memory, the state with their leases and done marks.
   */
  #segmentInto(
    op: Deno.AtomicOperation,
    seg: string,
    gs: GroupedEnqueue<T>[],
  ): QueueMessage<T>[] {
    const st: SegState = { n: gs.length, leases: [], done: [], out: [] };
    const leases = new Map<string, SegLease>();
    let ready = 0;
    const stored = gs.map((g, pos) => {
      const m = g.msg;
      if (m.state === "ready") {
        this.#addReady(op, m.priority, m.id);
        ready++;
        return m;
      }
      if (m.state === "done") st.done.push(pos);
      else {
        let l = leases.get(m.leaseId!);
        if (!l) {
          leases.set(
            m.leaseId!,
            l = {
              id: m.leaseId!,
              until: m.leaseUntil!,
              consumer: m.consumer ?? "anonymous",
              pos: [],
            },
          );
          st.leases.push(l);
        }
        l.pos.push(pos);
      }
      // Stored as enqueued: the state says where it is.
      const base: QueueMessage<T> = { ...m, state: "ready", attempts: 0 };
      delete base.leaseId;
      delete base.leaseUntil;
      delete base.consumer;
      delete base.finishedAt;
      return base;
    });
    op.set(this.#keys.seg(seg), stored);
    if (ready < gs.length) {
      op.set(this.#keys.segState(seg), st);
      for (const l of st.leases) {
        op.set(
          this.#keys.inflight(l.until, leaseToken(seg, l.id)),
          { seg, lease: l.id } satisfies SegLeaseRef,
        );
      }
      if (st.done.length === gs.length) {
        op.set(this.#keys.segDone(this.#clock.now(), seg), seg);
      }
    }
    this.#count(op, "ready", ready);
    this.#count(op, "inflight", gs.length - ready - st.done.length);
    return stored;
  }

  /**
   * Enqueues many messages with one commit per `maxBatch` of them (no
   * idempotency keys: use {@linkcode enqueue} for those). Returns their ids.
   */
  async enqueueMany(
    items: { payload: T; options?: Omit<EnqueueOptions, "idempotencyKey"> }[],
  ): Promise<string[]> {
    const now = this.#clock.now();
    const msgs = items.map((it) => {
      if (
        (it.options as EnqueueOptions | undefined)?.idempotencyKey !== undefined
      ) {
        throw new TypeError(
          "Cannot enqueueMany with an idempotency key: use enqueue()",
        );
      }
      const m = this.#newMessage(it.payload, it.options ?? {}, now);
      // Refused before anything is written.
      this.#checkSize(m);
      return m;
    });
    const parts = [];
    for (let i = 0; i < msgs.length; i += this.#maxBatch) {
      parts.push(
        ...splitToFit(
          msgs.slice(i, i + this.#maxBatch),
          (m) => this.#enqueueCost(m),
          () => this.#countersCost(),
        ),
      );
    }
    for (let part = parts.shift(); part; part = parts.shift()) {
      let res: Deno.KvCommitResult | Deno.KvCommitError;
      let retried: boolean;
      try {
        ({ res, retried } = await this.#commit(() => {
          const op = this.#kv.atomic();
          for (const m of part!) this.#enqueueInto(op, m);
          return op;
        }));
      } catch (err) {
        // Counted short (see valueBytes): halves, in order.
        if (isTooLarge(err) && part.length > 1) {
          const half = Math.ceil(part.length / 2);
          parts.unshift(part.slice(0, half), part.slice(half));
          continue;
        }
        tooLarge(err, `enqueue on '${this.name}'`);
      }
      const landed = !res.ok && retried &&
        (await this.get(part[0].id))?.enqueuedAt === now;
      if (!res.ok && !landed) {
        throw new Error(
          `Cannot enqueue on '${this.name}': a message id in the batch already exists`,
        );
      }
    }
    this.#wake();
    return msgs.map((m) => m.id);
  }

  /** A record enqueue's share of its commit ({@linkcode #enqueueInto}). */
  #enqueueCost(m: QueueMessage<T>): CommitSize {
    const key = this.#keys.msg(m.id);
    // The id's share of its ready index entry, or its own index entry.
    return new CommitSize().check(key).set(key, m)
      .set(this.#keys.inflight(m.availableAt, m.id), m.id);
  }

  /** The counters a commit of enqueues moves. */
  #countersCost(): CommitSize {
    return new CommitSize().sum(this.#keys.count("ready"))
      .sum(this.#keys.count("delayed")).sum(this.#keys.count("inflight"))
      .set(this.#keys.ready(0, "00000000000000000000"), undefined, 64);
  }

  #newMessage(
    payload: T,
    options: EnqueueOptions,
    now: number,
    packable = false,
  ): QueueMessage<T> {
    const priority = validPriority(options.priority ?? 4);
    const delayMs = options.delayMs ?? 0;
    const maxAttempts = options.maxAttempts ?? 3;
    if (!Number.isFinite(delayMs) || delayMs < 0) {
      throw new RangeError(
        `Cannot enqueue: delayMs must be >= 0, got ${delayMs}`,
      );
    }
    if (
      !Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000
    ) {
      throw new RangeError(
        `Cannot enqueue: maxAttempts must be an integer 1-1000, got ${maxAttempts}`,
      );
    }
    if (options.id !== undefined && segmentOf(options.id) !== undefined) {
      throw new RangeError(
        `Cannot enqueue on '${this.name}': id '${options.id}' has the reserved form of a packed message id (UUIDv7~n)`,
      );
    }
    return {
      // A packable one's id is chosen as it joins a segment.
      id: options.id ??
        (packable && delayMs === 0 ? PACKED_ID_SIZE : timeOrderedId()),
      queue: this.name,
      priority,
      payload,
      state: delayMs > 0 ? "delayed" : "ready",
      attempts: 0,
      maxAttempts,
      backoff: { baseMs: 1000, maxMs: 60_000, ...options.backoff },
      enqueuedAt: now,
      availableAt: now + delayMs,
      errors: [],
      ...(options.idempotencyKey !== undefined
        ? { idempotencyKey: options.idempotencyKey }
        : {}),
    };
  }

  #enqueueInto(
    op: Deno.AtomicOperation,
    m: QueueMessage<T>,
    checkId = true,
  ): Deno.AtomicOperation {
    if (checkId) op.check({ key: this.#keys.msg(m.id), versionstamp: null });
    if (m.state === "done") {
      // Claimed and acked from memory before its first commit.
      return op.set(this.#keys.msg(m.id), m, { expireIn: this.#retention });
    }
    op.set(this.#keys.msg(m.id), m);
    if (m.state === "delayed") {
      op.set(this.#keys.delayed(m.availableAt, m.id), m.id);
    } else if (m.state === "inflight") {
      // Claimed from memory before its first commit.
      op.set(this.#keys.inflight(m.leaseUntil!, m.id), m.id);
      this.#count(op, "inflight", 1);
      return op;
    } else this.#addReady(op, m.priority, m.id);
    this.#count(op, m.state === "delayed" ? "delayed" : "ready", 1);
    return op;
  }

  /**
   * Reads a message by id (any state), or null. A done message's result is
   * read back whole, from its chunks when it has a `resultRef`.
   */
  async get(id: string): Promise<QueueMessage<T> | null> {
    let m = (await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id))).value;
    const seg = m ? undefined : segmentOf(id);
    if (seg !== undefined) {
      const r = await this.#readSeg(seg);
      const pos = r.msgs ? this.#posOf(r.msgs, id) : -1;
      if (pos >= 0 && r.state.out.includes(pos)) {
        // Moved out to its own record since the read above.
        m = (await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id))).value;
      } else if (pos >= 0) m = this.#packedView(r.msgs!, r.state, pos);
    }
    if (m?.resultRef) {
      const stored = await this.#readResult(id, m.resultRef);
      if (stored) m.result = stored.value;
    }
    return m;
  }

  /**
   * Segments' messages and state entries, read together (or only the
   * states, when `msgs` is false: an ack needs no payloads).
   */
  async #readSegs(
    segIds: string[],
    want: "all" | "state" | "cached" = "all",
  ): Promise<Map<string, SegRead<T>>> {
    const out = new Map<string, SegRead<T>>();
    if (want === "cached") {
      // Segments never change: those seen before need only their state.
      // Taken now: the cache may drop them while the states are read.
      const cached = new Map(
        segIds.flatMap((s) => {
          const m = this.#segCache.get(s);
          return m ? [[s, m] as const] : [];
        }),
      );
      const miss = segIds.filter((s) => !cached.has(s));
      const [states, rest] = await Promise.all([
        this.#readSegs([...cached.keys()], "state"),
        this.#readSegs(miss, "all"),
      ]);
      for (const [s, r] of states) out.set(s, { ...r, msgs: cached.get(s)! });
      for (const [s, r] of rest) {
        if (r.msgs) this.#cacheSeg(s, r.msgs);
        out.set(s, r);
      }
      return out;
    }
    const msgs = want === "all";
    const per = msgs ? 5 : 10;
    await Promise.all(
      Array.from({ length: Math.ceil(segIds.length / per) }, async (_, k) => {
        const part = segIds.slice(k * per, k * per + per);
        const es = await this.#kv.getMany<unknown[]>(
          part.flatMap((s) =>
            msgs
              ? [this.#keys.seg(s), this.#keys.segState(s)]
              : [this.#keys.segState(s)]
          ),
        );
        part.forEach((s, i) => {
          const seg = msgs
            ? es[2 * i] as Deno.KvEntryMaybe<QueueMessage<T>[]>
            : undefined;
          const st = es[msgs ? 2 * i + 1 : i] as Deno.KvEntryMaybe<SegState>;
          out.set(s, {
            seg,
            stateEntry: st,
            msgs: seg?.value ?? null,
            state: st.value ?? emptySegState(),
          });
        });
      }),
    );
    return out;
  }

  /** Keeps segment `seg`'s messages for later claims (the newest 128 segments). */
  #cacheSeg(seg: string, msgs: QueueMessage<T>[]): void {
    this.#segCache.set(seg, msgs);
    if (this.#segCache.size > SEG_CACHE) {
      deleteOldest(this.#segCache);
    }
  }

  /** Position of message `id` in segment messages `msgs`, or -1. */
  #posOf(msgs: QueueMessage<T>[], id: string): number {
    let m = this.#positions.get(msgs);
    if (!m) {
      m = new Map(msgs.map((x, i) => [x.id, i]));
      this.#positions.set(msgs, m);
    }
    return m.get(id) ?? -1;
  }

  async #readSeg(segId: string): Promise<SegRead<T>> {
    return (await this.#readSegs([segId])).get(segId)!;
  }

  /** Packed message at `pos` as a record would show it (not for `out` ones). */
  #packedView(
    msgs: QueueMessage<T>[],
    st: SegState,
    pos: number,
  ): QueueMessage<T> {
    const m = msgs[pos];
    const lease = leaseOf(st, pos);
    if (lease) {
      return {
        ...m,
        state: "inflight",
        attempts: 1,
        leaseId: lease.id,
        leaseUntil: lease.until,
        consumer: lease.consumer,
      };
    }
    if (st.done.includes(pos)) return { ...m, state: "done", attempts: 1 };
    return m;
  }

  /**
   * Writes segment `seg`'s next state into `op`, and deletes the index
   * entries of leases left empty. When every position is settled the
   * segment is listed for deletion: a sweep deletes it `doneRetentionMs`
   * later (its done messages stay readable until then).
   */
  #writeSegState(
    op: Deno.AtomicOperation,
    seg: string,
    settled: { next: SegState; emptied: SegLease[]; finished: boolean },
  ): void {
    op.set(this.#keys.segState(seg), settled.next);
    if (settled.finished) {
      op.set(this.#keys.segDone(this.#clock.now(), seg), seg);
    }
    for (const l of settled.emptied) {
      op.delete(this.#keys.inflight(l.until, leaseToken(seg, l.id)));
    }
  }

  /**
   * Moves the packed message at `pos` of segment `seg`, in flight under
   * lease `leaseId` (any, when not given), out to its own in-flight record
   * (its lease kept), so the ordinary per-record transitions apply to it.
   * Resolves with that commit, or null when the lease no longer holds it.
   * The moves asked for one segment while a commit is under way share the
   * next commit: many holders leaving at once (a failing handler's naks)
   * would otherwise each lose the state's check to the others.
   */
  #explodeAt(
    seg: string,
    pos: number,
    leaseId?: string,
  ): Promise<Deno.KvCommitResult | null> {
    const req: ExplodeRequest = {
      pos,
      leaseId,
      done: Promise.withResolvers(),
    };
    const waiting = this.#explodes.get(seg);
    if (waiting) waiting.push(req);
    else {
      this.#explodes.set(seg, [req]);
      queueMicrotask(() => void this.#runExplodes(seg));
    }
    return req.done.promise;
  }

  async #runExplodes(seg: string): Promise<void> {
    for (;;) {
      const reqs = this.#explodes.get(seg)!;
      if (reqs.length === 0) {
        this.#explodes.delete(seg);
        return;
      }
      this.#explodes.set(seg, []); // those asking meanwhile: next round
      try {
        await this.#explodeBatch(seg, reqs);
      } catch (err) {
        for (const r of reqs) r.done.reject(err);
      }
    }
  }

  async #explodeBatch(seg: string, reqs: ExplodeRequest[]): Promise<void> {
    for (let tries = 0; tries < 50; tries++) {
      if (tries > 0) await pause(tries);
      const r = await this.#readSeg(seg);
      const go: ExplodeRequest[] = [];
      for (const req of reqs) {
        const lease = leaseOf(r.state, req.pos);
        if (!r.msgs || !lease || (req.leaseId && lease.id !== req.leaseId)) {
          req.done.resolve(null);
        } else go.push(req);
      }
      if (go.length === 0) return;
      // As many as fit one commit (a record and a lease entry each); the
      // rest in the next round, on a fresh read.
      const key = this.#keys.segState(seg);
      const pos = splitToFit(
        [...new Set(go.map((q) => q.pos))],
        (p) => {
          const id = r.msgs![p].id;
          return new CommitSize()
            .set(this.#keys.msg(id), undefined, valueBytes(r.msgs![p]) + 256)
            .set(this.#keys.inflight(0, id), id);
        },
        () => {
          const size = new CommitSize().check(key).set(key, r.state)
            .set(this.#keys.segDone(0, seg), seg);
          for (const l of r.state.leases) {
            size.delete(this.#keys.inflight(l.until, leaseToken(seg, l.id)));
          }
          return size;
        },
      )[0];
      const { res } = await this.#commit(() => {
        const op = this.#kv.atomic().check(r.stateEntry);
        for (const p of pos) {
          const rec = this.#packedView(r.msgs!, r.state, p);
          op.set(this.#keys.msg(rec.id), rec)
            .set(this.#keys.inflight(rec.leaseUntil!, rec.id), rec.id);
        }
        this.#writeSegState(
          op,
          seg,
          settlePositions(r.state, pos, "out", r.msgs!.length),
        );
        return op;
      });
      if (res.ok) {
        const moved = new Set(pos);
        for (const q of go) if (moved.has(q.pos)) q.done.resolve(res);
        reqs = go.filter((q) => !moved.has(q.pos));
        if (reqs.length === 0) return;
        tries = -1; // progress: the next part starts afresh
        continue;
      }
      reqs = go;
    }
    throw new Error(
      `Cannot move messages of segment '${seg}' on '${this.name}' to their own records: the segment kept changing under 50 tries`,
    );
  }

  /**
   * A packed holder leaves the happy path: its message gets its own record
   * (or, if a cancel or sweep moved it first, the holder takes that record
   * when it is still under its lease, else a versionstamp no check passes,
   * so its verb fails as a lost lease or settles as cancelled).
   */
  async #explode(h: Holder<T>): Promise<void> {
    const { seg, lease, pos } = h.pack!;
    const res = await this.#explodeAt(seg, pos, lease);
    h.pack = undefined;
    if (res) {
      h.vs = res.versionstamp;
      return;
    }
    const e = await this.#kv.get<QueueMessage<T>>(this.#keys.msg(h.msg.id));
    if (e.value?.state === "inflight" && e.value.leaseId === h.msg.leaseId) {
      h.vs = e.versionstamp!;
      h.msg = e.value;
    } else h.vs = NO_VERSIONSTAMP;
  }

  /**
   * Decides where `result` goes: inline when the done record still fits one
   * KV value, else into chunks written now (before the record names them).
   */
  async #prepareResult(
    m: QueueMessage<T>,
    result: unknown,
  ): Promise<PreparedResult> {
    if (result === undefined) return {};
    let bytes: Uint8Array;
    try {
      const b = serialize(result);
      bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch (err) {
      throw new UnstorableResultError(
        `Cannot ack message '${m.id}' on '${this.name}': its result cannot be stored (${
          (err as Error).message
        })`,
        { cause: err },
      );
    }
    if (bytes.length > this.#maxResult) {
      throw new UnstorableResultError(
        `Cannot ack message '${m.id}' on '${this.name}': its result is ${bytes.length} bytes, over the limit of ${this.#maxResult} bytes`,
      );
    }
    if (bytes.length + serialize(m).length <= INLINE_RECORD_BYTES) {
      return { result, bytes: bytes.length };
    }
    return { ref: await this.#writeResult(m.id, bytes) };
  }

  async #writeResult(id: string, bytes: Uint8Array): Promise<StoredResult> {
    const ref = crypto.randomUUID();
    const chunks = Math.ceil(bytes.length / RESULT_CHUNK_BYTES);
    const expireIn = this.#retention + RESULT_SLACK_MS;
    try {
      for (let i = 0; i < chunks; i += RESULT_CHUNKS_PER_COMMIT) {
        const end = Math.min(chunks, i + RESULT_CHUNKS_PER_COMMIT);
        await retryLocked(() => {
          const op = this.#kv.atomic();
          for (let k = i; k < end; k++) {
            op.set(
              this.#keys.result(id, ref, k),
              bytes.slice(k * RESULT_CHUNK_BYTES, (k + 1) * RESULT_CHUNK_BYTES),
              { expireIn },
            );
          }
          return op.commit();
        });
      }
    } catch (err) {
      await this.#deleteResult(id, ref).catch(() => {});
      throw err;
    }
    return { ref, bytes: bytes.length, chunks };
  }

  /** The stored result, or null when a chunk is gone. */
  async #readResult(
    id: string,
    stored: StoredResult,
  ): Promise<{ value: unknown } | null> {
    const keys = Array.from(
      { length: stored.chunks },
      (_, i) => this.#keys.result(id, stored.ref, i),
    );
    const parts = await Promise.all(
      Array.from(
        { length: Math.ceil(keys.length / 10) },
        (_, k) =>
          this.#kv.getMany<Uint8Array[]>(keys.slice(k * 10, k * 10 + 10)),
      ),
    );
    const out = new Uint8Array(stored.bytes);
    let at = 0;
    for (const e of parts.flat()) {
      if (!(e.value instanceof Uint8Array)) return null;
      if (at + e.value.length > out.length) return null;
      out.set(e.value, at);
      at += e.value.length;
    }
    return at === out.length ? { value: deserialize(out) } : null;
  }

  async #deleteResult(id: string, ref: string): Promise<void> {
    const keys: Deno.KvKey[] = [];
    for await (
      const e of this.#kv.list({ prefix: this.#keys.result(id, ref) })
    ) keys.push(e.key);
    // Keys end in a caller's id (up to ~2 KiB): as many as fit a commit.
    const runs = splitToFit(
      keys,
      (k) => new CommitSize().delete(k),
      () => new CommitSize(),
    );
    for (const run of runs) {
      await retryLocked(() => {
        const op = this.#kv.atomic();
        for (const k of run) op.delete(k);
        return op.commit();
      });
    }
  }

  /**
   * Claims up to `n` due messages for `leaseMs`, highest priority first.
   * Returns fewer (or none) when fewer are ready. `consumer` names the
   * claimer in each record and lease: at most
   * {@linkcode MAX_CONSUMER_CHARS} characters (a `RangeError` beyond).
   */
  async claim(
    n: number,
    leaseMs: number,
    consumer = "anonymous",
  ): Promise<Delivery<T>[]> {
    if (!Number.isInteger(n) || n < 1) {
      throw new RangeError(
        `Cannot claim: n must be a positive integer, got ${n}`,
      );
    }
    if (!(leaseMs > 0)) {
      throw new RangeError(`Cannot claim: leaseMs must be > 0, got ${leaseMs}`);
    }
    checkConsumerName(consumer, `claim on '${this.name}'`);
    const out: Delivery<T>[] = [];
    for (let round = 0; out.length < n && round < 4; round++) {
      const want = n - out.length;
      // Index entries hold the ids enqueued by one commit, in order.
      const picks: Pick[] = [];
      let count = 0;
      for await (
        const e of this.#kv.list<string[]>({ prefix: this.#keys.readyPrefix }, {
          limit: want,
        })
      ) {
        const take = e.value.slice(0, want - count);
        picks.push({ entry: e, take, rest: e.value.slice(take.length) });
        count += take.length;
        if (count >= want) break;
      }
      if (picks.length === 0) break;
      // Try each batch whole; under contention fall back to entry by entry.
      for (const chunk of chunks(picks, this.#maxBatch, MAX_CLAIM_PER_COMMIT)) {
        const claimed = await this.#claimAll(chunk, leaseMs, consumer);
        if (claimed) out.push(...claimed);
        else {
          for (const pick of chunk) {
            out.push(
              ...(await this.#claimAll([pick], leaseMs, consumer) ?? []),
            );
          }
        }
      }
      if (count < want) break;
    }
    if (this.#windowMs !== undefined && out.length < n) {
      out.push(...this.#claimFromMemory(n - out.length, leaseMs, consumer));
    }
    return out;
  }

  /**
   * The first `n` stored ready messages, in the order a claim takes them
   * (highest priority, then the order they became ready), without claiming
   * them: a claim counts an attempt, a look does not. A consumer of several
   * queues in one KV merges their heads by `priority`, then `readySince`,
   * and claims from each queue as many as it picked: a claim takes from the
   * same head, so it takes those (or, after a race, what came first since).
   * Messages waiting in memory (window mode) are not listed.
   */
  async peek(n: number): Promise<ReadyRef[]> {
    if (!Number.isInteger(n) || n < 1) {
      throw new RangeError(
        `Cannot peek on '${this.name}': n must be a positive integer, got ${n}`,
      );
    }
    const out: ReadyRef[] = [];
    for await (
      const e of this.#kv.list<string[]>({ prefix: this.#keys.readyPrefix }, {
        limit: n,
      })
    ) {
      const priority = 9 - (e.key[3] as number);
      const readySince = e.key[4] as string;
      for (const id of e.value.slice(0, n - out.length)) {
        out.push({ id, priority, readySince });
      }
      if (out.length >= n) break;
    }
    return out;
  }

  /**
   * Windowed mode: claims up to `n` ready messages still waiting in memory
   * for their first commit (after every stored one), highest priority
   * first. Each is then stored in-flight by that commit; its holder's
   * verbs wait for it, and an ack made before it folds into it.
   */
  #claimFromMemory(
    n: number,
    leaseMs: number,
    consumer: string,
  ): Delivery<T>[] {
    const ready = this.#group.filter((g) => g.msg.state === "ready");
    if (ready.length === 0) return [];
    ready.sort((a, b) => b.msg.priority - a.msg.priority); // stable: FIFO within
    const now = this.#clock.now();
    // Packed ones share a lease per segment, as a claim of stored ones.
    const leases = new Map<string, string>();
    return ready.slice(0, n).map((g) => {
      const seg = segmentOf(g.msg.id);
      let leaseId = seg === undefined ? crypto.randomUUID() : leases.get(seg);
      if (leaseId === undefined) {
        leases.set(seg!, leaseId = crypto.randomUUID());
      }
      g.msg = {
        ...g.msg,
        state: "inflight",
        attempts: g.msg.attempts + 1,
        leaseId,
        leaseUntil: now + leaseMs,
        consumer,
      };
      g.stored = Promise.withResolvers<string>();
      const d = this.#delivery(g.msg, "", leaseMs);
      const h = this.#holders.get(d)!;
      h.entry = g;
      h.chain = g.stored.promise.then((vs) => {
        h.vs = vs;
        h.entry = undefined;
        // Stored packed, under its lease: settled through its segment.
        if (g.pos !== undefined && seg !== undefined) {
          h.pack = { seg, lease: leaseId, pos: g.pos };
        }
      });
      // Nobody may be left with an unhandled rejection: verbs see it.
      h.chain.catch(() => {});
      return d;
    });
  }

  /**
   * Claims `picks` in as many commits as their size needs (a commit holds
   * what fits KV's limits, in order); null when the first commit lost a
   * race, else what was claimed (after a later lost race, the rest entry
   * by entry).
   */
  async #claimAll(
    picks: Pick[],
    leaseMs: number,
    consumer: string,
  ): Promise<Delivery<T>[] | null> {
    const out: Delivery<T>[] = [];
    let cap = Infinity;
    for (let todo = picks, first = true; todo.length; first = false) {
      const r = await this.#claimBatch(todo, leaseMs, consumer, cap);
      if (!r && first) return null;
      if (!r) {
        // Lost a race after a first part: the rest entry by entry, in order.
        for (const pick of todo) {
          out.push(...(await this.#claimAll([pick], leaseMs, consumer) ?? []));
        }
        return out;
      }
      out.push(...r.claimed);
      todo = r.left;
      cap = r.cap ?? cap;
    }
    return out;
  }

  /**
   * One claim commit: the longest prefix of `picks`' ids that fits one
   * commit (at least one, at most `cap`). `left` is what did not fit, to
   * claim next (empty when the commit's own versionstamp is unknown: a
   * later round lists the index again). A commit KV still refuses as too
   * large commits nothing and asks for half as many (`cap`).
   */
  async #claimBatch(
    picks: Pick[],
    leaseMs: number,
    consumer: string,
    cap: number,
  ): Promise<{ claimed: Delivery<T>[]; left: Pick[]; cap?: number } | null> {
    const all = picks;
    let ids = picks.flatMap((p) => p.take);
    // Packed ids still in their segment take the packed path; one that was
    // moved out to its own record (a nak, an expired lease) is plain.
    const segIds = [
      ...new Set(ids.map(segmentOf).filter((s) => s !== undefined)),
    ];
    const segs = await this.#readSegs(segIds, "cached");
    const packedAt = new Map<string, { seg: string; pos: number }>();
    for (const id of ids) {
      const seg = segmentOf(id);
      const r = seg === undefined ? undefined : segs.get(seg)!;
      const pos = r?.msgs ? this.#posOf(r.msgs, id) : -1;
      if (pos >= 0 && !r!.state.out.includes(pos)) {
        packedAt.set(id, { seg: seg!, pos });
      }
    }
    const plainIds = ids.filter((id) => !packedAt.has(id));
    const msgs = await this.#getMany(plainIds);
    const now = this.#clock.now();
    let claimed: QueueMessage<T>[] = [];
    msgs.forEach((current) => {
      if (!current || current.state !== "ready") return; // an orphaned index entry: dropped below
      claimed.push({
        ...current,
        state: "inflight",
        attempts: current.attempts + 1,
        leaseId: crypto.randomUUID(),
        leaseUntil: now + leaseMs,
        consumer,
      });
    });
    // One lease per segment for all its positions this claim takes.
    const leases = new Map<string, SegLease>();
    for (const [, { seg, pos }] of packedAt) {
      if (!isReady(segs.get(seg)!.state, pos)) continue; // not ready: dropped below
      let l = leases.get(seg);
      if (!l) {
        leases.set(
          seg,
          l = {
            id: crypto.randomUUID(),
            until: now + leaseMs,
            consumer,
            pos: [],
          },
        );
      }
      l.pos.push(pos);
    }
    let left: Pick[] = [];
    const fit = Math.min(cap, this.#claimFit(picks, claimed, leases, segs));
    if (fit === 0) return { claimed: [], left: [] };
    if (fit < ids.length) {
      ({ picks, left } = cutPicks(picks, fit));
      ids = ids.slice(0, fit);
      const keep = new Set(ids);
      claimed = claimed.filter((m) => keep.has(m.id));
      for (const [seg, l] of leases) {
        const msgs = segs.get(seg)!.msgs!;
        l.pos = l.pos.filter((pos) => keep.has(msgs[pos].id));
        if (l.pos.length === 0) leases.delete(seg);
      }
    }
    const nPacked = [...leases.values()].reduce((n, l) => n + l.pos.length, 0);
    let commit: Committed;
    try {
      commit = await this.#commit(() => {
        const op = this.#kv.atomic();
        for (const { entry, rest } of picks) {
          op.check(entry);
          if (rest.length) op.set(entry.key, rest);
          else op.delete(entry.key);
        }
        for (const m of claimed) {
          op.set(this.#keys.msg(m.id), m).set(
            this.#keys.inflight(m.leaseUntil!, m.id),
            m.id,
          );
        }
        for (const [seg, l] of leases) {
          const r = segs.get(seg)!;
          op.check(r.stateEntry)
            .set(
              this.#keys.segState(seg),
              {
                ...r.state,
                n: r.msgs!.length,
                leases: [...r.state.leases, l],
              } satisfies SegState,
            )
            .set(
              this.#keys.inflight(l.until, leaseToken(seg, l.id)),
              { seg, lease: l.id } satisfies SegLeaseRef,
            );
        }
        this.#count(op, "ready", -(claimed.length + nPacked));
        this.#count(op, "inflight", claimed.length + nPacked);
        return op;
      });
    } catch (err) {
      if (!isTooLarge(err) || ids.length === 1) throw err;
      return { claimed: [], left: all, cap: Math.floor(ids.length / 2) };
    }
    const { res, retried } = commit;
    let ours = leases;
    let plainOurs: { m: QueueMessage<T>; vs: string }[];
    if (res.ok) {
      plainOurs = claimed.map((m) => ({ m, vs: res.versionstamp }));
      // An entry cut in two now holds what was left, as of this commit.
      if (left[0] && left[0].entry.versionstamp === "") {
        left[0].entry.versionstamp = res.versionstamp;
      }
    } else {
      if (!retried) return null;
      left = [];
      // The locked first try may have landed: our lease ids say what is ours.
      const after = await this.#getEntries(claimed.map((m) => m.id));
      plainOurs = after.flatMap((e, i) =>
        e.value?.leaseId === claimed[i].leaseId
          ? [{ m: e.value!, vs: e.versionstamp! }]
          : []
      );
      const reread = await this.#readSegs([...leases.keys()]);
      ours = new Map(
        [...leases].filter(([seg, l]) =>
          reread.get(seg)!.state.leases.some((x) => x.id === l.id)
        ),
      );
      if (plainOurs.length === 0 && ours.size === 0) return null;
    }
    // Deliveries in the order the index listed them (FIFO).
    const byId = new Map<string, Delivery<T>>();
    for (const { m, vs } of plainOurs) {
      byId.set(m.id, this.#delivery(m, vs, leaseMs));
    }
    for (const [seg, l] of ours) {
      const r = segs.get(seg)!;
      const st: SegState = { ...r.state, leases: [l] };
      for (const pos of l.pos) {
        const d = this.#delivery(
          this.#packedView(r.msgs!, st, pos),
          "",
          leaseMs,
        );
        this.#holders.get(d)!.pack = { seg, lease: l.id, pos };
        byId.set(d.id, d);
      }
    }
    return {
      claimed: ids.flatMap((id) => byId.has(id) ? [byId.get(id)!] : []),
      left,
    };
  }

  /**
   * How many of `picks`' ids, in order, one claim commit can take within
   * KV's limits: at least one (a message alone always fits), unless the
   * first is packed in a segment whose state is full.
   */
  #claimFit(
    picks: Pick[],
    claimed: QueueMessage<T>[],
    leases: Map<string, SegLease>,
    segs: Map<string, SegRead<T>>,
  ): number {
    const size = new CommitSize().sum(this.#keys.count("ready"))
      .sum(this.#keys.count("inflight"));
    const plain = new Map(claimed.map((m) => [m.id, m]));
    const counted = new Set<string>();
    let n = 0;
    for (const { entry, take } of picks) {
      // The ids left in the entry are at most all of them.
      size.check(entry.key).set(entry.key, entry.value);
      for (const id of take) {
        const m = plain.get(id);
        const seg = segmentOf(id);
        if (m) {
          size.set(this.#keys.msg(id), m)
            .set(this.#keys.inflight(m.leaseUntil!, id), id);
        } else if (seg !== undefined && leases.has(seg) && !counted.has(seg)) {
          counted.add(seg);
          const l = leases.get(seg)!;
          const r = segs.get(seg)!;
          const key = this.#keys.segState(seg);
          const state = { ...r.state, n: 0, leases: [...r.state.leases, l] };
          const bytes = valueBytes(state);
          // A state holds every open lease of its segment: full (long
          // consumer names), it takes more once some end.
          if (bytes > KV_VALUE_BYTES - 1024) return n;
          size.check(key)
            .set(key, state, bytes)
            .set(this.#keys.inflight(l.until, leaseToken(seg, l.id)), {
              seg,
              lease: l.id,
            });
        }
        if (!size.fits()) return Math.max(n, 1);
        n++;
      }
    }
    return n;
  }

  /** Reads message entries by id, 10 keys per read (KV's limit), in order. */
  async #getEntries(
    ids: string[],
  ): Promise<Deno.KvEntryMaybe<QueueMessage<T>>[]> {
    const parts = await Promise.all(
      Array.from(
        { length: Math.ceil(ids.length / 10) },
        (_, k) =>
          this.#kv.getMany<QueueMessage<T>[]>(
            ids.slice(k * 10, k * 10 + 10).map((id) => this.#keys.msg(id)),
          ),
      ),
    );
    return parts.flat();
  }

  /** Reads messages by id, 10 keys per read (KV's limit), in order. */
  async #getMany(ids: string[]): Promise<(QueueMessage<T> | null)[]> {
    return (await this.#getEntries(ids)).map((e) => e.value);
  }

  /**
   * Adds `id` to the ready index entry this commit writes for `priority`.
   * The entry's key ends in the commit's versionstamp, so entries sort in
   * commit order (FIFO across processes); ids enqueued by one commit share
   * one entry, in order, since a versionstamp may only end a key.
   */
  #addReady(op: Deno.AtomicOperation, priority: number, id: string): void {
    let byPriority = this.#readyAdds.get(op);
    if (!byPriority) this.#readyAdds.set(op, byPriority = new Map());
    const ids = byPriority.get(priority);
    if (ids) ids.push(id);
    else byPriority.set(priority, [id]);
  }

  /**
   * Writes the ready index entries {@linkcode #addReady} collected for `op`,
   * once per priority: a set per message would make KV write every
   * growing prefix of the list (the op keeps each mutation), O(n²) bytes.
   */
  #writeReady(op: Deno.AtomicOperation): void {
    for (const [priority, ids] of this.#readyAdds.get(op) ?? []) {
      op.set(this.#keys.ready(priority, this.#kv.commitVersionstamp()), ids);
    }
  }

  #delivery(
    claimed: QueueMessage<T>,
    versionstamp: string,
    leaseMs: number,
  ): Delivery<T> {
    const h: Holder<T> = {
      msg: claimed,
      vs: versionstamp,
      settled: false,
      chain: Promise.resolve(),
    };
    const d: Delivery<T> = {
      get id() {
        return h.msg.id;
      },
      get payload() {
        return h.msg.payload;
      },
      get attempts() {
        return h.msg.attempts;
      },
      get message() {
        return h.msg;
      },
      get settled() {
        return h.settled || h.closing === true;
      },
      ack: async (result?: unknown) => {
        const [err] = await this.ackAll([d], [result]);
        if (err) throw err;
      },
      nak: (delayMs?: number, error = "nak") =>
        this.#settle(
          [h],
          (op, m) => this.#retryOrDead(op, m, error, delayMs),
          "nak",
          true,
        ),
      term: (reason: string) =>
        this.#settle(
          [h],
          (op, m) => this.#toDead(op, m, reason, "inflight"),
          "term",
          true,
        ),
      inProgress: async (extendMs = leaseMs) => {
        if (h.settled || h.closing) return;
        let until = 0;
        await this.#settle(
          [h],
          (op, m) => {
            until = this.#clock.now() + extendMs;
            return op.delete(this.#keys.inflight(m.leaseUntil!, m.id))
              .set(this.#keys.msg(m.id), { ...m, leaseUntil: until })
              .set(this.#keys.inflight(until, m.id), m.id);
          },
          "extend",
          false,
        );
        // The index key of the next transition depends on the new deadline.
        h.msg = { ...h.msg, leaseUntil: until };
      },
    };
    this.#holders.set(d, h);
    return d;
  }

  /** `m` finished, with its result as `stored` says. */
  #doneRecord(m: QueueMessage<T>, stored: PreparedResult): QueueMessage<T> {
    const done: QueueMessage<T> = {
      ...m,
      state: "done",
      finishedAt: this.#clock.now(),
      ...(stored.result !== undefined ? { result: stored.result } : {}),
      ...(stored.ref ? { resultRef: stored.ref } : {}),
    };
    delete done.leaseId;
    return done;
  }

  #ackInto(
    op: Deno.AtomicOperation,
    m: QueueMessage<T>,
    stored: PreparedResult,
  ): Deno.AtomicOperation {
    const done = this.#doneRecord(m, stored);
    this.#count(op, "inflight", -1);
    return op.set(this.#keys.msg(m.id), done, { expireIn: this.#retention })
      .delete(this.#keys.inflight(m.leaseUntil!, m.id));
  }

  /**
   * Settles one or more held messages in one commit, each checked against
   * the versionstamp its holder last wrote (so a holder whose lease was
   * taken over fails instead of clobbering). Transitions of one holder run
   * one at a time: a lease extension never races its ack. Each record the
   * builder writes spreads the tagged message, so after an ambiguous
   * "database is locked" a re-read tells whether the write landed.
   */
  #settle(
    holders: Holder<T>[],
    build: SettleBuild<T>,
    verb: string,
    final: boolean,
  ): Promise<void> {
    const p = Promise.all(holders.map((h) => h.chain)).then(() =>
      this.#settleNow(holders, build, verb, final)
    );
    for (const h of holders) h.chain = p.catch(() => {});
    return p;
  }

  /** {@linkcode #settle}'s work, for a caller already in the holders' chains. */
  async #settleNow(
    holders: Holder<T>[],
    build: SettleBuild<T>,
    verb: string,
    final: boolean,
  ): Promise<void> {
    {
      for (const h of holders) {
        if (h.settled || (h.closing && verb !== "ack")) {
          throw new Error(
            `Cannot ${verb} message '${h.msg.id}': it is already settled`,
          );
        }
      }
      // A packed message leaves the happy path: its own record first.
      for (const h of holders) if (h.pack) await this.#explode(h);
      const opId = crypto.randomUUID();
      const tagged = holders.map((h) => ({ ...h.msg, lastOp: opId }));
      let res: Deno.KvCommitResult | Deno.KvCommitError;
      let retried: boolean;
      try {
        ({ res, retried } = await this.#commit(() => {
          const op = this.#kv.atomic();
          holders.forEach((h, i) => {
            build(op, tagged[i], i).check({
              key: this.#keys.msg(h.msg.id),
              versionstamp: h.vs,
            });
          });
          return op;
        }));
      } catch (err) {
        tooLarge(err, `${verb} '${holders[0].msg.id}'`);
      }
      const landed = res.ok
        ? holders.map(() => res.versionstamp as string | null)
        : holders.map(() => null);
      if (!res.ok && retried) {
        const now = await this.#getEntries(holders.map((h) => h.msg.id));
        now.forEach((
          e,
          i,
        ) => (landed[i] = e.value?.lastOp === opId ? e.versionstamp : null));
      }
      if (landed.every((v) => v !== null)) {
        holders.forEach((h, i) => {
          h.vs = landed[i]!;
          h.msg = tagged[i];
          if (final) h.settled = true;
        });
        return;
      }
      if (holders.length > 1) throw new BatchLostError();
      // Cancelled under its holder: the message is finished, nothing to settle.
      const [now] = await this.#getMany([holders[0].msg.id]);
      if (now?.state === "cancelled") {
        holders[0].settled = true;
        return;
      }
      throw new LeaseLostError(
        `Cannot ${verb} message '${
          holders[0].msg.id
        }' on '${this.name}': its lease expired and it was taken back`,
      );
    }
  }

  /**
   * Acks several deliveries in one commit (results by position). Each result
   * is checked and stored first, on its own: one that cannot be stored
   * dead-letters only its message. If the commit fails (a lease lost, a
   * delivery already settled, anything), each is acked on its own so only
   * the culprit fails. Resolves with the errors per delivery (undefined =
   * acked).
   */
  async ackAll(
    deliveries: Delivery<T>[],
    results: unknown[] = [],
  ): Promise<(Error | undefined)[]> {
    const holders = deliveries.map((d) => {
      const h = this.#holders.get(d);
      if (!h) throw new TypeError("Cannot ack: not a delivery of this queue");
      return h;
    });
    const out: (Error | undefined)[] = deliveries.map(() => undefined);
    for (let i = 0; i < holders.length; i += this.#maxBatch) {
      const part = holders.slice(i, i + this.#maxBatch).map((_, k) => i + k);
      const prepared = new Map<number, PreparedResult>();
      await Promise.all(part.map(async (j) => {
        try {
          if (holders[j].closing) {
            throw new Error(
              `Cannot ack message '${
                holders[j].msg.id
              }': it is already settled`,
            );
          }
          prepared.set(
            j,
            await this.#prepareResult(holders[j].msg, results[j]),
          );
        } catch (err) {
          out[j] = err as Error;
          if (!(err instanceof UnstorableResultError)) return;
          // Retrying would most likely produce the same result.
          await this.#settle(
            [holders[j]],
            (op, m) => this.#toDead(op, m, err.message, "inflight"),
            "term",
            true,
          ).catch(() => {});
        }
      }));
      const ready = part.filter((j) => prepared.has(j));
      if (this.#windowMs !== undefined) {
        this.#open("ack");
        await Promise.all(ready.map(async (j) => {
          if (holders[j].settled || holders[j].closing) {
            out[j] = new Error(
              `Cannot ack message '${
                holders[j].msg.id
              }': it is already settled`,
            );
            return;
          }
          holders[j].closing = true;
          const g = holders[j].entry;
          if (g && !g.taken) {
            // Claimed from memory and not yet stored: the commit that stores
            // it stores it done (durable when that commit is).
            g.msg = this.#doneRecord(g.msg, prepared.get(j)!);
            const h = holders[j];
            const stored = g.stored!.promise.then(() => {
              h.settled = true;
              h.closing = false;
            }, (err) => {
              h.closing = false;
              throw err;
            });
            if (g.waits) {
              await stored.catch((e) => (out[j] = e as Error));
            } else stored.catch(() => {}); // reported as a lost enqueue
            return;
          }
          const early = await this.#join("ack");
          await new Promise<void>((resolve) => {
            const id = holders[j].msg.id;
            if (!early) this.#waiting++;
            this.#acks.push({
              holder: holders[j],
              prepared: prepared.get(j)!,
              at: performance.now(),
              waits: !early,
              done: (err) => {
                if (early) {
                  if (err) this.#lose("acks", id, err);
                  return;
                }
                out[j] = err;
                resolve();
              },
            });
            if (early) resolve();
            this.#schedule();
          });
        }));
        continue;
      }
      await this.#ackPrepared(holders, ready, prepared, out);
    }
    return out;
  }

  /** Windowed mode: one commit for waiting acks (then one by one if it fails). */
  async #commitAcks(acks: PendingAck<T>[]): Promise<void> {
    const holders = acks.map((a) => a.holder);
    const prepared = new Map(acks.map((a, j) => [j, a.prepared]));
    const out: (Error | undefined)[] = acks.map(() => undefined);
    try {
      await this.#ackPrepared(holders, acks.map((_, j) => j), prepared, out);
    } catch (err) {
      out.fill(err as Error);
    }
    acks.forEach((a, j) => {
      a.holder.closing = false;
      a.done(out[j]);
    });
  }

  /** Acks `ready` (indexes into `holders`) in one commit, else one by one; errors into `out`. */
  async #ackPrepared(
    holders: Holder<T>[],
    ready: number[],
    prepared: Map<number, PreparedResult>,
    out: (Error | undefined)[],
  ): Promise<void> {
    {
      // Packed messages acked without a result are marked done in their
      // segments' states; the rest take the per-record path.
      const packed = ready.filter((j) => {
        const p = prepared.get(j)!;
        return holders[j].pack && p.result === undefined && !p.ref;
      });
      if (packed.length) {
        const errs = await this.#ackPacked(packed.map((j) => holders[j]));
        packed.forEach((j, k) => (out[j] = errs[k]));
        ready = ready.filter((j) => !packed.includes(j));
      }
      const ack = (js: number[]) =>
        this.#settle(
          js.map((j) => holders[j]),
          (op, m, k) => this.#ackInto(op, m, prepared.get(js[k])!),
          "ack",
          true,
        );
      // One commit per group that fits KV's limits (done records carry
      // their payloads and inline results).
      await Promise.all(
        this.#fitAcks(holders, ready, prepared).map(async (js) => {
          try {
            await ack(js);
          } catch (err) {
            if (js.length === 1) out[js[0]] = err as Error;
            else {
              await Promise.all(
                js.map((j) => ack([j]).catch((e) => (out[j] = e as Error))),
              );
            }
          }
        }),
      );
      await Promise.all(
        ready.filter((j) => out[j] && prepared.get(j)!.ref).map((j) =>
          this.#dropUnusedResult(holders[j].msg.id, prepared.get(j)!.ref!.ref)
            .catch(() => {})
        ),
      );
    }
  }

  /**
   * Splits acks `ready` (indexes into `holders`) into groups, in order,
   * each of which one commit holds within KV's limits.
   */
  #fitAcks(
    holders: Holder<T>[],
    ready: number[],
    prepared: Map<number, PreparedResult>,
  ): number[][] {
    return splitToFit(ready, (j) => {
      const m = holders[j].msg;
      const p = prepared.get(j)!;
      return new CommitSize().check(this.#keys.msg(m.id))
        .set(
          this.#keys.msg(m.id),
          undefined,
          valueBytes(m) + (p.bytes ?? 0) + (p.ref ? 256 : 0) + 128,
        )
        .delete(this.#keys.inflight(m.leaseUntil ?? 0, m.id));
    }, () => new CommitSize().sum(this.#keys.count("inflight")));
  }

  /**
   * Acks packed deliveries (no result) by marking their positions done in
   * their segments' states: one commit for up to `maxBatch` segments,
   * checked against each state read, re-read and rebuilt when a claim or
   * another ack changed one meanwhile. The commit that settles a segment's
   * last position deletes the segment. A holder whose lease no longer holds
   * its position (cancelled, taken back by a sweep) takes the per-record
   * path, which tells it apart. Errors by position (undefined = acked).
   */
  #ackPacked(holders: Holder<T>[]): Promise<(Error | undefined)[]> {
    const run = async () => {
      const out: (Error | undefined)[] = holders.map(() => undefined);
      const fallback: number[] = [];
      let todo = holders.map((_, i) => i).filter((i) => {
        if (!holders[i].settled) return true;
        out[i] = new Error(
          `Cannot ack message '${holders[i].msg.id}': it is already settled`,
        );
        return false;
      });
      const acked = (i: number) => {
        const h = holders[i];
        h.msg = this.#doneRecord(h.msg, {});
        h.settled = true;
      };
      for (let tries = 0; todo.length && tries < 50; tries++) {
        if (tries > 0) await pause(tries);
        const segIds = [...new Set(todo.map((i) => holders[i].pack!.seg))]
          .slice(0, this.#maxBatch);
        const segs = await this.#readSegs(segIds, "state");
        const bySeg = new Map<string, number[]>();
        const next: number[] = [];
        for (const i of todo) {
          const { seg, lease, pos } = holders[i].pack!;
          const r = segs.get(seg);
          if (!r) {
            next.push(i); // a later commit's segment
            continue;
          }
          if (leaseOf(r.state, pos)?.id === lease) {
            if (bySeg.has(seg)) bySeg.get(seg)!.push(i);
            else bySeg.set(seg, [i]);
          } else if (
            tries > 0 && (r.state.done.includes(pos) || !r.stateEntry.value)
          ) {
            // Only its holder marks a position done, and a segment goes
            // only when all are settled: an earlier try of ours landed.
            // (A message moved out has a record: the per-record path.)
            const rec = r.stateEntry.value
              ? null
              : (await this.#getMany([holders[i].msg.id]))[0];
            if (rec) fallback.push(i);
            else acked(i);
          } else fallback.push(i);
        }
        // States hold every open lease: as many as fit one commit.
        const size = new CommitSize().sum(this.#keys.count("inflight"));
        for (const [seg, is] of bySeg) {
          const key = this.#keys.segState(seg);
          size.check(key).set(key, segs.get(seg)!.state)
            .delete(this.#keys.inflight(0, leaseToken(seg, "")))
            .set(this.#keys.segDone(0, seg), seg);
          if (!size.fits() && size.mutations > 4) {
            bySeg.delete(seg);
            next.push(...is);
          }
        }
        while (bySeg.size) {
          const n = [...bySeg.values()].reduce((a, is) => a + is.length, 0);
          let committed: Committed;
          try {
            committed = await this.#commit(() => {
              const op = this.#kv.atomic();
              for (const [seg, is] of bySeg) {
                const r = segs.get(seg)!;
                op.check(r.stateEntry);
                this.#writeSegState(
                  op,
                  seg,
                  settlePositions(
                    r.state,
                    is.map((i) => holders[i].pack!.pos),
                    "done",
                    r.state.n!,
                  ),
                );
              }
              this.#count(op, "inflight", -n);
              return op;
            });
          } catch (err) {
            // Counted short (see valueBytes): half the segments wait.
            if (!isTooLarge(err) || bySeg.size === 1) throw err;
            for (const seg of [...bySeg.keys()].slice(bySeg.size / 2)) {
              next.push(...bySeg.get(seg)!);
              bySeg.delete(seg);
            }
            continue;
          }
          if (committed.res.ok) {
            for (const is of bySeg.values()) is.forEach(acked);
          } else for (const is of bySeg.values()) next.push(...is);
          break;
        }
        todo = next;
      }
      fallback.push(...todo);
      await Promise.all(fallback.map(async (i) => {
        try {
          await this.#settleNow(
            [holders[i]],
            (op, m) => this.#ackInto(op, m, {}),
            "ack",
            true,
          );
        } catch (err) {
          out[i] = err as Error;
        }
      }));
      return out;
    };
    const p = Promise.all(holders.map((h) => h.chain)).then(run);
    for (const h of holders) h.chain = p.catch(() => {});
    return p;
  }

  /** Deletes result chunks `ref` of a failed ack, unless the record names them after all. */
  async #dropUnusedResult(id: string, ref: string): Promise<void> {
    const m = (await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id))).value;
    if (m?.resultRef?.ref !== ref) await this.#deleteResult(id, ref);
  }

  /**
   * `m`'s error history with `error` added: the last 20 attempts, each
   * error cut to 2,000 characters, and the oldest dropped while the record
   * would not fit one KV value (a payload near 60 KiB leaves no room: then
   * none is kept, and the message still moves).
   */
  #withError(m: QueueMessage<T>, error: string): AttemptError[] {
    const entry: AttemptError = {
      at: this.#clock.now(),
      attempt: m.attempts,
      error: clip(error),
    };
    if (m.consumer) entry.consumer = m.consumer;
    const errors = [...m.errors, entry].slice(-MAX_ERRORS);
    while (
      errors.length > 0 &&
      valueBytes({ ...m, errors, deadReason: MAX_TEXT }) > INLINE_RECORD_BYTES
    ) errors.shift();
    return errors;
  }

  /** From in-flight: back to ready/delayed, or to the DLQ when attempts are used up. */
  #retryOrDead(
    op: Deno.AtomicOperation,
    m: QueueMessage<T>,
    error: string,
    delayMs?: number,
  ): Deno.AtomicOperation {
    if (m.attempts >= m.maxAttempts) {
      return this.#toDead(
        op,
        { ...m, errors: this.#withError(m, error) },
        `max attempts (${m.maxAttempts}) reached`,
        "inflight",
        false,
      );
    }
    const delay = delayMs ?? backoffDelay(m.attempts, m.backoff);
    const now = this.#clock.now();
    const next: QueueMessage<T> = {
      ...m,
      state: delay > 0 ? "delayed" : "ready",
      availableAt: now + delay,
      errors: this.#withError(m, error),
    };
    delete next.leaseId;
    delete next.leaseUntil;
    op.delete(this.#keys.inflight(m.leaseUntil!, m.id))
      .set(this.#keys.msg(m.id), next);
    if (delay > 0) op.set(this.#keys.delayed(next.availableAt, m.id), m.id);
    else {
      this.#addReady(op, m.priority, m.id);
      queueMicrotask(() => this.#wake());
    }
    this.#count(op, "inflight", -1);
    this.#count(op, delay > 0 ? "delayed" : "ready", 1);
    return op;
  }

  #toDead(
    op: Deno.AtomicOperation,
    m: QueueMessage<T>,
    reason: string,
    from: QueueCountState,
    addError = true,
  ): Deno.AtomicOperation {
    const now = this.#clock.now();
    const dead: QueueMessage<T> = {
      ...m,
      state: "dead",
      deadAt: now,
      errors: addError ? this.#withError(m, reason) : m.errors,
    };
    delete dead.leaseId;
    delete dead.leaseUntil;
    dead.deadReason = clipInto(dead, "deadReason", reason);
    op.set(this.#keys.msg(m.id), dead)
      .set(this.#keys.dead(now, m.id), m.id);
    if (from === "inflight") {
      op.delete(this.#keys.inflight(m.leaseUntil!, m.id));
    }
    this.#count(op, from, -1);
    this.#count(op, "dead", 1);
    return op;
  }

  /**
   * Returns expired leases to ready (or the DLQ) and makes due delayed
   * messages ready. Safe to run from many processes at once. Returns how many
   * messages it moved.
   */
  async sweep(limit = 100): Promise<{ expired: number; promoted: number }> {
    const now = this.#clock.now();
    let expired = 0;
    let promoted = 0;
    const leases = this.#kv.list<string | SegLeaseRef>({
      prefix: this.#keys.inflightPrefix,
      end: [...this.#keys.inflightPrefix, now],
    }, {
      limit,
    });
    for await (const e of leases) {
      if (typeof e.value !== "string") {
        expired += await this.#expireSegLease(
          e as Deno.KvEntry<SegLeaseRef>,
        );
        continue;
      }
      const msgEntry = await this.#kv.get<QueueMessage<T>>(
        this.#keys.msg(e.value),
      );
      const m = msgEntry.value;
      const build = () =>
        (m && m.state === "inflight" && m.leaseUntil === e.key[3]
          ? this.#retryOrDead(
            this.#kv.atomic(),
            m,
            `lease expired (held by ${m.consumer ?? "unknown"})`,
            0,
          )
          : this.#kv.atomic().delete(e.key)) // a stale index entry
          .check(e, msgEntry);
      if ((await this.#commit(build)).res.ok && m) expired++;
    }
    const due = this.#kv.list<string>({
      prefix: this.#keys.delayedPrefix,
      end: [...this.#keys.delayedPrefix, now + 1],
    }, {
      limit,
    });
    for await (const e of due) {
      const msgEntry = await this.#kv.get<QueueMessage<T>>(
        this.#keys.msg(e.value),
      );
      const m = msgEntry.value;
      const build = () => {
        const op = this.#kv.atomic().check(e, msgEntry).delete(e.key);
        if (m && m.state === "delayed") {
          op.set(this.#keys.msg(m.id), { ...m, state: "ready" });
          this.#addReady(op, m.priority, m.id);
          this.#count(op, "delayed", -1);
          this.#count(op, "ready", 1);
        }
        return op;
      };
      if ((await this.#commit(build)).res.ok && m) promoted++;
    }
    // Segments all settled longer than the retention go.
    const old = this.#kv.list<string>({
      prefix: this.#keys.segDonePrefix,
      end: [...this.#keys.segDonePrefix, now - this.#retention],
    }, { limit });
    for await (const e of old) {
      await this.#commit(() =>
        this.#kv.atomic().delete(e.key).delete(this.#keys.seg(e.value))
          .delete(this.#keys.segState(e.value))
      );
    }
    if (promoted > 0 || expired > 0) this.#wake();
    return { expired, promoted };
  }

  /**
   * An expired packed claim: each of its messages moves out to its own
   * record and back to ready (or to the DLQ), checked against the
   * segment's state, in as many commits as KV's limits need (up to 5
   * mutations a message: a segment stored before the 200-message limit,
   * or one of 200 on their last attempt, is more than one commit holds).
   * The lease keeps the positions not moved yet, and its index entry goes
   * with the last of them. A commit that loses a race to a holder or
   * another sweeper stops here: the next sweep goes on. Returns how many
   * it moved.
   */
  async #expireSegLease(e: Deno.KvEntry<SegLeaseRef>): Promise<number> {
    const { seg, lease } = e.value;
    let moved = 0;
    for (;;) {
      const r = await this.#readSeg(seg);
      const l = r.state.leases.find((x) => x.id === lease);
      const live = r.msgs && l && l.until === e.key[3] ? l : undefined;
      const why = `lease expired (held by ${live?.consumer})`;
      const views = live
        ? this.#fitExpiry(seg, r, live, why)
        : [] as QueueMessage<T>[];
      const last = !live || views.length === live.pos.length;
      const { res } = await this.#commit(() => {
        const op = this.#kv.atomic().check(e); // unchanged until the last part
        if (last) op.delete(e.key); // stale unless live
        if (!live) return op;
        op.check(r.stateEntry);
        for (const m of views) this.#retryOrDead(op, m, why, 0);
        const pos = views.map((m) => this.#posOf(r.msgs!, m.id));
        const settled = settlePositions(r.state, pos, "out", r.msgs!.length);
        // This lease's index entry is deleted above, with its last part.
        settled.emptied = settled.emptied.filter((x) => x.id !== live.id);
        this.#writeSegState(op, seg, settled);
        return op;
      });
      if (!res.ok) return moved;
      moved += views.length;
      if (last) return moved;
    }
  }

  /**
   * The first of `live`'s positions whose moves out of segment `seg` (read
   * as `r`) fit one commit, as the records they become (at least one).
   */
  #fitExpiry(
    seg: string,
    r: SegRead<T>,
    live: SegLease,
    why: string,
  ): QueueMessage<T>[] {
    const views = live.pos.map((p) => this.#packedView(r.msgs!, r.state, p));
    const key = this.#keys.segState(seg);
    const base = () => {
      const size = new CommitSize()
        .set(this.#keys.ready(0, NO_VERSIONSTAMP), undefined, 64)
        .check(key).set(key, r.state)
        .set(this.#keys.segDone(0, seg), seg);
      for (const x of r.state.leases) {
        size.check(this.#keys.inflight(x.until, leaseToken(seg, x.id)))
          .delete(this.#keys.inflight(x.until, leaseToken(seg, x.id)));
      }
      return size;
    };
    // A record with the error added, its id in the ready entry, the lease
    // entry it never had deleted, or a DLQ entry, and two counters each.
    const extra = 2 * (why.length + MAX_TEXT_CHARS) + 256;
    return splitToFit(
      views,
      (m) =>
        new CommitSize()
          .set(this.#keys.msg(m.id), undefined, valueBytes(m) + extra)
          .delete(this.#keys.inflight(m.leaseUntil!, m.id))
          .set(this.#keys.dead(0, m.id), m.id)
          .sum(this.#keys.count("inflight")).sum(this.#keys.count("ready")),
      base,
    )[0];
  }

  /** Dead-lettered messages, oldest first. */
  async dlq(options: { limit?: number } = {}): Promise<QueueMessage<T>[]> {
    const out: QueueMessage<T>[] = [];
    for await (
      const e of this.#kv.list<string>({ prefix: this.#keys.deadPrefix }, {
        limit: options.limit ?? 100,
      })
    ) {
      const m = await this.get(e.value);
      if (m?.state === "dead") out.push(m);
    }
    return out;
  }

  /** Moves a dead message back to ready with a fresh attempt budget. Returns false if it is not dead. */
  async replay(id: string): Promise<boolean> {
    const entry = await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id));
    const m = entry.value;
    if (!m || m.state !== "dead") return false;
    const next: QueueMessage<T> = {
      ...m,
      state: "ready",
      attempts: 0,
      availableAt: this.#clock.now(),
    };
    delete next.deadAt;
    delete next.deadReason;
    const { res } = await this.#commit(() => {
      const op = this.#kv.atomic()
        .check(entry)
        .delete(this.#keys.dead(m.deadAt!, id))
        .set(this.#keys.msg(id), next);
      this.#addReady(op, m.priority, id);
      this.#count(op, "dead", -1);
      this.#count(op, "ready", 1);
      return op;
    });
    const ok = res.ok;
    if (ok) this.#wake();
    return ok;
  }

  /**
   * Takes a message out for good: a ready or delayed one is never claimed; an
   * in-flight one can no longer be acked, naked or retried (its holder's
   * settles become no-ops) and a {@linkcode CancelMark} is left for the
   * holder, which polls {@linkcode DurableQueue.cancelMarks} to stop its
   * work. The record stays readable, state `cancelled`, for
   * `doneRetentionMs`. A race with a claim or a settle is retried on the
   * fresh record, so exactly one cancel wins.
   */
  async cancel(id: string, reason: string): Promise<CancelOutcome<T>> {
    for (let tries = 0;; tries++) {
      const entry = await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id));
      const m = entry.value;
      const seg = m ? undefined : segmentOf(id);
      if (seg !== undefined) {
        const packed = await this.#cancelPacked(seg, id, reason);
        if (packed !== "moved") return packed;
        continue; // in flight: now its own record, cancelled as one
      }
      if (!m) return { outcome: "unknown" };
      if (
        m.state !== "ready" && m.state !== "delayed" && m.state !== "inflight"
      ) {
        return { outcome: "finished", message: m };
      }
      const from = m.state;
      const now = this.#clock.now();
      const next = this.#cancelled(m, reason, now);
      // A ready message's index entry was written by the commit that made it
      // ready, so its key ends in the record's versionstamp. Taking the id
      // out (checked) makes a claim that read the record before this commit
      // fail its own check on that entry, instead of running a cancelled
      // message; a claim that commits first fails this commit's check.
      const index = from === "ready"
        ? await this.#kv.get<string[]>(
          this.#keys.ready(m.priority, entry.versionstamp!),
        )
        : null;
      const { res } = await this.#commit(() => {
        const op = this.#kv.atomic().check(entry)
          .set(this.#keys.msg(id), next, { expireIn: this.#retention });
        if (index?.value?.includes(id)) {
          const rest = index.value.filter((x) => x !== id);
          op.check(index);
          if (rest.length) op.set(index.key, rest);
          else op.delete(index.key);
        }
        if (from === "delayed") {
          op.delete(this.#keys.delayed(m.availableAt, id));
        }
        if (from === "inflight") {
          op.delete(this.#keys.inflight(m.leaseUntil!, id)).set(
            this.#keys.cancel(id),
            { reason: clip(reason), at: now } satisfies CancelMark,
            { expireIn: this.#retention },
          );
        }
        this.#count(op, from, -1);
        return op;
      });
      if (res.ok) return { outcome: "cancelled", from, message: next };
      if (tries >= 20) {
        throw new Error(
          `Cannot cancel message '${id}' on '${this.name}': it kept changing under 20 tries`,
        );
      }
    }
  }

  /**
   * `m` as cancel writes it: finished at `now` for `reason`, without a lease
   * (a packed ready message never had one).
   */
  #cancelled(m: QueueMessage<T>, reason: string, now: number): QueueMessage<T> {
    const next: QueueMessage<T> = {
      ...m,
      state: "cancelled",
      cancelledAt: now,
      finishedAt: now,
    };
    delete next.leaseId;
    delete next.leaseUntil;
    next.cancelReason = clipInto(next, "cancelReason", reason);
    return next;
  }

  /**
   * Cancels packed message `id` of segment `seg`: a ready one is taken out
   * of its ready index entry (checked, as the claim checks it) and written
   * cancelled in one commit; an in-flight one is moved out to its own
   * record ("moved": the caller cancels that record).
   */
  async #cancelPacked(
    seg: string,
    id: string,
    reason: string,
  ): Promise<CancelOutcome<T> | "moved"> {
    for (let tries = 0; tries < 50; tries++) {
      if (tries > 0) await pause(tries);
      const r = await this.#readSeg(seg);
      const pos = r.msgs ? this.#posOf(r.msgs, id) : -1;
      if (pos < 0) return { outcome: "unknown" };
      if (r.state.out.includes(pos)) return "moved"; // has its own record now
      const m = this.#packedView(r.msgs!, r.state, pos);
      if (m.state === "done") return { outcome: "finished", message: m };
      if (m.state === "inflight") {
        await this.#explodeAt(seg, pos);
        return "moved";
      }
      // Ready: its index entry is the one the segment's commit wrote.
      const index = await this.#kv.get<string[]>(
        this.#keys.ready(m.priority, r.seg!.versionstamp!),
      );
      const next = this.#cancelled(m, reason, this.#clock.now());
      const { res } = await this.#commit(() => {
        const op = this.#kv.atomic().check(r.stateEntry).check(index)
          .set(this.#keys.msg(id), next, { expireIn: this.#retention });
        if (index.value?.includes(id)) {
          const rest = index.value.filter((x) => x !== id);
          if (rest.length) op.set(index.key, rest);
          else op.delete(index.key);
        }
        this.#writeSegState(
          op,
          seg,
          settlePositions(r.state, [pos], "out", r.msgs!.length),
        );
        this.#count(op, "ready", -1);
        return op;
      });
      if (res.ok) return { outcome: "cancelled", from: "ready", message: next };
    }
    throw new Error(
      `Cannot cancel message '${id}' on '${this.name}': it kept changing under 50 tries`,
    );
  }

  /** The cancel marks of those of `ids` cancelled while in flight. */
  async cancelMarks(ids: string[]): Promise<Map<string, CancelMark>> {
    const out = new Map<string, CancelMark>();
    for (let i = 0; i < ids.length; i += 10) {
      const part = ids.slice(i, i + 10);
      const entries = await this.#kv.getMany<CancelMark[]>(
        part.map((id) => this.#keys.cancel(id)),
      );
      entries.forEach((e, k) => e.value && out.set(part[k], e.value));
    }
    return out;
  }

  /**
   * Records what a running message reports of its progress (any value KV
   * stores), kept beside the record for `doneRetentionMs`: one small write,
   * never touching the record its holder checks.
   */
  async setProgress(id: string, progress: unknown): Promise<void> {
    await this.#kv.set(this.#keys.progress(id), progress, {
      expireIn: this.#retention,
    });
  }

  /** The last progress {@linkcode DurableQueue.setProgress} recorded for `id`, or null. */
  async progress<P = unknown>(id: string): Promise<P | null> {
    return (await this.#kv.get<P>(this.#keys.progress(id))).value;
  }

  /** Deletes dead messages (the given ids, or all). Returns how many. */
  async purge(ids?: string[]): Promise<number> {
    const targets = ids ?? (await this.dlq({ limit: 1000 })).map((m) => m.id);
    let n = 0;
    for (const id of targets) {
      const entry = await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id));
      const m = entry.value;
      if (!m || m.state !== "dead") continue;
      const { res } = await this.#commit(() => {
        const op = this.#kv.atomic().check(entry).delete(entry.key).delete(
          this.#keys.dead(m.deadAt!, id),
        );
        this.#count(op, "dead", -1);
        return op;
      });
      if (res.ok) n++;
    }
    return n;
  }

  /** Counts per state and the age of the oldest ready message. */
  async stats(): Promise<QueueStats> {
    const states: QueueCountState[] = ["ready", "delayed", "inflight", "dead"];
    const counts = await this.#kv.getMany<Deno.KvU64[]>(
      states.map((s) => this.#keys.count(s)),
    );
    const n = (i: number) => {
      const v = counts[i].value?.value ?? 0n;
      return Number(v >= U64 / 2n ? 0n : v); // a transient wrap below zero reads as 0
    };
    let oldest = Infinity;
    await Promise.all(Array.from({ length: 10 }, async (_, p) => {
      for await (
        const e of this.#kv.list<string[]>({
          prefix: [...this.#keys.readyPrefix, p],
        }, { limit: 1 })
      ) {
        const m = await this.get(e.value[0]);
        if (m?.state === "ready") oldest = Math.min(oldest, m.availableAt);
      }
    }));
    return {
      ready: n(0),
      delayed: n(1),
      inflight: n(2),
      dead: n(3),
      oldestReadyAgeMs: oldest === Infinity
        ? 0
        : Math.max(0, this.#clock.now() - oldest),
    };
  }
}
