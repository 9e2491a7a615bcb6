/**
 * The `saga.*` events: a versioned zod schema per type, and the events a
 * written transition stands for. The sagas plugin emits them on the node's
 * emitter (`events:local`, `emitChecked`), so the event bus stores them
 * when `events:bus` is loaded; with nobody listening they cost nothing.
 *
 * @module
 */
import { z } from "../../core/plugin.ts";
import type { AppliedTransition } from "./store.ts";

const id = z.string().min(1).max(256);
const attempt = z.number().int().positive();
const error = z.string().max(4096);

/** Every `saga.*` type → `{version, data}`. */
export const SAGA_EVENT_SCHEMAS = {
  "saga.started": {
    version: 1,
    data: z.strictObject({ sagaId: id, name: id, steps: z.number().int() }),
  },
  "saga.step.started": {
    version: 1,
    data: z.strictObject({ sagaId: id, step: id, attempt }),
  },
  "saga.step.completed": {
    version: 1,
    data: z.strictObject({ sagaId: id, step: id, attempt }),
  },
  "saga.step.failed": {
    version: 1,
    data: z.strictObject({
      sagaId: id,
      step: id,
      attempt,
      error,
      /** Whether another attempt follows. */
      retrying: z.boolean(),
    }),
  },
  "saga.compensating": {
    version: 1,
    data: z.strictObject({ sagaId: id, reason: error }),
  },
  "saga.step.compensated": {
    version: 1,
    data: z.strictObject({ sagaId: id, step: id, attempt }),
  },
  "saga.compensated": {
    version: 1,
    data: z.strictObject({ sagaId: id, reason: error }),
  },
  "saga.completed": {
    version: 1,
    data: z.strictObject({ sagaId: id }),
  },
  "saga.failed": {
    version: 1,
    data: z.strictObject({
      sagaId: id,
      reason: error,
      deadLettered: z.array(id),
    }),
  },
  "saga.dead-lettered": {
    version: 1,
    data: z.strictObject({ sagaId: id, step: id, error }),
  },
  "saga.cancelled": {
    version: 1,
    data: z.strictObject({ sagaId: id, reason: error }),
  },
} as const;

/** A `saga.*` event type. */
export type SagaEventType = keyof typeof SAGA_EVENT_SCHEMAS;

/** One event to emit. */
export interface SagaEvent {
  type: SagaEventType;
  data: Record<string, unknown>;
}

/**
 * The events a written transition stands for, in order.
 *
 * @example Usage
 * ```ts
 * import { sagaEvents } from "./events.ts";
 * import { startSaga } from "./machine.ts";
 * import assert from "node:assert/strict";
 * const retry = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
 * const step = { id: "a", run: { kind: "task" as const, type: "a" }, timeoutMs: 1000, retry, compensationRetry: retry };
 * const t = startSaga("s1", { name: "one", groups: [[step]] }, 0);
 * assert.deepEqual(sagaEvents({ ...t, before: null }).map((e) => e.type), ["saga.started", "saga.step.started"]);
 * ```
 */
export function sagaEvents(t: AppliedTransition): SagaEvent[] {
  const s = t.state;
  const b = t.before;
  const out: SagaEvent[] = [];
  const sagaId = s.id;
  if (!b) {
    out.push({
      type: "saga.started",
      data: { sagaId, name: s.def.name, steps: Object.keys(s.steps).length },
    });
  }
  if (b) {
    for (const [step, st] of Object.entries(s.steps)) {
      const was = b.steps[step];
      // A finished attempt the state before did not have finished.
      st.attempts.forEach((a, i) => {
        const old = was.attempts[i];
        if (a.finishedAt === undefined || old?.finishedAt !== undefined) {
          return;
        }
        if (a.ok) {
          out.push({
            type: "saga.step.completed",
            data: { sagaId, step, attempt: a.attempt },
          });
        } else {
          out.push({
            type: "saga.step.failed",
            data: {
              sagaId,
              step,
              attempt: a.attempt,
              error: a.error ?? "failed",
              retrying: st.status === "retrying",
            },
          });
        }
      });
      st.compensations.forEach((a, i) => {
        const old = was.compensations[i];
        if (a.ok && old?.finishedAt === undefined) {
          out.push({
            type: "saga.step.compensated",
            data: { sagaId, step, attempt: a.attempt },
          });
        }
      });
      if (st.status === "dead-lettered" && was.status !== "dead-lettered") {
        out.push({
          type: "saga.dead-lettered",
          data: {
            sagaId,
            step,
            error: st.compensations.at(-1)?.error ?? "compensation failed",
          },
        });
      }
    }
  }
  const reason = s.reason ?? "";
  const cancelled = reason.startsWith("cancelled: ");
  if (b?.status === "running" && s.status !== "running" && s.reason) {
    if (cancelled) {
      out.push({
        type: "saga.cancelled",
        data: { sagaId, reason: reason.slice("cancelled: ".length) },
      });
    }
    out.push({ type: "saga.compensating", data: { sagaId, reason } });
  }
  for (const c of t.commands) {
    if (c.type === "run") {
      out.push({
        type: "saga.step.started",
        data: { sagaId, step: c.step, attempt: c.attempt },
      });
    }
    if (c.type === "finished") {
      if (c.status === "completed") {
        out.push({ type: "saga.completed", data: { sagaId } });
      } else if (c.status === "compensated") {
        out.push({ type: "saga.compensated", data: { sagaId, reason } });
      } else {
        out.push({
          type: "saga.failed",
          data: {
            sagaId,
            reason,
            deadLettered: Object.entries(s.steps)
              .filter(([, st]) => st.status === "dead-lettered")
              .map(([k]) => k),
          },
        });
      }
    }
  }
  return out;
}
