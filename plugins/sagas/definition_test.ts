import assert from "node:assert/strict";
import {
  MAX_STEPS,
  parseSagaDefinition,
  SagaDefinitionError,
} from "./definition.ts";

const task = (type: string) => ({ kind: "task", type });

function refused(input: unknown, field: string, re: RegExp, known = {}) {
  assert.throws(() => parseSagaDefinition(input, known), (err: unknown) => {
    assert.ok(err instanceof SagaDefinitionError, String(err));
    assert.equal(err.field, field, err.message);
    assert.equal(err.status, 400);
    assert.match(err.message, re);
    return true;
  });
}

Deno.test("saga definition: a valid one gets its defaults and parallel groups", () => {
  const def = parseSagaDefinition({
    name: "order",
    requireCompensation: true,
    steps: [
      {
        id: "reserve",
        run: task("stock.reserve"),
        compensate: task("stock.release"),
      },
      {
        parallel: [
          {
            id: "charge",
            run: { kind: "capability", capability: "payments" },
            compensate: { kind: "capability", capability: "refunds" },
            retry: { maxAttempts: 5 },
          },
          {
            id: "notify",
            run: { kind: "function", name: "mail.send" },
            compensate: { kind: "function", name: "mail.retract" },
          },
        ],
      },
    ],
  }, {
    taskTypes: ["stock.reserve", "stock.release"],
    capabilities: ["payments", "refunds"],
    functions: ["mail.send", "mail.retract"],
  });
  assert.equal(def.groups.length, 2);
  assert.deepEqual(def.groups[1].map((s) => s.id), ["charge", "notify"]);
  assert.deepEqual(def.groups[1][0].retry, {
    maxAttempts: 5,
    backoffMs: 1000,
    maxBackoffMs: 60_000,
  });
  assert.equal(def.groups[0][0].timeoutMs, 30_000);
  assert.equal(def.groups[0][0].compensationRetry.maxAttempts, 10);
});

Deno.test("saga definition: bad ones are refused naming the field", () => {
  const ok = { id: "a", run: task("echo") };
  refused(
    { name: "x", steps: [ok, { ...ok }] },
    "steps[1].id",
    /duplicate step id 'a' \(first at steps\[0\]\)/,
  );
  refused(
    {
      name: "x",
      steps: [ok, {
        parallel: [{ id: "b", run: task("echo") }, {
          id: "a",
          run: task("echo"),
        }],
      }],
    },
    "steps[1].parallel[1].id",
    /duplicate step id 'a'/,
  );
  refused(
    { name: "x", steps: [{ id: "a", run: { kind: "shell", cmd: "rm" } }] },
    "steps[0].run.kind",
    /.+/,
  );
  refused(
    { name: "x", steps: [{ id: "a", run: task("nope") }] },
    "steps[0].run",
    /unknown task type 'nope' \(known: echo\)/,
    { taskTypes: ["echo"] },
  );
  refused(
    {
      name: "x",
      steps: [{ id: "a", run: { kind: "capability", capability: "ghosts" } }],
    },
    "steps[0].run",
    /unknown capability 'ghosts'/,
    { capabilities: ["payments"] },
  );
  refused(
    {
      name: "x",
      requireCompensation: true,
      steps: [{ ...ok, compensate: task("echo") }, {
        id: "b",
        run: task("echo"),
      }],
    },
    "steps[1].compensate",
    /step 'b' has no compensation and this saga requires one/,
  );
  refused(
    {
      name: "x",
      steps: [{
        parallel: [ok, { parallel: [{ id: "b", run: task("echo") }] }],
      }],
    },
    "steps[0].parallel[1]",
    /holds steps, not groups/,
  );
  refused(
    { name: "x", steps: [{ parallel: [] }] },
    "steps[0].parallel",
    /empty group/,
  );
  refused(
    {
      name: "x",
      steps: Array.from(
        { length: 10_000 },
        (_, i) => ({ id: `s${i}`, run: task("echo") }),
      ),
    },
    "steps",
    new RegExp(`at most ${MAX_STEPS} steps, got 10000`),
  );
  refused({ name: "Bad Name", steps: [ok] }, "name", /saga name/);
  refused(
    {
      name: "x",
      steps: [{ id: "a", run: task("echo"), retry: { maxAttempts: 0 } }],
    },
    "steps[0].retry.maxAttempts",
    /.+/,
  );
  refused(
    { name: "x", steps: [{ id: "a", run: task("echo"), extra: 1 }] },
    "steps[0]",
    /extra/,
  );
});
