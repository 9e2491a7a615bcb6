/**
 * The saga as a pure state machine: no clock, timer, randomness or I/O
 * inside (the raft core's rule). A driver feeds it inputs (a step's outcome,
 * a due timer, a cancel) with the time, persists the state it returns, and
 * carries out the commands (run or compensate a step, schedule a timer).
 *
 * Rules:
 * - Groups run in order; the steps of a parallel group run at once and the
 *   group is done when all are.
 * - A failed attempt is retried after `backoffMs · 2^(attempt-1)` (capped)
 *   until `maxAttempts`; a step that exhausts them fails the saga. So does a
 *   cancel.
 * - On failure no new step starts; steps still running are awaited (one that
 *   succeeds must be undone too); then every done step is compensated, last
 *   group first and, within a group, last declared first, one at a time.
 * - A compensation is retried (its own policy) until it succeeds or is
 *   dead-lettered for an operator, then the next one runs: nothing is
 *   silently skipped. A step without a compensation is recorded as having
 *   nothing to undo.
 * - Every run of a step carries the idempotency key `{sagaId}:{stepId}`
 *   (its compensation `{sagaId}:{stepId}:compensate`), the same on every
 *   attempt and on every node, so an executor applies it once.
 * - Inputs for an attempt that is not the current one are ignored: a driver
 *   replaying after a crash may deliver an outcome twice.
 *
 * @module
 */

/** What a step does: a task type, an agent capability or a plugin function. */
export type StepAction =
  | { kind: "task"; type: string; payload?: unknown }
  | { kind: "capability"; capability: string; payload?: unknown }
  | { kind: "function"; name: string; input?: unknown };

/** Retries of a step (or of its compensation). */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** Delay before the second attempt, ms; doubles each time. */
  backoffMs: number;
  /** Longest delay, ms. */
  maxBackoffMs: number;
}

/** One step of a saga. */
export interface StepDef {
  id: string;
  run: StepAction;
  compensate?: StepAction;
  /** An attempt not finished by then fails. */
  timeoutMs: number;
  retry: RetryPolicy;
  /** Retries of the compensation; dead-lettered after the last. */
  compensationRetry: RetryPolicy;
}

/** A group of steps: one alone, or several run in parallel. */
export type StepGroup = StepDef[];

/** A checked saga definition (see `definition.ts`). */
export interface SagaDef {
  name: string;
  groups: StepGroup[];
}

/** One try of a step or its compensation. */
export interface Attempt {
  attempt: number;
  startedAt: number;
  finishedAt?: number;
  ok?: boolean;
  error?: string;
}

/** Where a step is. */
export type StepStatus =
  | "pending"
  | "running"
  | "retrying"
  | "done"
  | "failed"
  | "compensating"
  | "compensated"
  | "nothing-to-undo"
  | "dead-lettered";

/** A step's state. */
export interface StepState {
  status: StepStatus;
  attempts: Attempt[];
  compensations: Attempt[];
  result?: unknown;
  /** When a retry (of the run or the compensation) is due. */
  dueAt?: number;
}

/** Where a saga is. */
export type SagaStatus =
  | "running"
  | "compensating"
  | "completed"
  | "compensated"
  | "compensation-failed";

/** A saga's whole state, persisted after every transition. */
export interface SagaState {
  id: string;
  def: SagaDef;
  status: SagaStatus;
  /** Index of the group running (or being compensated). */
  group: number;
  steps: Record<string, StepState>;
  /** Why the saga is compensating. */
  reason?: string;
  /** The input the saga was started with, handed to every step. */
  input?: unknown;
  createdAt: number;
  updatedAt: number;
}

/** What the driver is told. */
export type SagaInput =
  | { type: "succeeded"; step: string; attempt: number; result?: unknown }
  | { type: "failed"; step: string; attempt: number; error: string }
  | {
    type: "compensation-succeeded";
    step: string;
    attempt: number;
  }
  | {
    type: "compensation-failed";
    step: string;
    attempt: number;
    error: string;
  }
  | { type: "due"; step: string }
  | { type: "cancel"; reason: string }
  /**
   * An operator's retry of a dead-lettered compensation, once the saga has
   * finished `compensation-failed`: one more attempt; if it fails too, the
   * step is dead-lettered again.
   */
  | { type: "retry-compensation"; step: string };

/** What the driver must do. */
export type SagaCommand =
  | {
    type: "run";
    step: string;
    attempt: number;
    action: StepAction;
    idempotencyKey: string;
    timeoutMs: number;
  }
  | {
    type: "compensate";
    step: string;
    attempt: number;
    action: StepAction;
    idempotencyKey: string;
    timeoutMs: number;
  }
  | { type: "schedule"; step: string; at: number }
  | { type: "dead-letter"; step: string; error: string }
  | { type: "finished"; status: SagaStatus };

/** The new state and the commands to carry out. */
export interface Transition {
  state: SagaState;
  commands: SagaCommand[];
}

/** Delay before attempt `next` (2, 3, …) under `policy`. */
export function retryDelay(policy: RetryPolicy, next: number): number {
  return Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (next - 2));
}

