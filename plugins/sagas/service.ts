/**
 * The `sagas` capability: what other plugins (and the HTTP routes) use to
 * define, start, watch and cancel sagas. One service per node over the
 * shared KV; the node that leads drives them (see `driver.ts`), any node
 * may start, read and cancel.
 *
 * @example Usage
 * ```ts ignore
 * const sagas = ctx.kernel.get<SagaService>("sagas");
 * sagas.registerFunction("debate.open", async (input, { sagaInput }) => ({ opened: sagaInput }));
 * sagas.define("debate", { name: "debate", steps: [{ id: "open", run: { kind: "function", name: "debate.open" } }] });
 * const id = await sagas.start("debate", { input: { topic: "tabs" } });
 * await sagas.finished(id); // "completed"
 * ```
 *
 * @module
 */
import { PlexusError } from "../../core/plugin.ts";
import type { TaskService } from "../../core/tasks.ts";
import type { FenceToken } from "../../core/state/fence.ts";
import { parseSagaDefinition, SagaDefinitionError } from "./definition.ts";
export type { KnownActions } from "./definition.ts";
import {
  createSagaDriver,
  type SagaDriver,
  type SagaFunction,
} from "./driver.ts";
import {
  type SagaDef,
  type SagaState,
  type SagaStatus,
  startSaga,
} from "./machine.ts";
import {
  type AppliedTransition,
  createSagaStore,
  type DeadLetter,
  type SagaStore,
} from "./store.ts";

export type { SagaFunction, SagaFunctionContext } from "./driver.ts";
export type { SagaDef, SagaState, SagaStatus, StepState } from "./machine.ts";
export type { DeadLetter } from "./store.ts";
export { SagaDefinitionError } from "./definition.ts";

/** Options of {@linkcode SagaService.start}. */
export interface StartOptions {
  /** The saga's id: starting again with the same id returns it and starts nothing. */
  id?: string;
  /** Handed to every step (`sagaInput`). */
  input?: unknown;
}

/** Options of {@linkcode SagaService.list}. */
export interface ListOptions {
  /** Only sagas of this status (read through the status index). */
  status?: SagaStatus;
  /** Sagas per page. @default {100} */
  limit?: number;
  /** From the previous page. */
  cursor?: string;
}

/** The `sagas` capability. */
export interface SagaService {
  /** A function step implementation, by name; every node registers the same ones at start. */
  registerFunction(name: string, fn: SagaFunction): void;
  /** A named definition registered in code (validated now, throws SagaDefinitionError). */
  define(name: string, def: unknown): void;
  /** Starts a saga from a registered name or a JSON definition; returns its id. `id` makes it idempotent. */
  start(def: string | unknown, opts?: StartOptions): Promise<string>;
  /** The saga's state (every step's attempts, results, errors), or null. */
  get(id: string): Promise<SagaState | null>;
  /** Sagas by id, a page at a time. */
  list(
    opts?: ListOptions,
  ): Promise<{ sagas: SagaState[]; cursor?: string }>;
  /** Cancels a running saga (it compensates); false if it was not running. */
  cancel(id: string, reason?: string): Promise<boolean>;
  /** Resolves with the final status (completed | compensated | compensation-failed). */
  finished(id: string, timeoutMs?: number): Promise<SagaStatus>;
  /** Compensations given up on, for an operator. */
  deadLetters(): Promise<DeadLetter[]>;
  /**
   * Tries a dead-lettered compensation once more (the operator fixed what
   * made it fail); the saga compensates again and finishes `compensated`
   * when no dead letter is left. Throws a 404 PlexusError for an unknown
   * saga or step, 409 when the saga has not finished `compensation-failed`
   * or the step is not dead-lettered.
   */
  retryDeadLetter(id: string, step: string): Promise<void>;
  /** Names of the definitions registered in code. */
  definitions(): string[];
  /**
   * Checks a definition's shape, functions and task types (what can be
   * checked without I/O); returns it with defaults filled in, or throws
   * SagaDefinitionError naming the field.
   */
  validate(def: unknown): SagaDef;
  /**
   * Checks a definition as `start` does: `validate`, and the capabilities
   * it names must be offered by a connected agent now.
   */
  check(def: unknown): Promise<SagaDef>;
}

/** Options of {@linkcode createSagaService}. */
export interface SagaServiceOptions {
  /** The node's raw KV (`state:kv`): fence checks need unscoped keys. */
  kv: Deno.Kv;
  /** The node's task service (`tasks:local`): task and capability steps. */
  tasks: TaskService;
  /** Whether this node drives sagas now. @default {() => true} */
  leads?: () => boolean;
  /** This term's fence token (may throw when not leading). */
  fence?: () => FenceToken | undefined;
  /**
   * Task types a definition may name (functions are the registered ones);
   * left out, they are not checked.
   */
  taskTypes?: () => readonly string[] | undefined;
  /** Capabilities a definition may name; left out, they are not checked. */
  capabilities?: () => Promise<readonly string[] | undefined>;
  /** Task polling and timer sweep period, ms. @default {50} */
  tickMs?: number;
  /** Wall clock. @default {Date.now} */
  now?: () => number;
  /** Told about every transition written. */
  onTransition?: (t: AppliedTransition) => void;
  /** Told about failures of the driver. */
  onError?: (err: unknown) => void;
}

/** The service and what the plugin needs besides. */
export interface SagaNode extends SagaService {
  /** The store underneath. */
  readonly store: SagaStore;
  /** Re-issues what open sagas had in flight (on leadership gained). */
  resume(): Promise<void>;
  /** Commands running on this node now. */
  inflight(): number;
  /** Stops driving; waits for what runs to settle. */
  stop(): Promise<void>;
}

const NAME_RE = /^[a-z][a-z0-9._-]{0,127}$/;

