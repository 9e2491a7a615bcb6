/**
 * Seeded simulation of the saga machine with a crashing driver: random
 * definitions, outcomes, retries, cancels, outcomes delivered twice and
 * driver crashes (state reloaded from its persisted copy, in-flight work
 * re-issued by resumeSaga). Executors dedupe by idempotency key, as the task
 * queue does. After every run the invariants are checked; a failing seed
 * replays exactly.
 */
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

function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomDef(r: () => number): SagaDef {
  let n = 0;
  const groups = Array.from(
    { length: 1 + Math.floor(r() * 4) },
    () =>
      Array.from({ length: 1 + Math.floor(r() * 3) }, (): StepDef => {
        const id = `s${n++}`;
        return {
          id,
          run: { kind: "task", type: "x" },
          ...(r() < 0.85 ? { compensate: { kind: "task", type: "y" } } : {}),
          timeoutMs: 100,
          retry: {
            maxAttempts: 1 + Math.floor(r() * 3),
            backoffMs: 5,
            maxBackoffMs: 20,
          },
          compensationRetry: {
            maxAttempts: 1 + Math.floor(r() * 4),
            backoffMs: 5,
            maxBackoffMs: 20,
          },
        };
      }),
  );
  return { name: "sim", groups };
}

function simulate(seed: number) {
  const r = prng(seed);
  const def = randomDef(r);
  const order = new Map(
    def.groups.flatMap((g, gi) => g.map((s, si) => [s.id, [gi, si]] as const)),
  );
  let now = 0;
  const first = startSaga(`saga-${seed}`, def, now);
  let state: SagaState = first.state;
  let persisted = JSON.stringify(state);
  // In-flight work: commands issued and not yet answered (some answered twice).
  let pending: SagaCommand[] = [...first.commands];
  const applied = new Map<string, number>(); // idempotency key → effects applied
  const effects: string[] = [];
  const failRate = r() * 0.5;
  let cancelled = false;
  const apply = (input: SagaInput) => {
    const t = applyInput(state, input, now);
    state = t.state;
    persisted = JSON.stringify(state);
    pending.push(...t.commands);
  };
  for (let guard = 0; guard < 5000 && pending.length > 0; guard++) {
    now += 1 + Math.floor(r() * 5);
    if (!cancelled && r() < 0.02) {
      cancelled = true;
      apply({ type: "cancel", reason: "sim" });
      continue;
    }
    if (r() < 0.03) {
      // The driver dies: what was in flight is lost; another one reloads
      // the persisted state and re-issues.
      state = JSON.parse(persisted);
      pending = resumeSaga(state);
      continue;
    }
    const c = pending.splice(Math.floor(r() * pending.length), 1)[0];
    if (c.type === "finished" || c.type === "dead-letter") continue;
    if (c.type === "schedule") {
      if (c.at > now) {
        pending.push(c);
        continue;
      }
      apply({ type: "due", step: c.step });
      continue;
    }
    const ok = r() >= failRate;
    if (ok) {
      // The executor applies an effect once per key, whatever is re-sent.
      const n = applied.get(c.idempotencyKey) ?? 0;
      if (n === 0) effects.push(`${c.type} ${c.step}`);
      applied.set(c.idempotencyKey, n + 1);
    }
    const input: SagaInput = c.type === "run"
      ? ok
        ? { type: "succeeded", step: c.step, attempt: c.attempt }
        : { type: "failed", step: c.step, attempt: c.attempt, error: "sim" }
      : ok
      ? { type: "compensation-succeeded", step: c.step, attempt: c.attempt }
      : {
        type: "compensation-failed",
        step: c.step,
        attempt: c.attempt,
        error: "sim",
      };
    apply(input);
    if (r() < 0.1) apply(input); // delivered twice
  }
  return { def, state, effects, order };
}

Deno.test("saga simulation: 2,000 seeds with failures, retries, cancels, duplicate outcomes and driver crashes keep the invariants", () => {
  const statuses = new Map<string, number>();
  for (let seed = 1; seed <= 2000; seed++) {
    const { def, state, effects, order } = simulate(seed);
    const where = `seed ${seed}`;
    statuses.set(state.status, (statuses.get(state.status) ?? 0) + 1);
    assert.ok(
      ["completed", "compensated", "compensation-failed"].includes(
        state.status,
      ),
      `${where}: ended ${state.status}`,
    );
    const steps = def.groups.flat();
    const ran = effects.filter((e) => e.startsWith("run ")).map((e) =>
      e.slice(4)
    );
    const undone = effects.filter((e) => e.startsWith("compensate ")).map((e) =>
      e.slice(11)
    );
    if (state.status === "completed") {
      assert.ok(steps.every((s) => state.steps[s.id].status === "done"), where);
      assert.deepEqual(undone, [], where);
    } else {
      // Nothing done is left un-undone, and nothing was silently skipped.
      for (const s of steps) {
        const st = state.steps[s.id].status;
        assert.ok(
          [
            "pending",
            "failed",
            "compensated",
            "nothing-to-undo",
            "dead-lettered",
          ].includes(st),
          `${where}: step ${s.id} ended ${st}`,
        );
        if (st === "compensated") {
          assert.ok(undone.includes(s.id), `${where}: ${s.id} undone`);
        }
        if (st === "nothing-to-undo") {
          assert.equal(s.compensate, undefined, where);
        }
      }
      // Every step whose effect was applied is compensated, nothing-to-undo
      // or dead-lettered; never still "done".
      for (const id of ran) {
        assert.ok(
          ["compensated", "nothing-to-undo", "dead-lettered"].includes(
            state.steps[id].status,
          ),
          `${where}: ${id} ran but ended ${state.steps[id].status}`,
        );
      }
      // Compensations in reverse order: later group first, later step first.
      for (let i = 1; i < undone.length; i++) {
        const [ga, sa] = order.get(undone[i - 1])!;
        const [gb, sb] = order.get(undone[i])!;
        assert.ok(
          ga > gb || (ga === gb && sa > sb),
          `${where}: ${undone} not in reverse`,
        );
      }
      // Only steps that ran are compensated, each once.
      assert.equal(new Set(undone).size, undone.length, where);
      for (const id of undone) {
        assert.ok(ran.includes(id), `${where}: ${id} undone but never ran`);
      }
    }
  }
  // The seeds reach every ending.
  for (const s of ["completed", "compensated", "compensation-failed"]) {
    assert.ok((statuses.get(s) ?? 0) > 20, `${s}: ${statuses.get(s)}`);
  }
});
