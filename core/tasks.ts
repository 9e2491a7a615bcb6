/**
 * Tasks: typed units of work submitted over HTTP to any node and run by some
 * node, on the durable queue `tasks`. Plugins add task types with
 * `kernel.get("tasks:local").register(type, handler)`; `echo`
 * and `sleep` are built in for demos and tests.
 *
 * When a consensus plugin is loaded only its leader sweeps expired leases
 * and promotes delayed tasks; without one every node sweeps (safe: sweeps
 * use check-and-set).
 *
 * @module
 */
import { z } from "zod";
import { type Clock, systemClock } from "./clock.ts";
import { PlexusError } from "./errors.ts";
import { describeIssues } from "./plugin.ts";
import type { Logger } from "./observe/logger.ts";
import { currentTraceparent, Kind, otelEnabled, span } from "./observe/otel.ts";
import type { MetricsRegistry } from "./observe/metrics.ts";
import { consume, type Consumer } from "./state/consumer.ts";
import type { TaskRouter, TaskRun } from "./task_router.ts";
import type { NodeEvents } from "./events.ts";
import { checkProgress } from "./task_progress.ts";
import {
  type Delivery,
  DurableQueue,
  type QueueMessage,
} from "./state/queue.ts";

/** What the queue carries for a task. */
export interface TaskBody {
  type: string;
  payload: unknown;
  key?: string;
  /** Run by a connected agent that offers this capability (handles `tasks.{capability}`). */
  capability?: string;
  /** The submitter's W3C traceparent (OTel on): the run continues its trace. */
  traceparent?: string;
}

/** The latest progress a task's handler reported (`GET /api/v1/tasks/{id}`). */
export interface TaskProgress {
  /** Done so far, 0 to 1. */
  fraction: number;
  message?: string;
  /** When it was reported, ISO 8601. */
  at: string;
  /** The attempt that reported it (always the task's latest). */
  attempt: number;
}

/** A task as `GET /api/v1/tasks/{id}` shows it. */
export interface TaskView {
  id: string;
  status: "ready" | "running" | "done" | "failed" | "dead" | "cancelled";
  attempts: number;
  type: string;
  node?: string;
  result?: unknown;
  error?: string;
  /** Why it was cancelled (status `cancelled`). */
  reason?: string;
  /** The latest progress its handler reported, if any. */
  progress?: TaskProgress;
}

/** What a task handler gets besides the payload. */
export interface TaskContext {
  id: string;
  attempt: number;
  /**
   * Aborted when the task is cancelled (`POST /api/v1/tasks/{id}/cancel`,
   * reason a {@linkcode TaskCancelledError}) or the node shuts down.
   */
  signal: AbortSignal;
  /**
   * Reports how far the task is: `fraction` in [0, 1] (a RangeError
   * otherwise), `message` up to 1024 characters. Emitted as `task.progress`
   * at most 10 times a second per task (the last report is always sent)
   * and shown by `GET /api/v1/tasks/{id}`.
   */
  progress(fraction: number, message?: string): void;
}

/**
 * Runs one task; the return value is its result.
 *
 * @example A handler reporting progress
 * ```ts ignore
 * tasks.register("resize", async (payload, ctx) => {
 *   for (let i = 0; i < 4; i++) {
 *     ctx.signal.throwIfAborted();
 *     await resizeOne(payload, i);
 *     ctx.progress((i + 1) / 4, `image ${i + 1} of 4`);
 *   }
 *   return { resized: 4 };
 * });
 * ```
 */
export type TaskHandler = (
  payload: unknown,
  ctx: TaskContext,
) => Promise<unknown>;