function stepOf(def: SagaDef, id: string): StepDef | undefined {
  for (const g of def.groups) for (const s of g) if (s.id === id) return s;
}

function clone(state: SagaState): SagaState {
  return structuredClone(state);
}

function runCommand(
  state: SagaState,
  step: StepDef,
  attempt: number,
): SagaCommand {
  return {
    type: "run",
    step: step.id,
    attempt,
    action: step.run,
    idempotencyKey: `${state.id}:${step.id}`,
    timeoutMs: step.timeoutMs,
  };
}

function compensateCommand(
  state: SagaState,
  step: StepDef,
  attempt: number,
): SagaCommand {
  return {
    type: "compensate",
    step: step.id,
    attempt,
    action: step.compensate!,
    idempotencyKey: `${state.id}:${step.id}:compensate`,
    timeoutMs: step.timeoutMs,
  };
}

/** Starts group `g`'s steps (or finishes the saga past the last group). */
function startGroup(s: SagaState, g: number, now: number): SagaCommand[] {
  s.group = g;
  if (g >= s.def.groups.length) {
    s.status = "completed";
    return [{ type: "finished", status: "completed" }];
  }
  const out: SagaCommand[] = [];
  for (const step of s.def.groups[g]) {
    const st = s.steps[step.id];
    st.status = "running";
    st.attempts.push({ attempt: 1, startedAt: now });
    out.push(runCommand(s, step, 1));
  }
  return out;
}

/**
 * Moves the compensation on: once nothing of the current group runs, the
 * next done step (last first) is compensated; past the first group, the
 * saga ends.
 */
function compensateNext(s: SagaState, now: number): SagaCommand[] {
  for (; s.group >= 0; s.group--) {
    const group = s.def.groups[s.group] ?? [];
    // Wait for steps of this group still running or retrying.
    if (
      group.some((st) =>
        ["running", "retrying"].includes(s.steps[st.id].status)
      )
    ) return [];
    if (group.some((st) => s.steps[st.id].status === "compensating")) {
      return [];
    }
    for (const step of [...group].reverse()) {
      const st = s.steps[step.id];
      if (st.status !== "done") continue;
      if (!step.compensate) {
        st.status = "nothing-to-undo";
        continue;
      }
      st.status = "compensating";
      st.compensations.push({ attempt: 1, startedAt: now });
      return [compensateCommand(s, step, 1)];
    }
  }
  const dead = Object.values(s.steps).some((st) =>
    st.status === "dead-lettered"
  );
  s.status = dead ? "compensation-failed" : "compensated";
  s.group = 0;
  return [{ type: "finished", status: s.status }];
}

/** Turns a running saga to compensating. */
function fail(s: SagaState, reason: string, now: number): SagaCommand[] {
  s.status = "compensating";
  s.reason = reason;
  // Retries that have not started are abandoned: the step failed.
  for (const step of s.def.groups[s.group] ?? []) {
    const st = s.steps[step.id];
    if (st.status === "retrying") {
      st.status = "failed";
      delete st.dueAt;
    }
  }
  return compensateNext(s, now);
}

/**
 * Creates a saga's first state and the commands that start it.
 *
 * @example Usage
 * ```ts
 * import { startSaga } from "./machine.ts";
 * import assert from "node:assert/strict";
 * const retry = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
 * const step = (id: string) => ({ id, run: { kind: "task" as const, type: id }, timeoutMs: 1000, retry, compensationRetry: retry });
 * const { state, commands } = startSaga("s1", { name: "order", groups: [[step("reserve")], [step("charge")]] }, 0);
 * assert.equal(state.status, "running");
 * assert.deepEqual(commands.map((c) => c.type === "run" && c.idempotencyKey), ["s1:reserve"]);
 * ```
 */
export function startSaga(
  id: string,
  def: SagaDef,
  now: number,
  input?: unknown,
): Transition {
  const steps: Record<string, StepState> = {};
  for (const g of def.groups) {
    for (const s of g) {
      steps[s.id] = { status: "pending", attempts: [], compensations: [] };
    }
  }
  const state: SagaState = {
    id,
    def,
    status: "running",
    group: 0,
    steps,
    ...(input === undefined ? {} : { input }),
    createdAt: now,
    updatedAt: now,
  };
  return { state, commands: startGroup(state, 0, now) };
}

/**
 * Applies one input at time `now`; returns the new state (the old one is
 * not changed) and the commands it calls for.
 *
 * @example Usage
 * ```ts
 * import { applyInput, startSaga } from "./machine.ts";
 * import assert from "node:assert/strict";
 * const retry = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
 * const step = { id: "a", run: { kind: "task" as const, type: "a" }, timeoutMs: 1000, retry, compensationRetry: retry };
 * const started = startSaga("s1", { name: "one", groups: [[step]] }, 0);
 * const t = applyInput(started.state, { type: "succeeded", step: "a", attempt: 1 }, 5);
 * assert.equal(t.state.status, "completed");
 * ```
 */
