import assert from "node:assert/strict";
import {
  type Balancer,
  dispatch,
  NoCandidateError,
  type Outcome,
  seededRandom,
  weightOf,
} from "./strategy.ts";

function recorder(): Balancer & { reports: [string, Outcome][] } {
  const reports: [string, Outcome][] = [];
  return {
    name: "first",
    reports,
    pick: (candidates) => candidates[0],
    report: (id, outcome) => reports.push([id, outcome]),
  };
}

Deno.test("dispatch: reports ok with the call's duration and returns its value", async () => {
  const b = recorder();
  let t = 100;
  const value = await dispatch(b, [{ id: "a" }], (c) => {
    t += 7;
    return Promise.resolve(c.id.toUpperCase());
  }, { now: () => t });
  assert.equal(value, "A");
  assert.deepEqual(b.reports, [["a", { ok: true, latencyMs: 7 }]]);
});

Deno.test("dispatch: reports a failed call and rethrows its error", async () => {
  const b = recorder();
  let t = 0;
  await assert.rejects(
    dispatch(b, [{ id: "a" }], () => {
      t += 3;
      return Promise.reject(new Error("refused"));
    }, { now: () => t }),
    /refused/,
  );
  assert.deepEqual(b.reports, [["a", { ok: false, latencyMs: 3 }]]);
});

Deno.test("dispatch: with nothing to pick from it throws a retryable NoCandidateError", async () => {
  const err = await dispatch(recorder(), [], () => Promise.resolve()).catch((
    e,
  ) => e);
  assert.ok(err instanceof NoCandidateError);
  assert.equal(err.code, "no_candidate");
  assert.equal(err.retryable, true);
  assert.match(err.message, /first: no candidate to pick from \(0 offered\)/);
});

Deno.test("seededRandom: the same seed replays the same numbers, all in [0, 1)", () => {
  const a = seededRandom(9);
  const b = seededRandom(9);
  const c = seededRandom(10);
  const xs = Array.from({ length: 1000 }, a);
  assert.deepEqual(xs, Array.from({ length: 1000 }, b));
  assert.notDeepEqual(xs.slice(0, 5), Array.from({ length: 5 }, c));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
});

Deno.test("weightOf: a weight that is not a positive finite number is refused with its value", () => {
  assert.equal(weightOf({ id: "a" }), 1);
  assert.throws(
    () => weightOf({ id: "b", weight: 0 }),
    /candidate 'b' has weight 0, expected a positive finite number/,
  );
  assert.throws(() => weightOf({ id: "c", weight: NaN }), /weight NaN/);
});
