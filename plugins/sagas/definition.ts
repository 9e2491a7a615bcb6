/**
 * Saga definitions as JSON (or built in code), checked before a saga is
 * accepted: every refusal names the field.
 *
 * ```json
 * {"name": "order", "requireCompensation": true, "steps": [
 *   {"id": "reserve", "run": {"kind": "task", "type": "stock.reserve"},
 *    "compensate": {"kind": "task", "type": "stock.release"}},
 *   {"parallel": [
 *     {"id": "charge", "run": {"kind": "capability", "capability": "payments"},
 *      "compensate": {"kind": "capability", "capability": "refunds"}, "retry": {"maxAttempts": 5}},
 *     {"id": "notify", "run": {"kind": "function", "name": "mail.send"}, "compensate": {"kind": "function", "name": "mail.retract"}}
 *   ]}
 * ]}
 * ```
 *
 * A `parallel` group holds steps only (no nested groups), so a definition
 * cannot nest a cycle. At most 1,000 steps.
 *
 * @module
 */
import { z } from "../../core/plugin.ts";
import { PlexusError } from "../../core/plugin.ts";
import type { SagaDef, StepAction, StepDef } from "./machine.ts";

/** Most steps in one saga. */
export const MAX_STEPS = 1000;

const ID_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const retry = (attempts: number) =>
  z.strictObject({
    maxAttempts: z.number().int().min(1).max(100).default(attempts),
    backoffMs: z.number().int().min(0).max(3_600_000).default(1000),
    maxBackoffMs: z.number().int().min(0).max(86_400_000).default(60_000),
  });
const action = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("task"),
    type: z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/),
    payload: z.unknown().optional(),
  }),
  z.strictObject({
    kind: z.literal("capability"),
    capability: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    payload: z.unknown().optional(),
  }),
  z.strictObject({
    kind: z.literal("function"),
    name: z.string().regex(/^[a-z][a-z0-9._-]{0,127}$/),
    input: z.unknown().optional(),
  }),
]);
const step = z.strictObject({
  id: z.string().regex(ID_RE, "expected a step id like 'charge-card'"),
  run: action,
  compensate: action.optional(),
  timeoutMs: z.number().int().min(1).max(86_400_000).default(30_000),
  retry: retry(3).default({
    maxAttempts: 3,
    backoffMs: 1000,
    maxBackoffMs: 60_000,
  }),
  compensationRetry: retry(10).default({
    maxAttempts: 10,
    backoffMs: 1000,
    maxBackoffMs: 60_000,
  }),
});
const entry = z.union([
  step,
  z.strictObject({ parallel: z.array(z.unknown()) }),
]);
const definition = z.strictObject({
  name: z.string().regex(ID_RE, "expected a saga name like 'order'"),
  requireCompensation: z.boolean().default(false),
  steps: z.array(z.unknown()).min(1).max(MAX_STEPS),
});

/** A definition refused (HTTP 400); `field` names where. */
export class SagaDefinitionError extends PlexusError {
  override name = "SagaDefinitionError";
  /** The path of the bad field, e.g. `steps[2].parallel[0].id`. */
  readonly field: string;
  /** `message` starts with the field. */
  constructor(field: string, message: string) {
    super("bad_saga", `${field}: ${message}`, { status: 400, data: { field } });
    this.field = field;
  }
}

/** What the node can run, to refuse unknown task types, capabilities and functions. */
export interface KnownActions {
  taskTypes?: readonly string[];
  capabilities?: readonly string[];
  functions?: readonly string[];
}

function issue(base: string, err: z.ZodError): SagaDefinitionError {
  const i = err.issues[0];
  const path = i.path.map((p) =>
    typeof p === "number" ? `[${p}]` : `.${String(p)}`
  )
    .join("");
  return new SagaDefinitionError(
    `${base}${path}`.replace(/^\./, ""),
    i.message,
  );
}

function checkAction(a: StepAction, field: string, known: KnownActions) {
  const [list, value, what] = a.kind === "task"
    ? [known.taskTypes, a.type, "task type"]
    : a.kind === "capability"
    ? [known.capabilities, a.capability, "capability"]
    : [known.functions, a.name, "function"];
  if (list && !list.includes(value)) {
    throw new SagaDefinitionError(
      field,
      `unknown ${what} '${value}' (known: ${
        [...list].sort().join(", ") || "none"
      })`,
    );
  }
}

/**
 * Checks a definition; returns it with defaults filled in, or throws a
 * {@linkcode SagaDefinitionError} naming the field.
 *
 * @example Usage
 * ```ts
 * import { parseSagaDefinition } from "./definition.ts";
 * import assert from "node:assert/strict";
 * assert.throws(
 *   () => parseSagaDefinition({ name: "x", steps: [
 *     { id: "a", run: { kind: "task", type: "echo" } },
 *     { id: "a", run: { kind: "task", type: "echo" } },
 *   ] }),
 *   /steps\[1\]\.id: duplicate step id 'a' \(first at steps\[0\]\)/,
 * );
 * ```
 */
export function parseSagaDefinition(
  input: unknown,
  known: KnownActions = {},
): SagaDef {
  const top = definition.safeParse(input);
  if (!top.success) {
    const i = top.error.issues[0];
    if (i.path[0] === "steps" && i.code === "too_big") {
      throw new SagaDefinitionError(
        "steps",
        `at most ${MAX_STEPS} steps, got ${
          (input as { steps: unknown[] }).steps.length
        }`,
      );
    }
    throw issue("", top.error);
  }
  const seen = new Map<string, string>();
  const groups: StepDef[][] = [];
  let count = 0;
  const one = (raw: unknown, field: string): StepDef => {
    const parsed = step.safeParse(raw);
    if (!parsed.success) throw issue(field, parsed.error);
    const s = parsed.data as StepDef;
    const first = seen.get(s.id);
    if (first !== undefined) {
      throw new SagaDefinitionError(
        `${field}.id`,
        `duplicate step id '${s.id}' (first at ${first})`,
      );
    }
    seen.set(s.id, field);
    if (top.data.requireCompensation && !s.compensate) {
      throw new SagaDefinitionError(
        `${field}.compensate`,
        `step '${s.id}' has no compensation and this saga requires one for every step`,
      );
    }
    checkAction(s.run, `${field}.run`, known);
    if (s.compensate) checkAction(s.compensate, `${field}.compensate`, known);
    if (++count > MAX_STEPS) {
      throw new SagaDefinitionError("steps", `at most ${MAX_STEPS} steps`);
    }
    return s;
  };
  top.data.steps.forEach((raw, i) => {
    const field = `steps[${i}]`;
    const e = entry.safeParse(raw);
    if (!e.success) {
      // Report the step's own problem rather than the union's.
      if (raw && typeof raw === "object" && !("parallel" in raw)) {
        groups.push([one(raw, field)]);
        return;
      }
      throw issue(field, e.error);
    }
    if ("parallel" in e.data) {
      const list = e.data.parallel;
      if (list.length === 0) {
        throw new SagaDefinitionError(`${field}.parallel`, "an empty group");
      }
      groups.push(list.map((x, k) => {
        if (x && typeof x === "object" && "parallel" in x) {
          throw new SagaDefinitionError(
            `${field}.parallel[${k}]`,
            "a parallel group holds steps, not groups",
          );
        }
        return one(x, `${field}.parallel[${k}]`);
      }));
    } else groups.push([one(raw, field)]);
  });
  return { name: top.data.name, groups };
}
