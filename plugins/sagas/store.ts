/**
 * Saga state in Deno KV, written after every transition of the machine, so
 * any node can continue what a dead node started.
 *
 * - `apply(id, input)` reads the state, runs the pure machine, and writes the
 *   new state with a check on the entry it read (two appliers never lose an
 *   update: the loser reads again) and, given a fence token, on the
 *   consensus plugin's fencing record (a deposed leader's write fails with
 *   {@linkcode FencedError} inside KV, whatever its clock believes).
 * - The same commit keeps the indexes: open sagas, due timers (a `schedule`
 *   command writes one, its `due` input removes it) and dead-lettered
 *   compensations for an operator.
 *
 * @module
 */
import { fenceCheck, type FenceToken } from "../../core/state/fence.ts";
import { sagaKeys } from "../../core/state/keys.ts";
import { PlexusError } from "../../core/plugin.ts";
import {
  applyInput,
  type SagaCommand,
  type SagaDef,
  type SagaInput,
  type SagaState,
  startSaga,
  type Transition,
} from "./machine.ts";

export type { Transition };

/** A write refused because this node's leadership term ended. */
export class FencedError extends PlexusError {
  override name = "FencedError";
  /** `message` names the saga and the epoch. */
  constructor(message: string) {
    super("fenced", message, { retryable: true, status: 503 });
  }
}

/** A due timer: `input` for `saga` at `at`. */
export interface DueTimer {
  saga: string;
  step: string;
  at: number;
}

/** A compensation given up on, for an operator. */
export interface DeadLetter {
  /** The saga's id. */
  saga: string;
  /** The step whose compensation was given up on. */
  step: string;
  /** The last attempt's error. */
  error: string;
  /** When, wall-clock ms. */
  at: number;
}

/** A transition as the store wrote it, with the state it replaced. */
export interface AppliedTransition extends Transition {
  /** The state before the input (null for a start). */
  before: SagaState | null;
}

/** Options of {@linkcode SagaStore.start} and {@linkcode SagaStore.apply}. */
export interface WriteOptions {
  /** The saga's input (start only). */
  input?: unknown;
  /**
   * Also mark the saga for the leader to drive (a write by a node that does
   * not lead: the leader's sweep picks the mark up and carries out the
   * commands).
   */
  kick?: boolean;
}

/** A page of sagas. */
export interface SagaPage {
  /** The sagas of this page. */
  sagas: SagaState[];
  /** Pass back for the next page; absent on the last. */
  cursor?: string;
}

/** The store. */
export interface SagaStore {
  /** Starts saga `id` (refused if it exists); returns the commands to carry out. */
  start(
    id: string,
    def: SagaDef,
    now: number,
    fence?: FenceToken,
    options?: WriteOptions,
  ): Promise<AppliedTransition>;
  /** The saga's state, or null. */
  get(id: string): Promise<SagaState | null>;
  /**
   * Applies `input` at `now` and writes the result; null when the saga does
   * not exist. Retries on a conflicting writer; throws FencedError when the
   * fence moved.
   */
  apply(
    id: string,
    input: SagaInput,
    now: number,
    fence?: FenceToken,
    options?: WriteOptions,
  ): Promise<AppliedTransition | null>;
  /** Ids of sagas not finished. */
  open(): Promise<string[]>;
  /** Timers due at or before `now`, oldest first. */
  due(now: number, limit?: number): Promise<DueTimer[]>;
  /** Every dead-lettered compensation. */
  deadLetters(): Promise<DeadLetter[]>;
  /** Sagas marked for the leader to drive (see {@linkcode WriteOptions.kick}). */
  kicks(limit?: number): Promise<{ id: string; versionstamp: string }[]>;
  /** Removes the mark, unless it was set again since `versionstamp`. */
  unkick(id: string, versionstamp: string): Promise<void>;
  /**
   * Deletes sagas that finished before `before` (ms), with their dead
   * letters, at most `limit`; returns how many.
   */
  trim(before: number, limit?: number): Promise<number>;
  /** Sagas by id order, optionally of one status, a page at a time. */
  list(
    options?: { status?: string; limit?: number; cursor?: string },
  ): Promise<SagaPage>;
}