/** Options for {@linkcode createTaskService}. */
export interface TaskServiceOptions {
  nodeId: string;
  log: Logger;
  metrics: MetricsRegistry;
  clock?: Clock;
  /** True when this node should sweep (leader, or no consensus). @default {() => true} */
  sweeper?: () => boolean;
  /** Handlers running at once on this node. @default {8} */
  concurrency?: number;
  /** Lease per task, renewed while it runs. @default {30000} */
  leaseMs?: number;
  /** Attempts before a task is dead. @default {3} */
  maxAttempts?: number;
  /**
   * Largest result kept, in serialized bytes; a task whose handler returns
   * more is dead at once with an error naming both sizes. Results too large
   * for one KV value are stored in chunks (see docs/state.md).
   * @default {4194304}
   */
  maxResultBytes?: number;
  /**
   * 0: a submit or completion resolves once durable. N > 0: the queue's
   * opt-in group commit (`commit: { windowMs: N }`, see docs/state.md): a
   * crash loses at most what was acknowledged in the last N ms; `stop()`
   * commits what waits.
   * @default {0}
   */
  commitWindowMs?: number;
  /**
   * The router that decides where each claimed task runs (read per task);
   * undefined runs it here. See `core/task_router.ts`.
   */
  router?: () => TaskRouter | undefined;
  /**
   * Task types other live nodes handle; with a router, `submit` accepts
   * them too (only this node's own types have payload schemas to check).
   */
  clusterTypes?: () => Promise<string[]>;
  /**
   * Runs a capability task on one of the workers offering
   * `task.capability` here (the node picks one with its balancer, see
   * {@linkcode TaskService.workers}); rejects with {@linkcode NoAgentError}
   * when none does. Undefined: capability tasks cannot run here.
   */
  runOnAgent?: (task: TaskRun) => Promise<unknown>;
  /** Where `task.started|progress|completed|failed|cancelled` are emitted (`events:local`). */
  events?: NodeEvents;
  /**
   * How often a node running tasks checks KV for cancels of them made on
   * other nodes. @default {500}
   */
  cancelPollMs?: number;
}

/**
 * Runs capability tasks (`{capability}` submissions) on workers a plugin
 * holds: the agent gateway's connected agents. A plugin hands one to
 * {@linkcode TaskService.provideCapabilities}.
 */
export interface CapabilityExecutor {
  /** Capability → ids of the workers offering it here, now. */
  capabilities(): Record<string, string[]>;
  /** Runs `task` on worker `id`; rejects on failure or after `timeoutMs`. */
  run(
    id: string,
    task: TaskRun,
    options: { timeoutMs: number },
  ): Promise<unknown>;
}

/** One worker able to run a capability task, as {@linkcode TaskService.workers} lists it. */
export interface CapabilityWorker {
  /** The worker's id (an agent id), unique across executors. */
  id: string;
  /** Runs the task on this worker. */
  run(task: TaskRun, options: { timeoutMs: number }): Promise<unknown>;
}

/** Submission fields (the body of `POST /api/v1/tasks`). */
export interface TaskSubmission {
  type: string;
  payload?: unknown;
  key?: string;
  /** Run by an agent offering this capability instead of a node's handler. */
  capability?: string;
  priority?: number;
  idempotencyKey?: string;
}

/** The task service. */
export interface TaskService {
  readonly queue: DurableQueue<TaskBody>;
  /** Adds a task type; `schema` validates payloads at submit time (bad ones get 400). */
  register(type: string, handler: TaskHandler, schema?: z.ZodType): void;
  types(): string[];
  submit(
    task: TaskSubmission,
  ): Promise<{ id: string; status: TaskView["status"]; deduplicated: boolean }>;
  get(id: string): Promise<TaskView | null>;
  /**
   * Cancels a task: a ready or delayed one never runs; a running one's
   * handler sees `ctx.signal` aborted (here at once, on another node within
   * `cancelPollMs`) and is not retried. Emits `task.cancelled` once.
   * Rejects with a {@linkcode TaskCancelError}: 404 unknown, 409 finished.
   */
  cancel(id: string, reason?: string): Promise<TaskView>;
  /** Tasks running on this node now. */
  running(): number;
  /**
   * Runs one task here, for a node that routed it to this one; a
   * {@linkcode TaskInputError} when this node has no handler for its type.
   */
  runHere(task: TaskRun): Promise<unknown>;
  /**
   * Lets a plugin run capability tasks on its workers (the gateway's agents);
   * returns the function that withdraws them (call it on stop).
   */
  provideCapabilities(executor: CapabilityExecutor): () => void;
  /** Capability → worker ids on this node, over every executor. */
  capabilities(): Record<string, string[]>;
  /** The workers on this node offering `capability`. */
  workers(capability: string): CapabilityWorker[];
  /** Starts working the queue on this node. */
  start(): void;
  stop(deadlineMs?: number): Promise<void>;
}

/** No agent connected to this node offers the task's capability (retryable: one may connect). */
export class NoAgentError extends PlexusError {
  override name = "NoAgentError";
  /** `message` names the capability and the node. */
  constructor(message: string, options?: ErrorOptions) {
    super("no_agent", message, {
      retryable: true,
      status: 503,
      cause: options?.cause,
    });
  }
}

