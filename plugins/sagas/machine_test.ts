import assert from "node:assert/strict";
import {
  applyInput,
  resumeSaga,
  type SagaCommand,
  type SagaDef,
  type SagaInput,
  type SagaState,
  startSaga,
  type StepDef,
} from "./machine.ts";

const once = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 100 };

function step(id: string, o: Partial<StepDef> = {}): StepDef {
  return {
    id,
    run: { kind: "task", type: `do.${id}` },
    compensate: { kind: "task", type: `undo.${id}` },
    timeoutMs: 1000,
    retry: once,
    compensationRetry: once,
    ...o,
  };
}

/**
 * Runs a saga to its end: `outcome(cmd)` decides each command's result,
 * applied in the order issued; due timers fire when nothing else is left.
 * Returns the final state and the side-effect log ("do a", "undo a").
 */
function drive(
  def: SagaDef,
  outcome: (c: SagaCommand & { type: "run" | "compensate" }) => string | null,
  extra: (log: string[]) => SagaInput | null = () => null,
) {
  let now = 0;
  let t = startSaga("s1", def, now);
  let state: SagaState = t.state;
  const queue: SagaCommand[] = [...t.commands];
  const timers: { step: string; at: number }[] = [];
  const log: string[] = [];
  for (let guard = 0; guard < 10_000; guard++) {
    const extraInput = extra(log);
    if (extraInput) {
      t = applyInput(state, extraInput, now);
      state = t.state;
      queue.push(...t.commands);
    }
    let c = queue.shift();
    if (!c) {
      timers.sort((a, b) => a.at - b.at);
      const due = timers.shift();
      if (!due) break;
      now = Math.max(now, due.at);
      t = applyInput(state, { type: "due", step: due.step }, now);
      state = t.state;
      queue.push(...t.commands);
      continue;
    }
    now += 1;
    if (c.type === "schedule") {
      timers.push({ step: c.step, at: c.at });
      continue;
    }
    if (c.type === "finished" || c.type === "dead-letter") {
      log.push(`${c.type} ${c.type === "finished" ? c.status : c.step}`);
      continue;
    }
    const err = outcome(c);
    const verb = c.type === "run" ? "do" : "undo";
    if (err === null) log.push(`${verb} ${c.step}`);
    const input: SagaInput = c.type === "run"
      ? err === null
        ? {
          type: "succeeded",
          step: c.step,
          attempt: c.attempt,
          result: { ok: c.step },
        }
        : { type: "failed", step: c.step, attempt: c.attempt, error: err }
      : err === null
      ? { type: "compensation-succeeded", step: c.step, attempt: c.attempt }
      : {
        type: "compensation-failed",
        step: c.step,
        attempt: c.attempt,
        error: err,
      };
    t = applyInput(state, input, now);
    state = t.state;
    queue.push(...t.commands);
    c = undefined;
  }
  return { state, log };
}

const seq = (n: number): SagaDef => ({
  name: "seq",
  groups: Array.from({ length: n }, (_, i) => [step(`s${i + 1}`)]),
});

Deno.test("saga: every step runs in order and the saga completes", () => {
  const { state, log } = drive(seq(4), () => null);
  assert.equal(state.status, "completed");
  assert.deepEqual(log, [
    "do s1",
    "do s2",
    "do s3",
    "do s4",
    "finished completed",
  ]);
  assert.deepEqual(state.steps.s3.result, { ok: "s3" });
});

Deno.test("saga: a failure at step k of n compensates k-1..1 in reverse, each exactly once", () => {
  for (let n = 1; n <= 6; n++) {
    for (let k = 1; k <= n; k++) {
      const { state, log } = drive(
        seq(n),
        (c) => c.type === "run" && c.step === `s${k}` ? "boom" : null,
      );
      const done = Array.from({ length: k - 1 }, (_, i) => `do s${i + 1}`);
      const undone = Array.from(
        { length: k - 1 },
        (_, i) => `undo s${k - 1 - i}`,
      );
      assert.deepEqual(
        log,
        [...done, ...undone, "finished compensated"],
        `n=${n} k=${k}`,
      );
      assert.equal(state.status, "compensated");
      assert.equal(state.steps[`s${k}`].status, "failed");
      assert.match(
        state.reason!,
        new RegExp(`step 's${k}' failed after 1 attempt\\(s\\): boom`),
      );
    }
  }
});