const FINISHED = new Set(["completed", "compensated", "compensation-failed"]);

function index(
  op: Deno.AtomicOperation,
  before: SagaState | null,
  t: Transition,
  now: number,
) {
  const k = sagaKeys;
  const s = t.state;
  op.set(k.saga(s.id), s);
  if (before?.status !== s.status) {
    if (before) op.delete(k.status(before.status, s.id));
    op.set(k.status(s.status, s.id), null);
  }
  if (FINISHED.has(s.status)) {
    op.delete(k.open(s.id));
    if (!before || !FINISHED.has(before.status)) {
      op.set(k.done(s.updatedAt, s.id), null);
    }
  } else if (!before || FINISHED.has(before.status)) {
    // Started, or reopened by an operator's retry of a dead letter.
    if (before) op.delete(k.done(before.updatedAt, s.id));
    op.set(k.open(s.id), { createdAt: s.createdAt });
  }
  // Timers the machine no longer waits for are dropped.
  if (before) {
    for (const [step, st] of Object.entries(before.steps)) {
      if (st.dueAt !== undefined && s.steps[step].dueAt !== st.dueAt) {
        op.delete(k.timer(st.dueAt, s.id, step));
      }
    }
  }
  // A step undone now has no dead letter (one an operator retried).
  for (const [step, st] of Object.entries(s.steps)) {
    if (
      st.status === "compensated" && before?.steps[step].status !== st.status
    ) {
      op.delete(k.dead(s.id, step));
    }
  }
  for (const c of t.commands as SagaCommand[]) {
    if (c.type === "schedule") op.set(k.timer(c.at, s.id, c.step), null);
    if (c.type === "dead-letter") {
      op.set(k.dead(s.id, c.step), { error: c.error, at: now });
    }
  }
}

/**
 * Creates the store over the raw `kv` (fence checks need unscoped keys).
 *
 * @example Usage
 * ```ts
 * import { createSagaStore } from "./store.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const store = createSagaStore(kv);
 * const retry = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
 * const step = { id: "a", run: { kind: "task" as const, type: "a" }, timeoutMs: 1000, retry, compensationRetry: retry };
 * await store.start("s1", { name: "one", groups: [[step]] }, 0);
 * await store.apply("s1", { type: "succeeded", step: "a", attempt: 1 }, 5);
 * assert.equal((await store.get("s1"))?.status, "completed");
 * assert.deepEqual(await store.open(), []);
 * kv.close();
 * ```
 */