/** A cancel the service refused: no such task (404) or it has finished (409). */
export class TaskCancelError extends PlexusError {
  override name = "TaskCancelError";
  /** `message` names the task and, for 409, its status. */
  constructor(
    code: "not_found" | "conflict",
    message: string,
    options?: ErrorOptions,
  ) {
    super(code, message, {
      status: code === "not_found" ? 404 : 409,
      cause: options?.cause,
    });
  }
}

/** The reason a cancelled task's `ctx.signal` is aborted with. */
export class TaskCancelledError extends PlexusError {
  override name = "TaskCancelledError";
  /** `message` names the task and the cancel's reason. */
  constructor(message: string, options?: ErrorOptions) {
    super("cancelled", message, { status: 409, cause: options?.cause });
  }
}

/** Thrown for a submission the service cannot accept (HTTP 400). */
export class TaskInputError extends PlexusError {
  override name = "TaskInputError";
  /** `message` says what was wrong with the submission. */
  constructor(message: string, options?: ErrorOptions) {
    super("bad_request", message, { status: 400, cause: options?.cause });
  }
}

const TYPE_RE = /^[a-z][a-z0-9._-]{0,63}$/;
/** A capability is one channel-name word: agents offer it by handling `tasks.{capability}`. */
const CAPABILITY_RE = /^[A-Za-z0-9_-]{1,64}$/;

const since = (t0: number) => +(performance.now() - t0).toFixed(3);
/** `task.progress` events per task at most every this many ms (10/s). */
const PROGRESS_EVERY_MS = 100;
const capability = (task: TaskRun) =>
  task.capability === undefined ? {} : { capability: task.capability };

/** The public view of a queue message. */
export function taskView(m: QueueMessage<TaskBody>): TaskView {
  const status: TaskView["status"] = m.state === "inflight"
    ? "running"
    : m.state === "done" || m.state === "dead" || m.state === "cancelled"
    ? m.state
    : m.attempts > 0
    ? "failed"
    : "ready";
  const view: TaskView = {
    id: m.id,
    status,
    attempts: m.attempts,
    type: m.payload.type,
  };
  if (m.consumer) view.node = m.consumer;
  if (m.state === "done" && m.result !== undefined) view.result = m.result;
  if ((status === "failed" || status === "dead") && m.errors.length) {
    view.error = m.errors.at(-1)!.error;
  }
  if (m.state === "cancelled" && m.cancelReason !== undefined) {
    view.reason = m.cancelReason;
  }
  return view;
}

/**
 * Creates the task service on `kv`.
 *
 * @example Usage
 * ```ts ignore
 * const tasks = createTaskService(kv, { nodeId: "n1", log, metrics });
 * tasks.start();
 * const { id } = await tasks.submit({ type: "echo", payload: { hi: 1 } });
 * ```
 */
