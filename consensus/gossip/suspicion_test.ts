import assert from "node:assert/strict";
import { Suspicion, suspicionTimeout } from "./suspicion.ts";

Deno.test("suspicion: the timeout decays on a log scale from max to min with confirmations", () => {
  // memberlist's numbers: k = 3, min 2 s, max 30 s.
  assert.equal(suspicionTimeout(0, 3, 2000, 30_000), 30_000);
  assert.equal(suspicionTimeout(1, 3, 2000, 30_000), 16_000);
  assert.equal(suspicionTimeout(2, 3, 2000, 30_000), 7_810);
  assert.equal(suspicionTimeout(3, 3, 2000, 30_000), 2000);
  assert.equal(suspicionTimeout(9, 3, 2000, 30_000), 2000);
});

Deno.test("suspicion: with no confirmations expected the minimum applies at once", () => {
  assert.equal(new Suspicion("a", 0, 4000, 24_000, 100).deadline, 4100);
});

Deno.test("suspicion: only new accusers confirm, and only up to k", () => {
  const s = new Suspicion("a", 2, 1000, 6000, 0);
  assert.equal(
    s.confirm("a"),
    false,
    "the first accuser is not a confirmation",
  );
  assert.equal(s.confirm("b"), true);
  const after1 = s.deadline;
  assert.ok(after1 < 6000 && after1 > 1000);
  assert.equal(s.confirm("b"), false);
  assert.equal(s.confirm("c"), true);
  assert.equal(s.deadline, 1000);
  assert.equal(s.confirm("d"), false, "no more than k");
  assert.equal(s.confirmations, 2);
});