Deno.test("saga: a failed attempt is retried with backoff; the idempotency key is the same on every attempt", () => {
  let tries = 0;
  const keys: string[] = [];
  const def = {
    name: "r",
    groups: [[
      step("a", {
        retry: { maxAttempts: 3, backoffMs: 100, maxBackoffMs: 150 },
      }),
    ]],
  };
  const { state } = drive(def, (c) => {
    keys.push(c.idempotencyKey);
    return c.type === "run" && ++tries < 3 ? "flaky" : null;
  });
  assert.equal(state.status, "completed");
  assert.deepEqual(
    state.steps.a.attempts.map((a) => [a.attempt, a.ok, a.error]),
    [
      [1, false, "flaky"],
      [2, false, "flaky"],
      [3, true, undefined],
    ],
  );
  // Waited 100 then 150 (capped) between attempts.
  const [a1, a2, a3] = state.steps.a.attempts;
  assert.ok(
    a2.startedAt - a1.finishedAt! >= 100 &&
      a3.startedAt - a2.finishedAt! >= 150,
  );
  assert.deepEqual(new Set(keys), new Set(["s1:a"]));
});

Deno.test("saga: a parallel group runs at once; a failure waits for its siblings and undoes the ones that succeeded", () => {
  const def: SagaDef = {
    name: "p",
    groups: [[step("a")], [
      step("b"),
      step("c"),
      step("d", { compensate: undefined }),
    ], [step("e")]],
  };
  const t = applyInput(startSaga("s1", def, 0).state, {
    type: "succeeded",
    step: "a",
    attempt: 1,
  }, 1);
  assert.deepEqual(t.commands.map((c) => c.type === "run" ? c.step : c.type), [
    "b",
    "c",
    "d",
  ]);
  const { state, log } = drive(
    def,
    (c) => c.type === "run" && c.step === "c" ? "no" : null,
  );
  assert.deepEqual(log, [
    "do a",
    "do b",
    "do d",
    "undo b",
    "undo a",
    "finished compensated",
  ]);
  assert.equal(state.steps.d.status, "nothing-to-undo");
  assert.equal(state.steps.e.status, "pending");
});

Deno.test("saga: a compensation is retried until it succeeds, or dead-lettered and the rest still compensated", () => {
  let undoB = 0;
  const def: SagaDef = {
    name: "c",
    groups: [[step("a")], [
      step("b", {
        compensationRetry: { maxAttempts: 4, backoffMs: 10, maxBackoffMs: 10 },
      }),
    ], [step("c")]],
  };
  const retried = drive(
    def,
    (c) =>
      c.type === "run" && c.step === "c"
        ? "fail"
        : c.type === "compensate" && c.step === "b" && ++undoB < 3
        ? "later"
        : null,
  );
  assert.equal(retried.state.status, "compensated");
  assert.equal(retried.state.steps.b.compensations.length, 3);
  assert.deepEqual(retried.log.slice(-3), [
    "undo b",
    "undo a",
    "finished compensated",
  ]);
  const dead = drive(
    def,
    (c) =>
      c.type === "run" && c.step === "c"
        ? "fail"
        : c.type === "compensate" && c.step === "b"
        ? "broken"
        : null,
  );
  assert.equal(dead.state.status, "compensation-failed");
  assert.equal(dead.state.steps.b.status, "dead-lettered");
  assert.equal(dead.state.steps.b.compensations.length, 4);
  assert.deepEqual(dead.log.slice(-3), [
    "dead-letter b",
    "undo a",
    "finished compensation-failed",
  ]);
});

