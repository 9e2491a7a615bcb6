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
 * - Wall-clock times (`availableAt`, `leaseUntil`) come from the injected
 *   clock; across machines, keep leases well above the clock skew.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import { type QueueCountState, queueKeys } from "./keys.ts";
import { retryLocked } from "./store.ts";

/** Where a message is in its life. */
export type MessageState = "ready" | "delayed" | "inflight" | "done" | "dead";

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
  finishedAt?: number;
  deadAt?: number;
  deadReason?: string;
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
  /** Message id; a random UUID by default. */
  id?: string;
}

/** Result of an enqueue. */
export interface Enqueued {
  id: string;
  /** True when an idempotency key matched an earlier enqueue. */
  deduplicated: boolean;
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
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

/** Options for {@linkcode DurableQueue}. */
export interface QueueOptions {
  clock?: Clock;
  /** How long finished messages stay readable (status lookups). @default {3600000} */
  doneRetentionMs?: number;
  /**
   * Items per atomic claim. Each item costs one check; KV Connect servers may
   * allow only 10 checks per operation. @default {10}
   */
  maxBatch?: number;
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

const MAX_ERRORS = 20;
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
    this.#maxBatch = options.maxBatch ?? 10;
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
  async #commit(
    build: () => Deno.AtomicOperation,
  ): Promise<
    { res: Deno.KvCommitResult | Deno.KvCommitError; retried: boolean }
  > {
    let tries = 0;
    const res = await retryLocked(() => {
      tries++;
      return build().commit();
    });
    return { res, retried: tries > 1 };
  }

  /** Adds a message; with an idempotency key, a repeat within the window returns the first id. */
  async enqueue(payload: T, options: EnqueueOptions = {}): Promise<Enqueued> {
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
    const id = options.id ?? crypto.randomUUID();
    const backoff = { baseMs: 1000, maxMs: 60_000, ...options.backoff };
    for (let tries = 0;; tries++) {
      const now = this.#clock.now();
      const msg: QueueMessage<T> = {
        id,
        queue: this.name,
        priority,
        payload,
        state: delayMs > 0 ? "delayed" : "ready",
        attempts: 0,
        maxAttempts,
        backoff,
        enqueuedAt: now,
        availableAt: now + delayMs,
        errors: [],
        ...(options.idempotencyKey !== undefined
          ? { idempotencyKey: options.idempotencyKey }
          : {}),
      };
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
        const op = this.#kv.atomic().check({
          key: this.#keys.msg(id),
          versionstamp: null,
        });
        if (idem) {
          op.check({ key: idem.key, versionstamp: idem.versionstamp })
            .set(idem.key, { id, until: now + idem.window }, {
              expireIn: idem.window,
            });
        }
        op.set(this.#keys.msg(id), msg);
        if (delayMs > 0) op.set(this.#keys.delayed(msg.availableAt, id), id);
        else {op.set(
            this.#keys.ready(priority, this.#kv.commitVersionstamp()),
            id,
          );}
        this.#count(op, delayMs > 0 ? "delayed" : "ready", 1);
        return op;
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
        (await this.get(id))?.enqueuedAt === now;
      if (res.ok || landed) {
        if (delayMs === 0) this.#wake();
        return { id, deduplicated: false };
      }
      if (options.idempotencyKey === undefined || tries > 20) {
        throw new Error(
          `Cannot enqueue on '${this.name}': message id '${id}' already exists`,
        );
      }
      // Lost a race on the idempotency key: read it again.
    }
  }