export function createTaskService(
  kv: Deno.Kv,
  options: TaskServiceOptions,
): TaskService {
  const clock = options.clock ?? systemClock;
  const windowMs = options.commitWindowMs ?? 0;
  const queue = new DurableQueue<TaskBody>(kv, "tasks", {
    clock,
    maxResultBytes: options.maxResultBytes,
    commit: windowMs > 0 ? { windowMs } : "sync",
  });
  const handlers = new Map<string, TaskHandler>();
  const schemas = new Map<string, z.ZodType>();
  const completed = options.metrics.counter(
    "plexus_tasks_completed_total",
    "Tasks finished on this node by type and outcome",
  );
  const depth = options.metrics.gauge(
    "plexus_queue_depth",
    "Messages per durable queue and state",
  );
  const oldest = options.metrics.gauge(
    "plexus_queue_oldest_ready_age_seconds",
    "Age of the oldest ready message",
  );
  const aborts = new AbortController();
  const events = options.events;
  let consumer: Consumer | undefined;
  let running = 0;
  let statsTimer: ReturnType<typeof setInterval> | undefined;
  let cancelTimer: ReturnType<typeof setInterval> | undefined;
  const executors = new Set<CapabilityExecutor>();
  /** Handler runs on this node by task id: what a cancel aborts. */
  const live = new Map<string, AbortController>();
  const abortLive = (id: string, reason: string) =>
    live.get(id)?.abort(
      new TaskCancelledError(`task '${id}' was cancelled: ${reason}`),
    );

  /**
   * `ctx.progress` of one run: validated, then emitted and stored at most
   * every PROGRESS_EVERY_MS; a report inside the window waits for its end
   * (a newer one replaces it) and `flush` sends the waiting one at once.
   */
  const progressReporter = (task: TaskRun) => {
    let last = -Infinity;
    let waiting: { fraction: number; message?: string } | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let writes = Promise.resolve();
    const send = () => {
      clearTimeout(timer);
      timer = undefined;
      if (!waiting) return;
      const { fraction, message } = waiting;
      waiting = undefined;
      last = clock.mono();
      events?.emit("task.progress", {
        taskId: task.id,
        type: task.type,
        progress: fraction,
        ...(message === undefined ? {} : { message }),
      });
      const stored = {
        fraction,
        ...(message === undefined ? {} : { message }),
        at: clock.now(),
        attempt: task.attempt,
      };
      // One after another, so the record ends at the last report.
      writes = writes.then(() => queue.setProgress(task.id, stored)).catch(
        (err) =>
          options.log.warn("task progress not stored", {
            task: task.id,
            error: err,
          }),
      );
    };
    return {
      report(fraction: number, message?: string) {
        checkProgress(task.id, fraction, message);
        waiting = { fraction, ...(message === undefined ? {} : { message }) };
        const wait = last + PROGRESS_EVERY_MS - clock.mono();
        if (wait <= 0) send();
        else timer ??= setTimeout(send, wait);
      },
      /** Sends a waiting report now; resolves once every report is stored. */
      flush() {
        send();
        return writes;
      },
    };
  };

  const service: TaskService = {
    queue,
    provideCapabilities(executor) {
      executors.add(executor);
      return () => void executors.delete(executor);
    },
    capabilities() {
      const out: Record<string, string[]> = {};
      for (const e of executors) {
        for (const [cap, ids] of Object.entries(e.capabilities())) {
          (out[cap] ??= []).push(...ids);
        }
      }
      return out;
    },
    workers(capability) {
      return [...executors].flatMap((e) =>
        (e.capabilities()[capability] ?? []).map((id) => ({
          id,
          run: (task: TaskRun, o: { timeoutMs: number }) => e.run(id, task, o),
        }))
      );
    },
    register(type, handler, schema) {
      if (!TYPE_RE.test(type)) {
        throw new TypeError(
          `Cannot register task type '${type}': expected ${TYPE_RE}`,
        );
      }
      if (handlers.has(type)) {
        throw new Error(
          `Cannot register task type '${type}': it is registered already`,
        );
      }
      handlers.set(type, handler);
      if (schema) schemas.set(type, schema);
    },
    types: () => [...handlers.keys()].sort(),
    // Tasks this node runs: its own claims plus runs routed here.
    running: () => running,
    async submit(task) {
      if (task.capability !== undefined) {
        if (!CAPABILITY_RE.test(task.capability)) {
          throw new TaskInputError(
            `capability '${task.capability}': expected ${CAPABILITY_RE}`,
          );
        }
        if (!TYPE_RE.test(task.type)) {
          throw new TaskInputError(`type '${task.type}': expected ${TYPE_RE}`);
        }
      } else if (!handlers.has(task.type)) {
        const known = options.router?.() && options.clusterTypes
          ? await options.clusterTypes()
          : [];
        if (!known.includes(task.type)) {
          throw new TaskInputError(
            `unknown task type '${task.type}' (known: ${
              [...new Set([...service.types(), ...known])].sort().join(", ")
            })`,
          );
        }
      }
      const schema = schemas.get(task.type);
      if (schema) {
        const parsed = schema.safeParse(task.payload);
        if (!parsed.success) {
          throw new TaskInputError(
            `payload for '${task.type}': ${
              describeIssues(parsed.error, task.payload)
            }`,
          );
        }
      }
      const body: TaskBody = { type: task.type, payload: task.payload ?? null };
      if (task.key !== undefined) body.key = task.key;
      if (task.capability !== undefined) body.capability = task.capability;
      try {
        const { id, deduplicated } = await span(
          "task.submit",
          { "plexus.task.type": task.type },
          (s) => {
            if (s) body.traceparent = currentTraceparent();
            return queue.enqueue(body, {
              priority: task.priority,
              idempotencyKey: task.idempotencyKey,
              maxAttempts: options.maxAttempts ?? 3,
            }).then((r) => (s?.setAttribute("plexus.task.id", r.id), r));
          },
          { kind: Kind.PRODUCER },
        );
        const current = deduplicated ? await queue.get(id) : null;
        return {
          id,
          status: current ? taskView(current).status : "ready",
          deduplicated,
        };
      } catch (err) {
        if (err instanceof RangeError) throw new TaskInputError(err.message);
        throw err;
      }
    },
    async get(id) {
      const [m, progress] = await Promise.all([
        queue.get(id),
        queue.progress<
          { fraction: number; message?: string; at: number; attempt: number }
        >(id),
      ]);
      if (!m) return null;
      const view = taskView(m);
      // An earlier attempt's progress says nothing of the one running now.
      if (progress && progress.attempt === m.attempts) {
        view.progress = {
          fraction: progress.fraction,
          ...(progress.message === undefined
            ? {}
            : { message: progress.message }),
          at: new Date(progress.at).toISOString(),
          attempt: progress.attempt,
        };
      }
      return view;
    },
    async cancel(id, reason = "cancelled by request") {
      const r = await queue.cancel(id, reason);
      if (r.outcome === "unknown") {
        throw new TaskCancelError("not_found", `no task '${id}'`);
      }
      if (r.outcome === "finished") {
        throw new TaskCancelError(
          "conflict",
          `task '${id}' is ${
            taskView(r.message).status
          }: only a ready, delayed or running task can be cancelled`,
        );
      }
      // Running here: stop it now; elsewhere its node sees the mark.
      abortLive(id, reason);
      events?.emit("task.cancelled", {
        taskId: id,
        type: r.message.payload.type,
        reason,
      });
      return taskView(r.message);
    },
    async runHere(task) {
      const cancel = new AbortController();
      const progress = progressReporter(task);
      let exec: () => Promise<unknown>;
      if (task.capability !== undefined) {
        const onAgent = options.runOnAgent;
        if (!onAgent) {
          throw new NoAgentError(
            `no agent offers capability '${task.capability}' on ${options.nodeId}`,
          );
        }
        // The agent is not told (the protocol has no cancel); the node stops
        // waiting at once, freeing the slot, and drops its late answer.
        exec = () =>
          new Promise((resolve, reject) => {
            const stop = () => reject(cancel.signal.reason);
            cancel.signal.addEventListener("abort", stop, { once: true });
            onAgent(task).then(resolve, reject).finally(() =>
              cancel.signal.removeEventListener("abort", stop)
            );
          });
      } else {
        const handler = handlers.get(task.type);
        if (!handler) {
          throw new TaskInputError(
            `no handler for task type '${task.type}' on ${options.nodeId}`,
          );
        }
        const ctx: TaskContext = {
          id: task.id,
          attempt: task.attempt,
          signal: AbortSignal.any([aborts.signal, cancel.signal]),
          progress: (fraction, message) => progress.report(fraction, message),
        };
        exec = () => handler(task.payload, ctx);
      }
      live.set(task.id, cancel);
      running++;
      const t0 = performance.now();
      const ev = { taskId: task.id, type: task.type, attempt: task.attempt };
      events?.emit("task.started", { ...ev, ...capability(task) });
      try {
        const result = await exec();
        await progress.flush();
        // Cancelled while finishing: the queue drops its ack; no completion.
        if (cancel.signal.aborted) throw cancel.signal.reason;
        completed.inc({ type: task.type, outcome: "done" });
        events?.emit("task.completed", { ...ev, durationMs: since(t0) });
        return result;
      } catch (err) {
        await progress.flush();
        if (cancel.signal.aborted) {
          // `task.cancelled` was emitted by the node that cancelled it.
          completed.inc({ type: task.type, outcome: "cancelled" });
          throw cancel.signal.reason;
        }
        completed.inc({ type: task.type, outcome: "failed" });
        events?.emit("task.failed", {
          ...ev,
          durationMs: since(t0),
          error: String((err as Error)?.message ?? err).slice(0, 4096),
        });
        throw err;
      } finally {
        running--;
        if (live.get(task.id) === cancel) live.delete(task.id);
      }
    },
    start() {
      const run = async (d: Delivery<TaskBody>) => {
        const task: TaskRun = {
          id: d.id,
          type: d.payload.type,
          payload: d.payload.payload,
          attempt: d.attempts,
          ...(d.payload.key === undefined ? {} : { key: d.payload.key }),
          ...(d.payload.capability === undefined
            ? {}
            : { capability: d.payload.capability }),
        };
        const router = options.router?.();
        if (router) return await router.run(task, () => service.runHere(task));
        if (task.capability !== undefined) {
          try {
            return await service.runHere(task);
          } catch (err) {
            if (!(err instanceof NoAgentError)) throw err;
            // An agent with it may be connected to another node.
            await d.nak(1000, err.message);
            return;
          }
        }
        if (!handlers.has(task.type)) {
          // Another node may know this type; give it back with a delay.
          await d.nak(
            1000,
            `no handler for task type '${task.type}' on ${options.nodeId}`,
          );
          return;
        }
        return await service.runHere(task);
      };
      // OTel on: claim, run and ack spans continue the submitter's trace; the
      // ack is made here, still batched by the consumer, to be inside it.
      const traced = (
        d: Delivery<TaskBody>,
        ack: (result: unknown) => Promise<void>,
      ) => {
        const attrs = {
          "plexus.task.id": d.id,
          "plexus.task.type": d.payload.type,
          "plexus.task.attempt": d.attempts,
          "plexus.node": options.nodeId,
        };
        const parent = d.payload.traceparent;
        const leaseMs = options.leaseMs ?? 30_000;
        const claimedAt = (d.message.leaseUntil ?? clock.now() + leaseMs) -
          leaseMs;
        span("task.claim", attrs, () => {}, {
          parent,
          kind: Kind.CONSUMER,
          startTime: claimedAt,
        });
        return span("task.run", attrs, async () => {
          const result = await run(d);
          if (d.settled) return;
          try {
            await span("task.ack", attrs, () => ack(result));
          } catch (err) {
            // A refused result dead-lettered the task: say so (as the consumer would).
            if (!d.settled) throw err;
            options.log.warn("task queue error", { error: err });
          }
        }, { parent, kind: Kind.CONSUMER });
      };
      consumer = consume(queue, otelEnabled ? traced : run, {
        concurrency: options.concurrency ?? 8,
        leaseMs: options.leaseMs ?? 30_000,
        consumer: options.nodeId,
        sweeper: options.sweeper,
        clock,
        onError: (err) => options.log.warn("task queue error", { error: err }),
      });
      const refresh = async () => {
        const s = await queue.stats();
        for (const state of ["ready", "delayed", "inflight", "dead"] as const) {
          depth.set(s[state], { queue: queue.name, state });
        }
        oldest.set(s.oldestReadyAgeMs / 1000, { queue: queue.name });
      };
      statsTimer = setInterval(() => refresh().catch(() => {}), 2000);
      Deno.unrefTimer(statsTimer);
      refresh().catch(() => {});
      // Cancels made on other nodes reach the runs here through KV marks: one
      // small read per 10 running tasks per poll, none when idle.
      let polling = false;
      cancelTimer = setInterval(async () => {
        if (live.size === 0 || polling) return;
        polling = true;
        try {
          const marks = await queue.cancelMarks([...live.keys()]);
          for (const [id, mark] of marks) abortLive(id, mark.reason);
        } catch (err) {
          options.log.warn("task cancel poll failed", { error: err });
        } finally {
          polling = false;
        }
      }, options.cancelPollMs ?? 500);
      Deno.unrefTimer(cancelTimer);
    },
    async stop(deadlineMs = 10_000) {
      clearInterval(statsTimer);
      clearInterval(cancelTimer);
      await consumer?.stop(deadlineMs);
      aborts.abort(new Error("node shutting down"));
      if (windowMs > 0) {
        await queue.close().catch((err) =>
          options.log.error("tasks: acknowledged work was not stored", {
            error: (err as Error).message,
          })
        );
      }
    },
  };

  service.register("echo", (payload) => Promise.resolve(payload));
  const sleepSchema = z.strictObject({
    ms: z.number().int().min(0).max(3_600_000),
  });
  service.register("sleep", async (payload, ctx) => {
    const { ms } = sleepSchema.parse(payload);
    await clock.sleep(ms, ctx.signal);
    return { slept: ms };
  }, sleepSchema);
  return service;
}