/**
 * Largest first state of a saga (definition, input, empty step states),
 * serialized: it is one KV value of at most 64 KiB, and results and
 * attempts grow it.
 */
export const MAX_START_BYTES = 32_768;
/**
 * A saga id: no `:`, which separates the parts of the idempotency keys
 * (`{sagaId}:{stepId}:compensate`), so two sagas' keys cannot meet.
 */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/**
 * Creates the saga service of one node.
 *
 * @example Usage
 * ```ts
 * import { createSagaService } from "./service.ts";
 * import { createTestKernel } from "../../core/testing.ts";
 * import assert from "node:assert/strict";
 * await using t = await createTestKernel([]);
 * const sagas = createSagaService({ kv: t.kv, tasks: t.tasks, tickMs: 5 });
 * sagas.registerFunction("greet", (input) => Promise.resolve(`hi ${input}`));
 * const id = await sagas.start({ name: "hello", steps: [{ id: "greet", run: { kind: "function", name: "greet", input: "ann" } }] });
 * assert.equal(await sagas.finished(id), "completed");
 * assert.equal((await sagas.get(id))?.steps.greet.result, "hi ann");
 * await sagas.stop();
 * ```
 */
export function createSagaService(options: SagaServiceOptions): SagaNode {
  const store = createSagaStore(options.kv);
  const functions = new Map<string, SagaFunction>();
  /** Definitions registered in code, as given (checked again at start). */
  const defs = new Map<string, unknown>();
  const driver: SagaDriver = createSagaDriver({
    store,
    tasks: options.tasks,
    functions,
    leads: options.leads,
    fence: options.fence,
    now: options.now,
    tickMs: options.tickMs,
    onTransition: options.onTransition,
    onError: options.onError,
  });
  const validate = (def: unknown) =>
    parseSagaDefinition(def, {
      taskTypes: options.taskTypes?.(),
      functions: [...functions.keys()],
    });
  const check = async (def: unknown) => {
    return parseSagaDefinition(def, {
      taskTypes: options.taskTypes?.(),
      capabilities: await options.capabilities?.(),
      functions: [...functions.keys()],
    });
  };

  return {
    store,
    registerFunction(name, fn) {
      if (!NAME_RE.test(name)) {
        throw new PlexusError(
          "bad_saga",
          `saga function name '${name}': expected a name like 'debate.open'`,
          { status: 400 },
        );
      }
      if (typeof fn !== "function") {
        throw new TypeError(`saga function '${name}' is not a function`);
      }
      functions.set(name, fn);
    },
    define(name, def) {
      if (!NAME_RE.test(name)) {
        throw new SagaDefinitionError(
          "name",
          `expected a definition name like 'order', got '${name}'`,
        );
      }
      // The shape now; what it names (task types, functions) at start, when
      // every plugin has registered its own.
      parseSagaDefinition(def);
      defs.set(name, def);
    },
    validate,
    check,
    definitions: () => [...defs.keys()].sort(),
    async start(def, opts = {}) {
      let parsed: SagaDef;
      if (typeof def === "string") {
        const found = defs.get(def);
        if (found === undefined) {
          throw new SagaDefinitionError(
            "definition",
            `no saga definition named '${def}' (registered: ${
              [...defs.keys()].sort().join(", ") || "none"
            })`,
          );
        }
        parsed = await check(found);
      } else parsed = await check(def);
      if (opts.id !== undefined && !ID_RE.test(opts.id)) {
        throw new SagaDefinitionError(
          "id",
          `expected a saga id of letters, digits and . _ - (at most 200, no ':'), got '${opts.id}'`,
        );
      }
      const size = JSON.stringify(startSaga("", parsed, 0, opts.input).state)
        .length;
      if (size > MAX_START_BYTES) {
        throw new SagaDefinitionError(
          "steps",
          `the saga's state would start at ${size} bytes with its input; at most ${MAX_START_BYTES} (one KV value, with room for results): fewer or smaller steps, or a smaller input`,
        );
      }
      const id = opts.id ?? crypto.randomUUID();
      if (opts.id !== undefined && await store.get(id)) return id;
      try {
        await driver.submit(id, parsed, opts.input);
      } catch (err) {
        // Started by a concurrent call with the same id: the same saga.
        if (
          opts.id !== undefined && err instanceof PlexusError &&
          err.code === "conflict" && await store.get(id)
        ) return id;
        throw err;
      }
      return id;
    },
    get: (id) => store.get(id),
    list: (opts) => store.list(opts),
    async cancel(id, reason = "cancelled by request") {
      const t = await driver.apply(id, { type: "cancel", reason });
      return !!t && t.before?.status === "running" &&
        t.state.status !== "running";
    },
    async finished(id, timeoutMs) {
      return await driver.finished(id, timeoutMs) as SagaStatus;
    },
    deadLetters: () => store.deadLetters(),
    async retryDeadLetter(id, step) {
      const s = await store.get(id);
      if (!s) {
        throw new PlexusError("not_found", `no saga '${id}'`, { status: 404 });
      }
      if (!s.steps[step]) {
        throw new PlexusError(
          "not_found",
          `saga '${id}' has no step '${step}'`,
          { status: 404 },
        );
      }
      const t = await driver.apply(id, { type: "retry-compensation", step });
      if (!t || t.state === t.before) {
        const now = t?.state ?? s;
        throw new PlexusError(
          "conflict",
          `saga '${id}' is ${now.status} and its step '${step}' is ${
            now.steps[step].status
          }: only a dead-lettered compensation of a saga that finished compensation-failed is retried`,
          { status: 409 },
        );
      }
    },
    resume: () => driver.resume(),
    inflight: () => driver.inflight(),
    stop: () => driver.stop(),
  };
}