export function createSagaStore(kv: Deno.Kv): SagaStore {
  const k = sagaKeys;
  const fenced = (id: string, fence: FenceToken) =>
    new FencedError(
      `saga '${id}': this node's leadership (epoch ${fence.epoch}) ended; the write was refused`,
    );
  const fenceStill = async (fence: FenceToken) =>
    (await kv.get(fenceCheck(fence).key)).versionstamp === fence.versionstamp;
  return {
    async start(id, def, now, fence, options) {
      const t = startSaga(id, def, now, options?.input);
      const op = kv.atomic().check({ key: k.saga(id), versionstamp: null });
      if (fence) op.check(fenceCheck(fence));
      index(op, null, t, now);
      if (options?.kick) op.set(k.kick(id), null);
      const res = await op.commit();
      if (!res.ok) {
        if (fence && !await fenceStill(fence)) throw fenced(id, fence);
        throw new PlexusError("conflict", `saga '${id}' exists already`, {
          status: 409,
        });
      }
      return { ...t, before: null };
    },
    async get(id) {
      return (await kv.get<SagaState>(k.saga(id))).value;
    },
    async apply(id, input, now, fence, options) {
      for (;;) {
        const entry = await kv.get<SagaState>(k.saga(id));
        if (!entry.value) return null;
        const t = applyInput(entry.value, input, now);
        if (t.state === entry.value) return { ...t, before: entry.value };
        const op = kv.atomic().check(entry);
        if (fence) op.check(fenceCheck(fence));
        index(op, entry.value, t, now);
        if (options?.kick) op.set(k.kick(id), null);
        const res = await op.commit();
        if (res.ok) return { ...t, before: entry.value };
        if (fence && !await fenceStill(fence)) throw fenced(id, fence);
        // Another writer moved the saga on: apply to what it wrote.
      }
    },
    async open() {
      const out: string[] = [];
      for await (const e of kv.list({ prefix: k.openPrefix })) {
        out.push(e.key.at(-1) as string);
      }
      return out;
    },
    async due(now, limit = 100) {
      const out: DueTimer[] = [];
      for await (
        const e of kv.list({
          start: k.timerPrefix,
          end: [...k.timerPrefix, now + 1],
        }, { limit })
      ) {
        const [at, saga, step] = e.key.slice(-3) as [number, string, string];
        out.push({ saga, step, at });
      }
      return out;
    },
    async deadLetters() {
      const out: DeadLetter[] = [];
      for await (
        const e of kv.list<{ error: string; at: number }>({
          prefix: k.deadPrefix,
        })
      ) {
        const [saga, step] = e.key.slice(-2) as [string, string];
        out.push({ saga, step, ...e.value });
      }
      return out;
    },
    async kicks(limit = 100) {
      const out: { id: string; versionstamp: string }[] = [];
      for await (const e of kv.list({ prefix: k.kickPrefix }, { limit })) {
        out.push({ id: e.key.at(-1) as string, versionstamp: e.versionstamp });
      }
      return out;
    },
    async unkick(id, versionstamp) {
      await kv.atomic().check({ key: k.kick(id), versionstamp })
        .delete(k.kick(id)).commit();
    },
    async trim(before, limit = 500) {
      let n = 0;
      for await (
        const e of kv.list({
          start: k.donePrefix,
          end: [...k.donePrefix, before],
        }, { limit })
      ) {
        const id = e.key.at(-1) as string;
        const op = kv.atomic().delete(e.key).delete(k.saga(id))
          .delete(k.kick(id));
        for (const status of FINISHED) op.delete(k.status(status, id));
        for await (const d of kv.list({ prefix: [...k.deadPrefix, id] })) {
          op.delete(d.key);
        }
        await op.commit();
        n++;
      }
      return n;
    },
    async list(options = {}) {
      const limit = options.limit ?? 100;
      // By id, or through the status index (ids of one status, in order).
      const prefix = options.status
        ? [...k.statusPrefix, options.status]
        : k.sagaPrefix;
      const iter = kv.list<SagaState>({ prefix }, {
        cursor: options.cursor,
        limit,
        batchSize: Math.min(500, limit),
      });
      const entries = await Array.fromAsync(iter);
      let sagas: SagaState[];
      if (options.status) {
        const ids = entries.map((e) => e.key.at(-1) as string);
        sagas = [];
        for (let i = 0; i < ids.length; i += 10) {
          const got = await kv.getMany<SagaState[]>(
            ids.slice(i, i + 10).map((id) => k.saga(id)),
          );
          // A saga that moved on since the index was read is left out.
          for (const g of got) {
            if (g.value?.status === options.status) sagas.push(g.value);
          }
        }
      } else sagas = entries.map((e) => e.value);
      let cursor: string | undefined;
      if (entries.length === limit) {
        cursor = iter.cursor;
        // A cursor only when something follows.
        const more = kv.list({ prefix }, { cursor, limit: 1 });
        if ((await more.next()).done) cursor = undefined;
      }
      return cursor ? { sagas, cursor } : { sagas };
    },
  };
}