  /** Reads a message by id (any state), or null. */
  async get(id: string): Promise<QueueMessage<T> | null> {
    return (await this.#kv.get<QueueMessage<T>>(this.#keys.msg(id))).value;
  }

  /**
   * Claims up to `n` due messages for `leaseMs`, highest priority first.
   * Returns fewer (or none) when fewer are ready.
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
    const out: Delivery<T>[] = [];
    for (let round = 0; out.length < n && round < 4; round++) {
      const want = n - out.length;
      const entries: Deno.KvEntry<string>[] = [];
      for await (
        const e of this.#kv.list<string>({ prefix: this.#keys.readyPrefix }, {
          limit: want,
        })
      ) {
        entries.push(e);
      }
      if (entries.length === 0) break;
      // Try each batch whole; under contention fall back to one by one.
      for (let i = 0; i < entries.length; i += this.#maxBatch) {
        const chunk = entries.slice(i, i + this.#maxBatch);
        const claimed = await this.#claimBatch(chunk, leaseMs, consumer);
        if (claimed) out.push(...claimed);
        else {
          for (const e of chunk) {
            const one = await this.#claimBatch([e], leaseMs, consumer);
            if (one) out.push(...one);
          }
        }
      }
      if (entries.length < want) break;
    }
    return out;
  }

  async #claimBatch(
    entries: Deno.KvEntry<string>[],
    leaseMs: number,
    consumer: string,
  ): Promise<Delivery<T>[] | null> {
    const msgs = await this.#kv.getMany<QueueMessage<T>[]>(
      entries.map((e) => this.#keys.msg(e.value)),
    );
    const now = this.#clock.now();
    const claimed: QueueMessage<T>[] = [];
    entries.forEach((_e, i) => {
      const current = msgs[i].value;
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
    const { res, retried } = await this.#commit(() => {
      const op = this.#kv.atomic();
      for (const e of entries) {
        op.check({ key: e.key, versionstamp: e.versionstamp }).delete(e.key);
      }
      for (const m of claimed) {
        op.set(this.#keys.msg(m.id), m).set(
          this.#keys.inflight(m.leaseUntil!, m.id),
          m.id,
        );
      }
      this.#count(op, "ready", -claimed.length);
      this.#count(op, "inflight", claimed.length);
      return op;
    });
    if (res.ok) {
      return claimed.map((m) => this.#delivery(m, res.versionstamp, leaseMs));
    }
    if (!retried) return null;
    // The locked first try may have landed: our lease ids say what is ours.
    const after = await this.#kv.getMany<QueueMessage<T>[]>(
      claimed.map((m) => this.#keys.msg(m.id)),
    );
    const ours = after.filter((e, i) =>
      e.value?.leaseId === claimed[i].leaseId
    );
    if (ours.length === 0) return null;
    return ours.map((e) => this.#delivery(e.value!, e.versionstamp!, leaseMs));
  }

  #delivery(
    claimedMsg: QueueMessage<T>,
    versionstamp: string,
    leaseMs: number,
  ): Delivery<T> {
    let msg = claimedMsg;
    let vs = versionstamp;
    let settled = false;
    // Settles with a check on the versionstamp this holder last wrote, so a
    // holder whose lease was taken over fails instead of clobbering. One
    // transition at a time: a lease extension never races an ack.
    let chain: Promise<unknown> = Promise.resolve();
    const transition = (
      build: (m: QueueMessage<T>) => Deno.AtomicOperation,
      verb: string,
    ): Promise<void> => {
      const run = async () => {
        if (settled) {
          throw new Error(
            `Cannot ${verb} message '${msg.id}': it is already settled`,
          );
        }
        // Every record a builder writes spreads `m`, so it carries this tag:
        // after an ambiguous "database is locked" we can tell if it landed.
        const opId = crypto.randomUUID();
        const tagged = { ...msg, lastOp: opId };
        const { res, retried } = await this.#commit(() =>
          build(tagged).check({ key: this.#keys.msg(msg.id), versionstamp: vs })
        );
        if (res.ok) {
          vs = res.versionstamp;
          return;
        }
        if (retried) {
          const now = await this.#kv.get<QueueMessage<T>>(
            this.#keys.msg(msg.id),
          );
          if (now.value?.lastOp === opId) {
            vs = now.versionstamp!;
            return;
          }
        }
        throw new LeaseLostError(
          `Cannot ${verb} message '${msg.id}' on '${this.name}': its lease expired and it was taken back`,
        );
      };
      const p = chain.then(run);
      chain = p.catch(() => {});
      return p;
    };
    return {
      get id() {
        return msg.id;
      },
      get payload() {
        return msg.payload;
      },
      get attempts() {
        return msg.attempts;
      },
      get message() {
        return msg;
      },
      get settled() {
        return settled;
      },
      ack: async (result?: unknown) => {
        await transition((m) => {
          const done: QueueMessage<T> = {
            ...m,
            state: "done",
            finishedAt: this.#clock.now(),
            ...(result !== undefined ? { result } : {}),
          };
          delete done.leaseId;
          const op = this.#kv.atomic()
            .set(this.#keys.msg(m.id), done, { expireIn: this.#retention })
            .delete(this.#keys.inflight(m.leaseUntil!, m.id));
          this.#count(op, "inflight", -1);
          return op;
        }, "ack").catch((err) => tooLarge(err, `ack '${msg.id}'`));
        settled = true;
      },
      nak: async (delayMs?: number, error = "nak") => {
        await transition((m) => this.#retryOrDead(m, error, delayMs), "nak");
        settled = true;
      },
      term: async (reason: string) => {
        await transition((m) => this.#toDead(m, reason, "inflight"), "term");
        settled = true;
      },
      inProgress: async (extendMs = leaseMs) => {
        if (settled) return;
        let next = msg;
        await transition((m) => {
          next = { ...m, leaseUntil: this.#clock.now() + extendMs };
          return this.#kv.atomic()
            .delete(this.#keys.inflight(m.leaseUntil!, m.id))
            .set(this.#keys.msg(m.id), next)
            .set(this.#keys.inflight(next.leaseUntil!, m.id), m.id);
        }, "extend");
        msg = next;
      },
    };
  }

  #withError(m: QueueMessage<T>, error: string): AttemptError[] {
    const entry: AttemptError = {
      at: this.#clock.now(),
      attempt: m.attempts,
      error,
    };
    if (m.consumer) entry.consumer = m.consumer;
    return [...m.errors, entry].slice(-MAX_ERRORS);
  }

  /** From in-flight: back to ready/delayed, or to the DLQ when attempts are used up. */
  #retryOrDead(
    m: QueueMessage<T>,
    error: string,
    delayMs?: number,
  ): Deno.AtomicOperation {
    if (m.attempts >= m.maxAttempts) {
      return this.#toDead(
        { ...m, errors: this.#withError(m, error) },
        `max attempts (${m.maxAttempts}) reached`,
        "inflight",
        false,
      );
    }
    const delay = delayMs ??
      Math.min(m.backoff.maxMs, m.backoff.baseMs * 2 ** (m.attempts - 1));
    const now = this.#clock.now();
    const next: QueueMessage<T> = {
      ...m,
      state: delay > 0 ? "delayed" : "ready",
      availableAt: now + delay,
      errors: this.#withError(m, error),
    };
    delete next.leaseId;
    delete next.leaseUntil;
    const op = this.#kv.atomic()
      .delete(this.#keys.inflight(m.leaseUntil!, m.id))
      .set(this.#keys.msg(m.id), next);
    if (delay > 0) op.set(this.#keys.delayed(next.availableAt, m.id), m.id);
    else {
      op.set(this.#keys.ready(m.priority, this.#kv.commitVersionstamp()), m.id);
      queueMicrotask(() => this.#wake());
    }
    this.#count(op, "inflight", -1);
    this.#count(op, delay > 0 ? "delayed" : "ready", 1);
    return op;
  }

  #toDead(
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
      deadReason: reason,
      errors: addError ? this.#withError(m, reason) : m.errors,
    };
    delete dead.leaseId;
    delete dead.leaseUntil;
    const op = this.#kv.atomic()
      .set(this.#keys.msg(m.id), dead)
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
    const leases = this.#kv.list<string>({
      prefix: this.#keys.inflightPrefix,
      end: [...this.#keys.inflightPrefix, now],
    }, {
      limit,
    });
    for await (const e of leases) {
      const msgEntry = await this.#kv.get<QueueMessage<T>>(
        this.#keys.msg(e.value),
      );
      const m = msgEntry.value;
      const build = () =>
        (m && m.state === "inflight" && m.leaseUntil === e.key[3]
          ? this.#retryOrDead(
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
          op.set(this.#keys.msg(m.id), { ...m, state: "ready" })
            .set(
              this.#keys.ready(m.priority, this.#kv.commitVersionstamp()),
              m.id,
            );
          this.#count(op, "delayed", -1);
          this.#count(op, "ready", 1);
        }
        return op;
      };
      if ((await this.#commit(build)).res.ok && m) promoted++;
    }
    if (promoted > 0 || expired > 0) this.#wake();
    return { expired, promoted };
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
        .set(this.#keys.msg(id), next)
        .set(this.#keys.ready(m.priority, this.#kv.commitVersionstamp()), id);
      this.#count(op, "dead", -1);
      this.#count(op, "ready", 1);
      return op;
    });
    const ok = res.ok;
    if (ok) this.#wake();
    return ok;
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
        const e of this.#kv.list<string>({
          prefix: [...this.#keys.readyPrefix, p],
        }, { limit: 1 })
      ) {
        const m = await this.get(e.value);
        if (m) oldest = Math.min(oldest, m.availableAt);
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
