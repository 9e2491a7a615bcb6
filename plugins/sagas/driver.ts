/**
 * The saga driver: carries out the machine's commands on this node and feeds
 * their outcomes back through the store.
 *
 * - `task` and `capability` steps are submitted to the task service with
 *   the idempotency key `{step key}:{attempt}` (so a re-issued command after
 *   a takeover does not submit twice) and the step's key in the payload
 *   (`{saga: {id, step, idempotencyKey, attempt}, input, sagaInput}`), for
 *   handlers to apply their effect once; the driver polls the task until it
 *   is done or dead (every tick, backing off to every 8 ticks). A capability step is a task with `capability` set: the
 *   task service hands it to an agent offering that capability.
 * - `function` steps call a function a plugin registered by name.
 * - An attempt not finished within the step's `timeoutMs` fails.
 * - A command already in flight on this node is not started twice (a
 *   resume or a kick re-issues what is open).
 * - Due retry timers and sagas other nodes started are swept every `tickMs`
 *   while `leads()` says so; when it turns true, `resume()` re-issues what
 *   open sagas had in flight (a node taking over).
 * - A write refused by the fence (this node's term ended) stops the work
 *   it belonged to: the new leader resumes it.
 *
 * @module
 */
import { TaskInputError, type TaskService } from "../../core/tasks.ts";
import { PlexusError } from "../../core/plugin.ts";
import { type FenceToken, NotLeaderError } from "../../core/state/fence.ts";
import {
  resumeSaga,
  type SagaCommand,
  type SagaDef,
  type SagaInput,
  type SagaState,
} from "./machine.ts";
import {
  type AppliedTransition,
  FencedError,
  type SagaStore,
} from "./store.ts";

/** What a function step is told besides its input. */
export interface SagaFunctionContext {
  /** The saga's id. */
  sagaId: string;
  /** The step's id. */
  step: string;
  /** `{sagaId}:{step}` (`:compensate` for a compensation): the same on every attempt and node. */
  idempotencyKey: string;
  /** Attempt number, from 1. */
  attempt: number;
  /** Whether this call undoes the step. */
  compensating: boolean;
  /** The input the saga was started with. */
  sagaInput: unknown;
  /** Results of the steps done so far, by step id. */
  results: Record<string, unknown>;
}

/** A step implemented in code by a plugin: resolves with the step's result, rejects to fail it. */
export type SagaFunction = (
  input: unknown,
  ctx: SagaFunctionContext,
) => Promise<unknown>;

/** Options for {@linkcode createSagaDriver}. */
export interface SagaDriverOptions {
  store: SagaStore;
  tasks: TaskService;
  /** Functions steps may name (read at call time: later registrations count). */
  functions?: Map<string, SagaFunction>;
  /** Whether this node drives sagas now (the leader). @default {() => true} */
  leads?: () => boolean;
  /** The fence token of this node's term, if any (may throw when not leading). */
  fence?: () => FenceToken | undefined;
  /** Wall clock. @default {Date.now} */
  now?: () => number;
  /** Task polling and timer sweep period, ms. @default {50} */
  tickMs?: number;
  /**
   * Resume open sagas whenever `leads()` turns true (checked every tick, so
   * the order plugins start in does not matter). @default {true}
   */
  resumeOnLead?: boolean;
  /**
   * How often the leader also re-issues, for every open saga, what nobody
   * on this node is running (an outcome lost when a term flickered between
   * two ticks), ms. @default {5000}
   */
  resumeEveryMs?: number;
  /** Told about every transition written (events, metrics). */
  onTransition?: (t: AppliedTransition) => void;
  /** Told about failures of the driver itself. */
  onError?: (err: unknown) => void;
}

/** The driver. */
export interface SagaDriver {
  /** Starts a saga and its first steps (on a node not leading: marks it for the leader). */
  submit(id: string, def: SagaDef, input?: unknown): Promise<void>;
  /** Applies an input and carries out what it calls for (or marks it for the leader). */
  apply(id: string, input: SagaInput): Promise<AppliedTransition | null>;
  /** Re-issues what every open saga had in flight. */
  resume(): Promise<void>;
  /** Resolves when saga `id` has finished (polls the store). */
  finished(id: string, timeoutMs?: number): Promise<string>;
  /** Commands running on this node now. */
  inflight(): number;
  stop(): Promise<void>;
}