export function applyInput(
  prev: SagaState,
  input: SagaInput,
  now: number,
): Transition {
  const s = clone(prev);
  s.updatedAt = now;
  const none = { state: prev, commands: [] };
  if (input.type === "cancel") {
    if (s.status !== "running") return none;
    return { state: s, commands: fail(s, `cancelled: ${input.reason}`, now) };
  }
  const step = stepOf(s.def, input.step);
  if (!step) return none;
  const st = s.steps[step.id];
  if (input.type === "retry-compensation") {
    if (s.status !== "compensation-failed" || st.status !== "dead-lettered") {
      return none;
    }
    s.status = "compensating";
    st.status = "compensating";
    const n = st.compensations.length + 1;
    st.compensations.push({ attempt: n, startedAt: now });
    return { state: s, commands: [compensateCommand(s, step, n)] };
  }
  const current = (list: Attempt[], n: number) =>
    list.length === n && list[n - 1].finishedAt === undefined
      ? list[n - 1]
      : undefined;
  switch (input.type) {
    case "succeeded": {
      const a = current(st.attempts, input.attempt);
      if (st.status !== "running" || !a) return none;
      Object.assign(a, { finishedAt: now, ok: true });
      st.status = "done";
      st.result = input.result;
      if (s.status === "compensating") {
        return { state: s, commands: compensateNext(s, now) };
      }
      const group = s.def.groups[s.group];
      if (group.every((x) => s.steps[x.id].status === "done")) {
        return { state: s, commands: startGroup(s, s.group + 1, now) };
      }
      return { state: s, commands: [] };
    }
    case "failed": {
      const a = current(st.attempts, input.attempt);
      if (st.status !== "running" || !a) return none;
      Object.assign(a, { finishedAt: now, ok: false, error: input.error });
      if (s.status === "running" && input.attempt < step.retry.maxAttempts) {
        st.status = "retrying";
        st.dueAt = now + retryDelay(step.retry, input.attempt + 1);
        return {
          state: s,
          commands: [{ type: "schedule", step: step.id, at: st.dueAt }],
        };
      }
      st.status = "failed";
      if (s.status === "compensating") {
        return { state: s, commands: compensateNext(s, now) };
      }
      return {
        state: s,
        commands: fail(
          s,
          `step '${step.id}' failed after ${input.attempt} attempt(s): ${input.error}`,
          now,
        ),
      };
    }
    case "due": {
      if (st.dueAt === undefined || now < st.dueAt) return none;
      delete st.dueAt;
      if (st.status === "retrying" && s.status === "running") {
        const n = st.attempts.length + 1;
        st.status = "running";
        st.attempts.push({ attempt: n, startedAt: now });
        return { state: s, commands: [runCommand(s, step, n)] };
      }
      if (st.status === "compensating") {
        const n = st.compensations.length + 1;
        st.compensations.push({ attempt: n, startedAt: now });
        return { state: s, commands: [compensateCommand(s, step, n)] };
      }
      return none;
    }
    case "compensation-succeeded": {
      const a = current(st.compensations, input.attempt);
      if (st.status !== "compensating" || !a || st.dueAt !== undefined) {
        return none;
      }
      Object.assign(a, { finishedAt: now, ok: true });
      st.status = "compensated";
      return { state: s, commands: compensateNext(s, now) };
    }
    case "compensation-failed": {
      const a = current(st.compensations, input.attempt);
      if (st.status !== "compensating" || !a || st.dueAt !== undefined) {
        return none;
      }
      Object.assign(a, { finishedAt: now, ok: false, error: input.error });
      // An operator's retry (numbered past the policy's attempts) is one try.
      if (input.attempt < step.compensationRetry.maxAttempts) {
        st.dueAt = now + retryDelay(step.compensationRetry, input.attempt + 1);
        return {
          state: s,
          commands: [{ type: "schedule", step: step.id, at: st.dueAt }],
        };
      }
      st.status = "dead-lettered";
      return {
        state: s,
        commands: [
          { type: "dead-letter", step: step.id, error: input.error },
          ...compensateNext(s, now),
        ],
      };
    }
  }
}

/**
 * The commands that put a persisted saga back in motion on a node taking it
 * over: every attempt in flight is issued again (same attempt, same
 * idempotency key) and every pending retry scheduled again.
 *
 * @example Usage
 * ```ts
 * import { resumeSaga, startSaga } from "./machine.ts";
 * import assert from "node:assert/strict";
 * const retry = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
 * const step = { id: "a", run: { kind: "task" as const, type: "a" }, timeoutMs: 1000, retry, compensationRetry: retry };
 * const { state, commands } = startSaga("s1", { name: "one", groups: [[step]] }, 0);
 * assert.deepEqual(resumeSaga(state), commands);
 * ```
 */
export function resumeSaga(state: SagaState): SagaCommand[] {
  const out: SagaCommand[] = [];
  for (const g of state.def.groups) {
    for (const step of g) {
      const st = state.steps[step.id];
      if (st.dueAt !== undefined) {
        out.push({ type: "schedule", step: step.id, at: st.dueAt });
      } else if (st.status === "running") {
        out.push(runCommand(state, step, st.attempts.length));
      } else if (st.status === "compensating") {
        out.push(compensateCommand(state, step, st.compensations.length));
      }
    }
  }
  return out;
}
