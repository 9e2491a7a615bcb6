/**
 * The saga driver: carries out the machine's commands on this node and feeds
 * their outcomes back through the store.
 *
 * - `task` and `capability` steps are submitted to the task service with
 *   the idempotency key `{step key}:{attempt}` (so a re-issued command after
 *   a takeover does not submit twice) and the step's key in the payload
 *   (`{saga: {id, step, idempotencyKey}, input}`), for handlers to apply
 *   their effect once; the driver polls the task until it is done or dead.
 * - `function` steps call a function a plugin registered by name.
 * - An attempt not finished within the step's `timeoutMs` fails.
 * - Due retry timers are swept every `tickMs` while `leads()` says so;
 *   `resume()` re-issues what open sagas had in flight (a node taking over).
 *
 * @module
 */
import type { TaskService } from "../../core/tasks.ts";
import type { FenceToken } from "../../core/state/fence.ts";
import { resumeSaga, type SagaCommand, type SagaDef } from "./machine.ts";
import type { SagaStore } from "./store.ts";

/** A step implemented in code by a plugin. */
export type SagaFunction = (
  input: unknown,
  ctx: { sagaId: string; step: string; idempotencyKey: string },
) => Promise<unknown>;

/** Options for {@linkcode createSagaDriver}. */
export interface SagaDriverOptions {
  store: SagaStore;
  tasks: TaskService;
  /** Functions steps may name. */
  functions?: Map<string, SagaFunction>;
  /** Whether this node drives sagas now (the leader). @default {() => true} */
  leads?: () => boolean;
  /** The fence token of this node's term, if any. */
  fence?: () => FenceToken | undefined;
  /** Wall clock. @default {Date.now} */
  now?: () => number;
  /** Task polling and timer sweep period, ms. @default {50} */
  tickMs?: number;
  /** Told about failures of the driver itself. */
  onError?: (err: unknown) => void;
}

/** The driver. */
export interface SagaDriver {
  /** Starts a saga and its first steps. */
  submit(id: string, def: SagaDef): Promise<void>;
  /** Re-issues what every open saga had in flight. */
  resume(): Promise<void>;
  /** Resolves when saga `id` has finished (polls the store). */
  finished(id: string, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

const FINISHED = new Set(["completed", "compensated", "compensation-failed"]);

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
  let stopped = false;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  const track = (p: Promise<void>) => {
    const q = p.catch((err) => options.onError?.(err)).finally(() =>
      inflight.delete(q)
    );
    inflight.add(q);
  };

  /** Runs one action to its outcome: the result, or throws. */
  const perform = async (
    sagaId: string,
    c: SagaCommand & { type: "run" | "compensate" },
  ): Promise<unknown> => {
    const a = c.action;
    const ctx = { sagaId, step: c.step, idempotencyKey: c.idempotencyKey };
    if (a.kind === "function") {
      const fn = options.functions?.get(a.name);
      if (!fn) throw new Error(`no saga function '${a.name}' on this node`);
      return await fn(a.input, ctx);
    }
    const { id } = await tasks.submit({
      type: a.kind === "task" ? a.type : "saga.step",
      ...(a.kind === "capability" ? { capability: a.capability } : {}),
      payload: { saga: ctx, input: a.payload ?? null },
      idempotencyKey: `${c.idempotencyKey}:${c.attempt}`,
    });
    for (;;) {
      const view = await tasks.get(id);
      if (view?.status === "done") return view.result;
      if (view?.status === "dead") {
        throw new Error(`task ${id}: ${view.error ?? "dead"}`);
      }
      if (stopped) throw new Error("the saga driver stopped");
      await sleep(tick);
    }
  };

  const execute = (sagaId: string, commands: SagaCommand[]) => {
    for (const c of commands) {
      if (c.type !== "run" && c.type !== "compensate") continue;
      track((async () => {
        let outcome: { ok: true; result: unknown } | {
          ok: false;
          error: string;
        };
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          const result = await Promise.race([
            perform(sagaId, c),
            new Promise<never>((_, reject) =>
              timer = setTimeout(
                () => reject(new Error(`timed out after ${c.timeoutMs} ms`)),
                c.timeoutMs,
              )
            ),
          ]);
          outcome = { ok: true, result };
        } catch (err) {
          outcome = {
            ok: false,
            error: (err as Error)?.message ?? String(err),
          };
        } finally {
          clearTimeout(timer);
        }
        if (stopped) return;
        const input = c.type === "run"
          ? outcome.ok
            ? {
              type: "succeeded" as const,
              step: c.step,
              attempt: c.attempt,
              result: outcome.result,
            }
            : {
              type: "failed" as const,
              step: c.step,
              attempt: c.attempt,
              error: outcome.error,
            }
          : outcome.ok
          ? {
            type: "compensation-succeeded" as const,
            step: c.step,
            attempt: c.attempt,
          }
          : {
            type: "compensation-failed" as const,
            step: c.step,
            attempt: c.attempt,
            error: outcome.error,
          };
        const t = await store.apply(sagaId, input, now(), options.fence?.());
        if (t) execute(sagaId, t.commands);
      })());
    }
  };

  const sweep = async () => {
    while (!stopped) {
      if (leads()) {
        try {
          for (const d of await store.due(now())) {
            const t = await store.apply(
              d.saga,
              { type: "due", step: d.step },
              now(),
              options.fence?.(),
            );
            if (t) execute(d.saga, t.commands);
          }
        } catch (err) {
          options.onError?.(err);
        }
      }
      await sleep(tick);
    }
  };
  const sweeping = sweep();

  return {
    async submit(id, def) {
      const t = await store.start(id, def, now(), options.fence?.());
      execute(id, t.commands);
    },
    async resume() {
      for (const id of await store.open()) {
        const s = await store.get(id);
        if (s) {
          execute(
            id,
            resumeSaga(s).filter((c) => c.type !== "schedule"),
          );
        }
      }
    },
    async finished(id, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const s = await store.get(id);
        if (s && FINISHED.has(s.status)) return s.status;
        if (Date.now() > until) {
          throw new Error(
            `saga '${id}' not finished after ${timeoutMs} ms (${s?.status})`,
          );
        }
        await sleep(tick);
      }
    },
    async stop() {
      stopped = true;
      await sweeping;
      await Promise.allSettled([...inflight]);
    },
  };
}