const FINISHED = new Set(["completed", "compensated", "compensation-failed"]);

/** How long a written outcome keeps its command from being re-issued here, ms. */
const SETTLED_MS = 60_000;

/**
 * Largest result a step may return, serialized: the saga's whole state is
 * one KV value (64 KiB), results included. A larger one fails the attempt.
 */
export const MAX_RESULT_BYTES = 4096;

type Work = SagaCommand & { type: "run" | "compensate" };

/**
 * Creates the driver.
 *
 * @example Usage
 * ```ts ignore
 * const driver = createSagaDriver({ store, tasks: ctx.kernel.get("tasks:local") });
 * await driver.submit("order-1", def);
 * ```
 */
export function createSagaDriver(options: SagaDriverOptions): SagaDriver {
  const { store, tasks } = options;
  const now = options.now ?? Date.now;
  const leads = options.leads ?? (() => true);
  const tick = options.tickMs ?? 50;
  const inflight = new Set<Promise<void>>();
  /** `{saga}|{type}|{step}|{attempt}` of commands running here. */
  const running = new Set<string>();
  /**
   * Commands whose outcome this node wrote, with when: a resume that read
   * the state just before that write would run them again for nothing (a
   * function step twice). Kept a minute.
   */
  const settled = new Map<string, number>();
  let stopped = false;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const fence = () => options.fence?.();
  const resumeEveryMs = options.resumeEveryMs ?? 5000;
  /** An outcome write was refused for leadership: resume at the next tick. */
  let lostWrite = false;
  /**
   * This node's fence token when it leads (undefined: it leads with no
   * fence to offer), null when it does not.
   */
  const leaderToken = (): FenceToken | undefined | null => {
    if (!leads()) return null;
    try {
      return fence();
    } catch {
      return null; // NotLeaderError: the term ended since leads() said so
    }
  };

  const track = (p: Promise<void>) => {
    const q = p.catch((err) => options.onError?.(err)).finally(() =>
      inflight.delete(q)
    );
    inflight.add(q);
  };

  const results = (s: SagaState) => {
    const out: Record<string, unknown> = {};
    for (const [id, st] of Object.entries(s.steps)) {
      if (st.result !== undefined) out[id] = st.result;
    }
    return out;
  };

  /**
   * `fn` again after a failure of the store underneath (a busy KV, a
   * dropped connection) until `until`: submitting is idempotent by key and
   * reading is harmless, so such a failure is not the step's. A refused
   * submission (TaskInputError: an unknown type) is final.
   */
  const transient = async <T>(until: number, fn: () => Promise<T>) => {
    for (let wait = tick;; wait = Math.min(wait * 2, 8 * tick)) {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof TaskInputError || stopped || Date.now() > until) {
          throw err;
        }
        options.onError?.(err);
        await sleep(wait);
      }
    }
  };

  /** Runs one action to its outcome: the result, or throws. */
  const perform = async (s: SagaState, c: Work): Promise<unknown> => {
    const a = c.action;
    if (a.kind === "function") {
      const fn = options.functions?.get(a.name);
      if (!fn) throw new Error(`no saga function '${a.name}' on this node`);
      return await fn(a.input, {
        sagaId: s.id,
        step: c.step,
        idempotencyKey: c.idempotencyKey,
        attempt: c.attempt,
        compensating: c.type === "compensate",
        sagaInput: s.input,
        results: results(s),
      });
    }
    const until = Date.now() + c.timeoutMs;
    const { id } = await transient(until, () =>
      tasks.submit({
        type: a.kind === "task" ? a.type : "saga.step",
        ...(a.kind === "capability" ? { capability: a.capability } : {}),
        payload: {
          saga: {
            id: s.id,
            step: c.step,
            idempotencyKey: c.idempotencyKey,
            attempt: c.attempt,
            compensating: c.type === "compensate",
          },
          input: a.payload ?? null,
          ...(s.input === undefined ? {} : { sagaInput: s.input }),
        },
        idempotencyKey: `${c.idempotencyKey}:${c.attempt}`,
      }));
    // Polled every tick at first, then less often (up to 8 ticks): a
    // thousand sagas waiting on slow tasks should not read KV flat out.
    for (let wait = tick;; wait = Math.min(wait * 2, 8 * tick)) {
      const view = await transient(until, () => tasks.get(id));
      if (view?.status === "done") return view.result;
      if (view?.status === "dead") {
        throw new Error(`task ${id}: ${view.error ?? "dead"}`);
      }
      // Cancelled through the tasks API: the attempt failed, as when dead
      // (not a wait until the step's timeout).
      if (view?.status === "cancelled") {
        throw new Error(
          `task ${id} was cancelled${view.reason ? `: ${view.reason}` : ""}`,
        );
      }
      if (stopped) throw new Error("the saga driver stopped");
      await sleep(wait);
    }
  };

  const outcomeInput = (
    c: Work,
    outcome: { ok: true; result: unknown } | { ok: false; error: string },
  ): SagaInput =>
    c.type === "run"
      ? outcome.ok
        ? {
          type: "succeeded",
          step: c.step,
          attempt: c.attempt,
          result: outcome.result,
        }
        : {
          type: "failed",
          step: c.step,
          attempt: c.attempt,
          error: outcome.error,
        }
      : outcome.ok
      ? { type: "compensation-succeeded", step: c.step, attempt: c.attempt }
      : {
        type: "compensation-failed",
        step: c.step,
        attempt: c.attempt,
        error: outcome.error,
      };

  /**
   * The tail of each saga's writes from this node. A KV commit can be seen
   * by other readers before its own promise resolves (here, a retry timer
   * swept, run and failed before the write that set it returned), so
   * without this a saga's transitions, and their events, could be told out
   * of order. Each write waits for the one before it.
   */
  const chains = new Map<string, Promise<void>>();
  const serial = <T>(id: string, fn: () => Promise<T>): Promise<T> => {
    const run = (chains.get(id) ?? Promise.resolve()).then(fn);
    const tail = run.then(() => {}, () => {});
    chains.set(id, tail);
    void tail.then(() => {
      if (chains.get(id) === tail) chains.delete(id);
    });
    return run;
  };

  /** Writes `input` fenced, tells the observer, carries out the commands. */
  const drive = (id: string, input: SagaInput) =>
    serial(id, () => write(id, input));
  const write = async (id: string, input: SagaInput) => {
    let t: AppliedTransition | null;
    try {
      t = await store.apply(id, input, now(), fence());
    } catch (err) {
      // The term ended (or flickered) under this write: the outcome is
      // lost here, and whoever leads next, this node included, must
      // re-issue the command to get it again.
      if (err instanceof FencedError || err instanceof NotLeaderError) {
        lostWrite = true;
      }
      throw err;
    }
    if (!t) return null;
    if (t.state !== t.before) options.onTransition?.(t);
    execute(t.state, t.commands);
    return t;
  };

  const execute = (s: SagaState, commands: SagaCommand[]) => {
    for (const c of commands) {
      if (c.type !== "run" && c.type !== "compensate") continue;
      const key = `${s.id}|${c.type}|${c.step}|${c.attempt}`;
      if (running.has(key) || settled.has(key) || stopped) continue;
      running.add(key);
      track((async () => {
        let outcome: { ok: true; result: unknown } | {
          ok: false;
          error: string;
        };
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          const result = await Promise.race([
            perform(s, c),
            new Promise<never>((_, reject) =>
              timer = setTimeout(
                () => reject(new Error(`timed out after ${c.timeoutMs} ms`)),
                c.timeoutMs,
              )
            ),
          ]);
          const size = result === undefined
            ? 0
            : JSON.stringify(result)?.length ?? 0;
          outcome = size > MAX_RESULT_BYTES
            ? {
              ok: false,
              error:
                `the step's result is ${size} bytes; a saga keeps at most ${MAX_RESULT_BYTES} per step (return a reference instead)`,
            }
            : { ok: true, result };
        } catch (err) {
          outcome = {
            ok: false,
            error: (err as Error)?.message ?? String(err),
          };
        } finally {
          clearTimeout(timer);
        }
        try {
          if (stopped) return;
          try {
            await drive(s.id, outcomeInput(c, outcome));
            settled.set(key, performance.now());
          } catch (err) {
            // A result that would push the state past one KV value fails
            // the attempt instead of leaving the saga stuck.
            if (!outcome.ok || !/too large/i.test(String(err))) throw err;
            await drive(
              s.id,
              outcomeInput(c, {
                ok: false,
                error:
                  `the saga's state would be over one KV value with this result: ${
                    (err as Error).message
                  }`,
              }),
            );
          }
        } finally {
          running.delete(key);
        }
      })());
    }
  };

  /** Carries out what an open saga has in flight (timers stay with the sweep). */
  const resumeOne = async (id: string) => {
    const s = await store.get(id);
    if (s && !FINISHED.has(s.status)) {
      execute(s, resumeSaga(s).filter((c) => c.type !== "schedule"));
    }
  };

  let sweepTimer: ReturnType<typeof setTimeout> | undefined;
  let wakeSweep: (() => void) | undefined;
  const sweep = async () => {
    let led = false;
    let resumedAt = 0;
    while (!stopped) {
      const leading = leads();
      const stale = performance.now() - resumedAt >= resumeEveryMs;
      if (
        leading && (!led || lostWrite || stale) &&
        options.resumeOnLead !== false
      ) {
        // Leadership gained (or the node started leading), an outcome lost
        // to a term that ended under it, or the periodic pass: take over
        // what open sagas have in flight and nobody here is running.
        lostWrite = false;
        resumedAt = performance.now();
        try {
          await resume();
          led = true;
        } catch (err) {
          options.onError?.(err);
        }
      } else if (!leading) led = false;
      if (leading) {
        try {
          for (const { id, versionstamp } of await store.kicks()) {
            await resumeOne(id);
            await store.unkick(id, versionstamp);
          }
          for (const d of await store.due(now())) {
            await drive(d.saga, { type: "due", step: d.step });
          }
        } catch (err) {
          options.onError?.(err);
        }
      }
      if (stopped) break;
      await new Promise<void>((resolve) => {
        sweepTimer = setTimeout(resolve, tick);
        wakeSweep = resolve;
      });
    }
  };
  const resume = async () => {
    const old = performance.now() - SETTLED_MS;
    for (const [key, at] of settled) if (at < old) settled.delete(key);
    // 16 reads at a time: a thousand open sagas over a networked KV should
    // not hold the sweep (kicks, timers) for seconds.
    const ids = await store.open();
    for (let i = 0; i < ids.length && !stopped; i += 16) {
      await Promise.all(ids.slice(i, i + 16).map(resumeOne));
    }
  };
  const sweeping = sweep();

  return {
    // In the saga's chain too: a resume that reads the new saga before this
    // write's promise resolves may run its first step, and that step's
    // outcome must not be told before saga.started.
    submit: (id, def, input) =>
      serial(id, async () => {
        const token = leaderToken();
        let t: AppliedTransition;
        try {
          t = await store.start(id, def, now(), token ?? undefined, {
            input,
            kick: token === null,
          });
        } catch (err) {
          if (!(token !== null && err instanceof FencedError)) throw err;
          // The term ended under us: start it for whoever leads now.
          t = await store.start(id, def, now(), undefined, {
            input,
            kick: true,
          });
          options.onTransition?.(t);
          return;
        }
        options.onTransition?.(t);
        if (token !== null) execute(t.state, t.commands);
      }),
    async apply(id, input) {
      const token = leaderToken();
      if (token !== null) {
        try {
          return await drive(id, input);
        } catch (err) {
          if (!(err instanceof FencedError)) throw err;
        }
      }
      return await serial(id, async () => {
        const t = await store.apply(id, input, now(), undefined, {
          kick: true,
        });
        if (t && t.state !== t.before) options.onTransition?.(t);
        return t;
      });
    },
    resume,
    async finished(id, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const s = await store.get(id);
        if (!s) {
          throw new PlexusError(
            "not_found",
            `no saga '${id}' (never started, or deleted by retention)`,
            { status: 404 },
          );
        }
        if (FINISHED.has(s.status)) return s.status;
        if (Date.now() > until) {
          throw new PlexusError(
            "timeout",
            `saga '${id}' not finished after ${timeoutMs} ms (${s.status})`,
            { status: 504, retryable: true },
          );
        }
        await sleep(tick);
      }
    },
    inflight: () => running.size,
    async stop() {
      stopped = true;
      // The sweep's sleep ends now, not a tick later.
      clearTimeout(sweepTimer);
      wakeSweep?.();
      await sweeping;
      await Promise.allSettled([...inflight]);
    },
  };
}