Deno.test("saga: an operator's retry of a dead-lettered compensation is one more try, refused unless the saga finished compensation-failed", () => {
  const def: SagaDef = {
    name: "c",
    groups: [[step("a")], [step("b")], [step("c")]],
  };
  const dead = drive(
    def,
    (c) =>
      c.type === "run" && c.step === "c"
        ? "fail"
        : c.type === "compensate" && c.step === "b"
        ? "broken"
        : null,
  ).state;
  assert.equal(dead.status, "compensation-failed");
  const retry = (s: SagaState, step: string) =>
    applyInput(s, { type: "retry-compensation", step }, 100);
  // Refused: a step that is not dead-lettered, an unknown step, a saga
  // still compensating.
  assert.equal(retry(dead, "a").state, dead);
  assert.equal(retry(dead, "zz").state, dead);
  const t = retry(dead, "b");
  assert.equal(t.state.status, "compensating");
  assert.equal(t.state.steps.b.status, "compensating");
  assert.equal(t.commands.length, 1);
  const again = t.commands[0] as SagaCommand & { type: "compensate" };
  assert.deepEqual([again.type, again.step], ["compensate", "b"]);
  assert.equal(again.attempt, 2);
  assert.equal(again.idempotencyKey, "s1:b:compensate");
  assert.equal(retry(t.state, "b").state, t.state);
  // It fails again: dead-lettered at once (one try), the saga as before.
  const failed = applyInput(t.state, {
    type: "compensation-failed",
    step: "b",
    attempt: 2,
    error: "still broken",
  }, 101);
  assert.equal(failed.state.status, "compensation-failed");
  assert.equal(failed.state.steps.b.status, "dead-lettered");
  assert.deepEqual(failed.commands, [
    { type: "dead-letter", step: "b", error: "still broken" },
    { type: "finished", status: "compensation-failed" },
  ]);
  // It succeeds: nothing is dead-lettered any more, the saga is compensated.
  const ok = applyInput(retry(failed.state, "b").state, {
    type: "compensation-succeeded",
    step: "b",
    attempt: 3,
  }, 102);
  assert.equal(ok.state.status, "compensated");
  assert.equal(ok.state.steps.b.status, "compensated");
  assert.deepEqual(ok.commands, [{ type: "finished", status: "compensated" }]);
});

Deno.test("saga: a cancel stops new steps and compensates what was done", () => {
  const { state, log } = drive(
    seq(4),
    () => null,
    (l) =>
      l.length === 2 && !l.includes("cancelled")
        ? (l.push("cancelled"), { type: "cancel", reason: "operator" })
        : null,
  );
  assert.equal(state.status, "compensated");
  assert.match(state.reason!, /cancelled: operator/);
  // s3 was already running when the cancel came: it finishes, then is undone.
  assert.deepEqual(log, [
    "do s1",
    "do s2",
    "cancelled",
    "do s3",
    "undo s3",
    "undo s2",
    "undo s1",
    "finished compensated",
  ]);
});

Deno.test("saga: outcomes for another attempt, a finished step or an unknown step change nothing", () => {
  const def = seq(2);
  const s0 = startSaga("s1", def, 0).state;
  for (
    const input of [
      { type: "succeeded", step: "s1", attempt: 2 },
      { type: "failed", step: "s2", attempt: 1, error: "x" },
      { type: "succeeded", step: "zz", attempt: 1 },
      { type: "compensation-succeeded", step: "s1", attempt: 1 },
      { type: "due", step: "s1" },
    ] as SagaInput[]
  ) {
    const t = applyInput(s0, input, 1);
    assert.equal(t.state, s0, JSON.stringify(input));
    assert.deepEqual(t.commands, []);
  }
  const s1 =
    applyInput(s0, { type: "succeeded", step: "s1", attempt: 1 }, 1).state;
  const again = applyInput(
    s1,
    { type: "succeeded", step: "s1", attempt: 1 },
    2,
  );
  assert.equal(again.state, s1);
  assert.deepEqual(again.commands, []);
});

Deno.test("saga: a node taking over re-issues exactly what was in flight, with the same keys", () => {
  const def: SagaDef = {
    name: "t",
    groups: [[step("a")], [
      step("b"),
      step("c", { retry: { maxAttempts: 2, backoffMs: 50, maxBackoffMs: 50 } }),
    ]],
  };
  let s = startSaga("s9", def, 0).state;
  s = applyInput(s, { type: "succeeded", step: "a", attempt: 1 }, 1).state;
  s = applyInput(s, { type: "failed", step: "c", attempt: 1, error: "x" }, 2)
    .state;
  // Persisted and read back on another node.
  const restored: SagaState = JSON.parse(JSON.stringify(s));
  assert.deepEqual(resumeSaga(restored), [
    {
      type: "run",
      step: "b",
      attempt: 1,
      action: def.groups[1][0].run,
      idempotencyKey: "s9:b",
      timeoutMs: 1000,
    },
    { type: "schedule", step: "c", at: 52 },
  ]);
});
